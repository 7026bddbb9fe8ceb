#!/usr/bin/env bash
# End-to-end check of a running bed (start it with up.sh first). Exercises what
# the integration tests rely on and prints one line per fact. Bigger upload:
# OSIH_SMOKE_MIB=512 tests/openstack/smoke.sh
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# shellcheck disable=SC1091
source "$BED/env"
MIB=${OSIH_SMOKE_MIB:-16}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fails=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
have() { if [[ -n $2 ]]; then ok "$1"; else bad "$1"; fi; }
check() { local what=$1 want=$2 got=$3; if [[ $got == "$want" ]]; then ok "$what ($got)"; else bad "$what: want $want, got $got"; fi; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }

# token BODY -> prints the X-Subject-Token (empty if refused)
token() {
  curl -s -D - -o /dev/null -H 'Content-Type: application/json' -d "$1" "$KEYSTONE_URL/auth/tokens" |
    tr -d '\r' | awk -F': ' 'tolower($1) == "x-subject-token" { print $2 }'
}
pw_body() { echo "{\"auth\":{\"identity\":{\"methods\":[\"password\"],\"password\":{\"user\":{\"name\":\"$1\",\"domain\":{\"name\":\"Default\"},\"password\":\"$2\"}}},\"scope\":{\"project\":{\"name\":\"$3\",\"domain\":{\"name\":\"Default\"}}}}}"; }

CT=$(token "$(pw_body charm "$OSIH_CHARM_PASSWORD" charm-project)")
have "charm password token" "$CT"
AT=$(token "{\"auth\":{\"identity\":{\"methods\":[\"application_credential\"],\"application_credential\":{\"id\":\"$OSIH_APPCRED_ID\",\"secret\":\"$OSIH_APPCRED_SECRET\"}}}}")
have "charm-appcred token" "$AT"
ADM=$(token "$(pw_body admin "$OSIH_ADMIN_PASSWORD" admin)")
have "admin token" "$ADM"
PROJECT=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["charm_project_id"])' "$BED/ids.json")

g() { curl -s -H "X-Auth-Token: $CT" "$@"; }
code() { curl -s -o "$TMP/body" -w '%{http_code}' "$@"; }
NAME=smoke-$$-$RANDOM
create() {
  g -H 'Content-Type: application/json' -d "{\"name\":\"$NAME\",\"disk_format\":\"raw\",\"container_format\":\"bare\",\"oih_daemon_id\":\"$1\"}" "$GLANCE_URL/v2/images"
}
IMG=$(create "smoke-$$")
ID=$(json "d['id']" <<<"$IMG")
check "os_hash_algo at creation" None "$(json "d['os_hash_algo']" <<<"$IMG")"
check "appcred token lists images" 200 "$(code -H "X-Auth-Token: $AT" "$GLANCE_URL/v2/images?limit=1")"

head -c "${MIB}M" /dev/urandom >"$TMP/img"
out=$(curl -s -o /dev/null -w '%{http_code} %{time_total} %{speed_upload}' -H "X-Auth-Token: $CT" -H 'Expect:' \
  -H 'Content-Type: application/octet-stream' -T "$TMP/img" "$GLANCE_URL/v2/images/$ID/file")
check "PUT file (Content-Length, $MIB MiB)" 204 "${out%% *}"
read -r _ t speed <<<"$out"
ok "upload took ${t}s, $(awk -v s="$speed" 'BEGIN { printf "%.0f", s / 1048576 }') MiB/s"
IMG=$(g "$GLANCE_URL/v2/images/$ID")
check status active "$(json "d['status']" <<<"$IMG")"
check checksum "$(md5sum <"$TMP/img" | cut -d' ' -f1)" "$(json "d['checksum']" <<<"$IMG")"
check os_hash_algo sha512 "$(json "d['os_hash_algo']" <<<"$IMG")"
check os_hash_value "$(sha512sum <"$TMP/img" | cut -d' ' -f1)" "$(json "d['os_hash_value']" <<<"$IMG")"

ID2=$(create "smoke2-$$" | json "d['id']")
check "PUT file (chunked)" 204 "$(code -H "X-Auth-Token: $CT" -H 'Expect:' -H 'Transfer-Encoding: chunked' \
  -H 'Content-Type: application/octet-stream' -T - "$GLANCE_URL/v2/images/$ID2/file" <"$TMP/img")"
check "chunked size" "$((MIB * 1048576))" "$(g "$GLANCE_URL/v2/images/$ID2" | json "d['size']")"

