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

if ((fails)); then echo "smoke: $fails check(s) FAILED"; exit 1; fi
echo "smoke: all checks passed"
