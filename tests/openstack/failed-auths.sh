#!/usr/bin/env bash
# Print how many password attempts Keystone refused for USER (a user name or a
# user id): the identity.authenticate CADF notifications with outcome failure
# that up.sh makes Keystone write to <bed>/keystone/keystone.log. Keystone
# writes the line before it answers 401, so a count taken after the answers
# arrived includes them all. The count never resets: take a difference, or
# count a user id that is new (see README.md, "Counting").
# Usage: failed-auths.sh USER
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
if (($# != 1)) || [[ -z $1 ]]; then die "usage: failed-auths.sh USER (a user name or id)"; fi
log_file=$BED/keystone/keystone.log
[[ -f $log_file ]] || die "no Keystone log at $log_file: is the bed up (tests/openstack/up.sh)?"
# A fixed-string prefilter keeps it fast on a long log; python reads the JSON.
{ grep -aF ' oslo.messaging.notification.identity.authenticate ' "$log_file" || true; } |
  python3 -c '
import json, sys
user, count = sys.argv[1], 0
for line in sys.stdin:
    payload = json.loads(line[line.index("] {") + 2:])["payload"]
    who = payload.get("initiator", {})
    if payload.get("outcome") == "failure" and user in (who.get("username"), who.get("user_id")):
        count += 1
print(count)' "$1"