q="name=$NAME&status=active&sort=created_at:desc,id:desc&limit=1&owner=$PROJECT"
check "list newest active by name/owner" "$ID2" "$(g "$GLANCE_URL/v2/images?$q" | json "d['images'][0]['id']")"
check "filter by custom property" "$ID" "$(g "$GLANCE_URL/v2/images?oih_daemon_id=smoke-$$" | json "','.join(i['id'] for i in d['images'])")"

g -X PATCH -H 'Content-Type: application/openstack-images-v2.1-json-patch' \
  -d '[{"op":"replace","path":"/protected","value":true}]' "$GLANCE_URL/v2/images/$ID" >/dev/null
check "delete protected image" 403 "$(code -X DELETE -H "X-Auth-Token: $CT" "$GLANCE_URL/v2/images/$ID")"
g -X PATCH -H 'Content-Type: application/openstack-images-v2.1-json-patch' \
  -d '[{"op":"replace","path":"/protected","value":false}]' "$GLANCE_URL/v2/images/$ID" >/dev/null
check "delete image" 204 "$(code -X DELETE -H "X-Auth-Token: $CT" "$GLANCE_URL/v2/images/$ID")"
check "delete image 2" 204 "$(code -X DELETE -H "X-Auth-Token: $CT" "$GLANCE_URL/v2/images/$ID2")"
check "deleted image is gone" 404 "$(code -H "X-Auth-Token: $CT" "$GLANCE_URL/v2/images/$ID")"

# Revocation must take effect in Glance on the very next call.
RT=$(token "$(pw_body charm "$OSIH_CHARM_PASSWORD" charm-project)")
check "fresh token before revoke" 200 "$(code -H "X-Auth-Token: $RT" "$GLANCE_URL/v2/images?limit=1")"
check "revoke token (admin)" 204 "$(code -X DELETE -H "X-Auth-Token: $ADM" -H "X-Subject-Token: $RT" "$KEYSTONE_URL/auth/tokens")"
check "glance rejects revoked token" 401 "$(code -H "X-Auth-Token: $RT" "$GLANCE_URL/v2/images?limit=1")"

if [[ -n ${OSIH_GLANCE_IMAGE_SIZE_CAP:-} ]]; then
  ID3=$(create "smoke3-$$" | json "d['id']")
  head -c "$((OSIH_GLANCE_IMAGE_SIZE_CAP + 1))" /dev/zero >"$TMP/big"
  c=$(code -H "X-Auth-Token: $CT" -H 'Expect:' -H 'Content-Type: application/octet-stream' -T "$TMP/big" "$GLANCE_URL/v2/images/$ID3/file")
  check "upload over image_size_cap" 413 "$c"
  echo "     body: $(tr '\n' ' ' <"$TMP/body" | cut -c1-300)"
  echo "     image status after: $(g "$GLANCE_URL/v2/images/$ID3" | json "d['status']")"
  g -X DELETE "$GLANCE_URL/v2/images/$ID3" >/dev/null
fi

# Cloud B: its own user, project and Glance, found through the catalog (RegionTwo).
BT_BODY=$(curl -s -D "$TMP/bh" -H 'Content-Type: application/json' -d "$(pw_body charm-b "$OSIH_CHARM_B_PASSWORD" charm-b-project)" "$KEYSTONE_URL/auth/tokens")
BT=$(tr -d '\r' <"$TMP/bh" | awk -F': ' 'tolower($1) == "x-subject-token" { print $2 }')
have "charm-b password token" "$BT"
image_url() { json "[e['url'] for s in d['token']['catalog'] if s['type'] == 'image' for e in s['endpoints'] if e['interface'] == 'public' and e['region_id'] == '$1'][0]"; }
check "catalog: RegionTwo's image endpoint" "$GLANCE_B_URL" "$(image_url RegionTwo <<<"$BT_BODY")"
check "catalog: RegionOne's image endpoint" "$GLANCE_URL" "$(image_url RegionOne <<<"$BT_BODY")"
gb() { curl -s -H "X-Auth-Token: $BT" "$@"; }
BID=$(gb -H 'Content-Type: application/json' -d "{\"name\":\"$NAME\",\"disk_format\":\"raw\",\"container_format\":\"bare\"}" "$GLANCE_B_URL/v2/images" | json "d['id']")
check "cloud B: PUT file" 204 "$(code -H "X-Auth-Token: $BT" -H 'Expect:' -H 'Content-Type: application/octet-stream' -T "$TMP/img" "$GLANCE_B_URL/v2/images/$BID/file")"
check "cloud B: image active with the file's sha512" "active $(sha512sum <"$TMP/img" | cut -d' ' -f1)" \
  "$(gb "$GLANCE_B_URL/v2/images/$BID" | json "d['status'] + ' ' + d['os_hash_value']")"
check "cloud B's image is not in cloud A's Glance" 404 "$(code -H "X-Auth-Token: $ADM" "$GLANCE_URL/v2/images/$BID")"
check "cloud B's Glance lists it by name" "$BID" "$(gb "$GLANCE_B_URL/v2/images?name=$NAME" | json "','.join(i['id'] for i in d['images'])")"
check "cloud B: delete image" 204 "$(code -X DELETE -H "X-Auth-Token: $BT" "$GLANCE_B_URL/v2/images/$BID")"

# charm-domain gets a domain-scoped token (no project).
DT_BODY=$(curl -s -H 'Content-Type: application/json' -d "{\"auth\":{\"identity\":{\"methods\":[\"password\"],\"password\":{\"user\":{\"name\":\"charm-domain\",\"domain\":{\"name\":\"Default\"},\"password\":\"$OSIH_DOMAIN_PASSWORD\"}}},\"scope\":{\"domain\":{\"name\":\"Default\"}}}}" "$KEYSTONE_URL/auth/tokens")
check "charm-domain token: scope" "domain default, no project" "$(json "'domain ' + d['token']['domain']['id'] + (', no project' if 'project' not in d['token'] else ', project')" <<<"$DT_BODY")"

# The counters the tests read.
before=$("$OSIH_HERE/failed-auths.sh" charm-b)
for _ in 1 2 3; do curl -s -o /dev/null -H 'Content-Type: application/json' -d "$(pw_body charm-b wrong charm-b-project)" "$KEYSTONE_URL/auth/tokens"; done
check "failed-auths.sh counts 3 wrong passwords" 3 "$(($("$OSIH_HERE/failed-auths.sh" charm-b) - before))"
for _ in 1 2; do gb -o /dev/null "$GLANCE_B_URL/v2/images?name=$NAME-count"; done
check "glance-requests.sh counts 2 calls" "2 0" \
  "$("$OSIH_HERE/glance-requests.sh" --svc glance-b "name=$NAME-count") $("$OSIH_HERE/glance-requests.sh" --svc glance "name=$NAME-count")"

# ---- The Glances configured like other clouds (import, stores, import only).
# user_tok USER PASSWORD PROJECT -> a project-scoped token
user_tok() { token "$(pw_body "$@")"; }
# new_image URL TOKEN DISK_FORMAT -> the id of a new image NAME
new_image() {
  curl -s -H "X-Auth-Token: $2" -H 'Content-Type: application/json' \
    -d "{\"name\":\"$NAME\",\"disk_format\":\"$3\",\"container_format\":\"bare\"}" "$1/v2/images" | json "d['id']"
}
# send URL TOKEN ID file|stage FILE [HEADER] -> the HTTP status of PUT .../file or .../stage
send() {
  code -X PUT -H "X-Auth-Token: $2" -H 'Expect:' -H 'Accept: application/json' -H 'Content-Type: application/octet-stream' \
    ${6:+-H "$6"} -T "$5" "$1/v2/images/$3/$4"
}
# import_image URL TOKEN ID [BODY-EXTRA] -> the HTTP status of POST .../import (glance-direct)
import_image() {
  code -H "X-Auth-Token: $2" -H 'Content-Type: application/json' \
    -d "{\"method\":{\"name\":\"glance-direct\"}${4:+,$4}}" "$1/v2/images/$3/import"
}
# wait_image URL TOKEN ID UNTIL EXPR: the value of the Python expression EXPR
# over the image `d`, once UNTIL is true (or after 60 s).
wait_image() {
  local i v
  for ((i = 0; i < 120; i++)); do
    v=$(curl -s -H "X-Auth-Token: $2" "$1/v2/images/$3" | json "bool($4)")
    [[ $v == True ]] && break
    sleep 0.5
  done
  curl -s -H "X-Auth-Token: $2" "$1/v2/images/$3" | json "$5"
}
IMPORT_DONE="d['status'] in ('active', 'killed', 'deleted') or d.get('os_glance_failed_import')"
SHA=$(sha512sum <"$TMP/img" | cut -d' ' -f1)

# glance-import: glance-direct with node_staging_uri on a single-store Glance.
IT_BODY=$(curl -s -D "$TMP/ih" -H 'Content-Type: application/json' -d "$(pw_body charm-import "$OSIH_CHARM_IMPORT_PASSWORD" charm-import-project)" "$KEYSTONE_URL/auth/tokens")
IT=$(tr -d '\r' <"$TMP/ih" | awk -F': ' 'tolower($1) == "x-subject-token" { print $2 }')
have "charm-import password token" "$IT"
check "catalog: RegionImport's image endpoint" "$GLANCE_IMPORT_URL" "$(image_url RegionImport <<<"$IT_BODY")"
check "catalog: RegionStores's image endpoint" "$GLANCE_STORES_URL" "$(image_url RegionStores <<<"$IT_BODY")"
check "catalog: RegionImportOnly's image endpoint" "$GLANCE_IMPORTONLY_URL" "$(image_url RegionImportOnly <<<"$IT_BODY")"
check "glance-import: import methods" "glance-direct web-download copy-image" \
  "$(curl -s -H "X-Auth-Token: $IT" "$GLANCE_IMPORT_URL/v2/info/import" | json "' '.join(d['import-methods']['value'])")"
check "glance-import: GET /v2/info/stores (single store)" 404 "$(code -H "X-Auth-Token: $IT" "$GLANCE_IMPORT_URL/v2/info/stores")"
IID=$(new_image "$GLANCE_IMPORT_URL" "$IT" raw)
check "glance-import: PUT stage" 204 "$(send "$GLANCE_IMPORT_URL" "$IT" "$IID" stage "$TMP/img")"
check "glance-import: staged image is uploading" uploading "$(curl -s -H "X-Auth-Token: $IT" "$GLANCE_IMPORT_URL/v2/images/$IID" | json "d['status']")"
check "glance-import: POST import (glance-direct)" 202 "$(import_image "$GLANCE_IMPORT_URL" "$IT" "$IID")"
check "glance-import: imported image active with the file's sha512" "active $SHA" \
  "$(wait_image "$GLANCE_IMPORT_URL" "$IT" "$IID" "$IMPORT_DONE" "d['status'] + ' ' + str(d['os_hash_value'])")"
check "glance-import's image is not in RegionOne's Glance" 404 "$(code -H "X-Auth-Token: $ADM" "$GLANCE_URL/v2/images/$IID")"
check "glance-import: delete image" 204 "$(code -X DELETE -H "X-Auth-Token: $IT" "$GLANCE_IMPORT_URL/v2/images/$IID")"

# glance-stores: two file stores; an import to both, a direct upload to one.
ST=$(user_tok charm-stores "$OSIH_CHARM_STORES_PASSWORD" charm-stores-project)
have "charm-stores password token" "$ST"
check "glance-stores: GET /v2/info/stores" "fast:default slow:" \
  "$(curl -s -H "X-Auth-Token: $ST" "$GLANCE_STORES_URL/v2/info/stores" | json "' '.join(s['id'] + ':' + ('default' if s.get('default') else '') for s in d['stores'])")"
SID=$(new_image "$GLANCE_STORES_URL" "$ST" raw)
check "glance-stores: PUT stage" 204 "$(send "$GLANCE_STORES_URL" "$ST" "$SID" stage "$TMP/img")"
check "glance-stores: POST import to fast and slow, all must succeed" 202 \
  "$(import_image "$GLANCE_STORES_URL" "$ST" "$SID" '"stores":["fast","slow"],"all_stores_must_succeed":true')"
check "glance-stores: image active in both stores with the file's sha512" "active fast,slow $SHA" \
  "$(wait_image "$GLANCE_STORES_URL" "$ST" "$SID" "$IMPORT_DONE" "d['status'] + ' ' + ','.join(sorted(d['stores'].split(','))) + ' ' + str(d['os_hash_value'])")"
check "glance-stores: the data is in both store dirs" "2" \
  "$(cmp -s "$TMP/img" "$BED/images-stores/fast/$SID" && cmp -s "$TMP/img" "$BED/images-stores/slow/$SID" && echo 2)"
SID2=$(new_image "$GLANCE_STORES_URL" "$ST" raw)
check "glance-stores: PUT file with X-Image-Meta-Store: slow" 204 "$(send "$GLANCE_STORES_URL" "$ST" "$SID2" file "$TMP/img" 'X-Image-Meta-Store: slow')"
check "glance-stores: that image is in slow only" "active slow" \
  "$(curl -s -H "X-Auth-Token: $ST" "$GLANCE_STORES_URL/v2/images/$SID2" | json "d['status'] + ' ' + d['stores']")"
SID3=$(new_image "$GLANCE_STORES_URL" "$ST" raw)
check "glance-stores: PUT file to an unknown store" 400 "$(send "$GLANCE_STORES_URL" "$ST" "$SID3" file "$TMP/img" 'X-Image-Meta-Store: nowhere')"

# glance-importonly: the policy forbids PUT .../file; glance-direct works.
OT=$(user_tok charm-importonly "$OSIH_CHARM_IMPORTONLY_PASSWORD" charm-importonly-project)
have "charm-importonly password token" "$OT"
check "glance-importonly: import methods" "glance-direct" \
  "$(curl -s -H "X-Auth-Token: $OT" "$GLANCE_IMPORTONLY_URL/v2/info/import" | json "' '.join(d['import-methods']['value'])")"
OID=$(new_image "$GLANCE_IMPORTONLY_URL" "$OT" raw)
check "glance-importonly: PUT file is forbidden" 403 "$(send "$GLANCE_IMPORTONLY_URL" "$OT" "$OID" file "$TMP/img")"
AID=$(new_image "$GLANCE_IMPORTONLY_URL" "$ADM" raw)
check "glance-importonly: an admin may still PUT file" 204 "$(send "$GLANCE_IMPORTONLY_URL" "$ADM" "$AID" file "$TMP/img")"
curl -s -X DELETE -H "X-Auth-Token: $ADM" "$GLANCE_IMPORTONLY_URL/v2/images/$AID"
check "glance-importonly: the image is still queued" queued "$(curl -s -H "X-Auth-Token: $OT" "$GLANCE_IMPORTONLY_URL/v2/images/$OID" | json "d['status']")"
check "glance-importonly: PUT stage" 204 "$(send "$GLANCE_IMPORTONLY_URL" "$OT" "$OID" stage "$TMP/img")"
check "glance-importonly: POST import" 202 "$(import_image "$GLANCE_IMPORTONLY_URL" "$OT" "$OID")"
check "glance-importonly: imported image active with the file's sha512" "active $SHA" \
  "$(wait_image "$GLANCE_IMPORTONLY_URL" "$OT" "$OID" "$IMPORT_DONE" "d['status'] + ' ' + str(d['os_hash_value'])")"

# require_image_format_match: what Glance does with content that is not the
# declared disk_format (README, "Behaviour the tests can rely on").
if command -v qemu-img >/dev/null; then
  qemu-img create -q -f qcow2 "$TMP/q.qcow2" 16M
  qemu-img create -q -f qcow2 -b "$TMP/q.qcow2" -F qcow2 "$TMP/backed.qcow2"
  Q=$(new_image "$GLANCE_URL" "$CT" raw)
  check "qcow2 declared raw: accepted" 204 "$(send "$GLANCE_URL" "$CT" "$Q" file "$TMP/q.qcow2")"
  check "qcow2 declared raw: active, virtual_size = size (not the qcow2's 16 MiB)" "active raw $(stat -c %s "$TMP/q.qcow2")" \
    "$(g "$GLANCE_URL/v2/images/$Q" | json "d['status'] + ' ' + d['disk_format'] + ' ' + str(d['virtual_size'])")"
  R=$(new_image "$GLANCE_URL" "$CT" qcow2)
  check "raw declared qcow2: refused" "415 Image disk_format qcow2 does not match stream data raw" \
    "$(send "$GLANCE_URL" "$CT" "$R" file "$TMP/img") $(json "d['message'].split('\n')[-1]" <"$TMP/body")"
  check "raw declared qcow2: image back to queued" queued "$(g "$GLANCE_URL/v2/images/$R" | json "d['status']")"
  B=$(new_image "$GLANCE_URL" "$CT" qcow2)
  check "qcow2 with a backing file: refused" "415 Image failed safety checks" \
    "$(send "$GLANCE_URL" "$CT" "$B" file "$TMP/backed.qcow2") $(json "d['message'].split('\n')[-1]" <"$TMP/body")"
  B2=$(new_image "$GLANCE_URL" "$CT" raw)
  check "qcow2 with a backing file declared raw: refused" 415 "$(send "$GLANCE_URL" "$CT" "$B2" file "$TMP/backed.qcow2")"
  Q2=$(new_image "$GLANCE_URL" "$CT" qcow2)
  check "qcow2 declared qcow2: active, virtual_size 16 MiB" "204 active 16777216" \
    "$(send "$GLANCE_URL" "$CT" "$Q2" file "$TMP/q.qcow2") $(g "$GLANCE_URL/v2/images/$Q2" | json "d['status'] + ' ' + str(d['virtual_size'])")"
  # Through an import the same mismatch fails the import task: with several
  # stores, os_glance_failed_import names the store and the image stays
  # importing (the import's answer was already 202).
  F=$(new_image "$GLANCE_STORES_URL" "$ST" qcow2)
  send "$GLANCE_STORES_URL" "$ST" "$F" stage "$TMP/img" >/dev/null
  check "raw declared qcow2, imported to fast and slow: 202, then the import fails" "202 importing fast" \
    "$(import_image "$GLANCE_STORES_URL" "$ST" "$F" '"stores":["fast","slow"],"all_stores_must_succeed":true') $(wait_image "$GLANCE_STORES_URL" "$ST" "$F" "$IMPORT_DONE" "d['status'] + ' ' + d['os_glance_failed_import']")"
  for id in "$Q" "$R" "$B" "$B2" "$Q2"; do g -X DELETE "$GLANCE_URL/v2/images/$id" >/dev/null; done
  curl -s -X DELETE -H "X-Auth-Token: $ST" "$GLANCE_STORES_URL/v2/images/$F"
else
  echo "skip require_image_format_match checks: no qemu-img (Debian package qemu-utils)"
fi
for id in "$SID" "$SID2" "$SID3"; do curl -s -X DELETE -H "X-Auth-Token: $ST" "$GLANCE_STORES_URL/v2/images/$id"; done
check "glance-importonly: delete image" 204 "$(code -X DELETE -H "X-Auth-Token: $OT" "$GLANCE_IMPORTONLY_URL/v2/images/$OID")"

# Keystone unified limits on glance-capped: charm-quota-project may store
# quota_mib MiB; other projects get the registered defaults (1 TiB).
QMIB=$(sed -n 's/^quota_mib=//p' "$BED/settings")
QT=$(user_tok charm-quota "$OSIH_CHARM_QUOTA_PASSWORD" charm-quota-project)
have "charm-quota password token" "$QT"
head -c "$(((QMIB + 1) * 1048576))" /dev/urandom >"$TMP/over"
head -c 1048576 /dev/urandom >"$TMP/one"
Q1=$(new_image "$GLANCE_CAPPED_URL" "$QT" raw)
check "quota: PUT file of $((QMIB + 1)) MiB over image_size_total $QMIB MiB" 413 "$(send "$GLANCE_CAPPED_URL" "$QT" "$Q1" file "$TMP/over")"
echo "     body: $(tr '\n' ' ' <"$TMP/body" | cut -c1-300)"
check "quota: Glance's message names the limit" 1 "$(grep -c 'image_size_total is over limit of' "$TMP/body")"
check "quota: PUT file of 1 MiB" "204 active" "$(send "$GLANCE_CAPPED_URL" "$QT" "$Q1" file "$TMP/one") $(curl -s -H "X-Auth-Token: $QT" "$GLANCE_CAPPED_URL/v2/images/$Q1" | json "d['status']")"
Q3=$(new_image "$GLANCE_CAPPED_URL" "$CT" raw)
check "quota: charm's $((QMIB + 1)) MiB on the same Glance (registered default)" 204 "$(send "$GLANCE_CAPPED_URL" "$CT" "$Q3" file "$TMP/over")"
curl -s -X DELETE -H "X-Auth-Token: $QT" "$GLANCE_CAPPED_URL/v2/images/$Q1"
curl -s -X DELETE -H "X-Auth-Token: $CT" "$GLANCE_CAPPED_URL/v2/images/$Q3"

# charm-raw: the charm cloud with image_format: raw, as openstacksdk reads it.
check "clouds.yaml charm-raw: openstacksdk's image_format, region, user" "raw RegionOne charm" \
  "$("$OSIH_BED_VENV/bin/python" -c 'import openstack.config as c; o = c.OpenStackConfig().get_one("charm-raw"); print(o.config["image_format"], o.region_name, o.auth["username"])' 2>/dev/null)"

if ((fails)); then echo "smoke: $fails check(s) FAILED"; exit 1; fi
echo "smoke: all checks passed"
