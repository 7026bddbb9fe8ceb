"""Idempotently create the Keystone resources the test bed needs.

Run by up.sh with the bed venv's python. Reads settings from the environment,
writes the application credential of `charm` to $BED/appcred.json.
"""

import json
import os
import sys
import time

import requests

BED = os.environ["BED"]
KS = os.environ["KEYSTONE_URL"].rstrip("/")
# The image endpoint of each region, "REGION=URL ...": cloud B is RegionTwo,
# the Glances configured like other clouds have a region each.
IMAGE_ENDPOINTS = dict(e.split("=", 1) for e in os.environ["IMAGE_ENDPOINTS"].split())
ADMIN_PW = os.environ["ADMIN_PASSWORD"]
GLANCE_PW = os.environ["GLANCE_PASSWORD"]
CHARM_PW = os.environ["CHARM_PASSWORD"]
CHARM_B_PW = os.environ["CHARM_B_PASSWORD"]
DOMAIN_PW = os.environ["DOMAIN_PASSWORD"]
# The clouds of their own Glance: user (and project <user>-project) -> password.
OWN_GLANCE_USERS = {
    "charm-quota": os.environ["CHARM_QUOTA_PASSWORD"],
    "charm-import": os.environ["CHARM_IMPORT_PASSWORD"],
    "charm-stores": os.environ["CHARM_STORES_PASSWORD"],
    "charm-importonly": os.environ["CHARM_IMPORTONLY_PASSWORD"],
}
APPCRED_FILE = os.path.join(BED, "appcred.json")
# Keystone unified limits, which glance-capped enforces (use_keystone_limits):
# every project gets the registered defaults, far above what tests use;
# charm-quota-project gets QUOTA_MIB of image data (image_size_total, MiB).
LIMITS_REGION = "RegionOne"
REGISTERED_LIMITS = {"image_size_total": 1048576, "image_stage_total": 1048576,
                     "image_count_total": 100000, "image_count_uploading": 1000}
QUOTA_LIMITS = {"image_size_total": int(os.environ["QUOTA_MIB"])}

S = requests.Session()


def fail(msg, r=None):
    if r is not None:
        msg += f": HTTP {r.status_code} {r.text[:500]}"
    sys.exit(f"provision: {msg}")


def password_token(user, pw, project):
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {"user": {"name": user, "domain": {"id": "default"}, "password": pw}},
            },
            "scope": {"project": {"name": project, "domain": {"id": "default"}}},
        }
    }
    r = S.post(f"{KS}/auth/tokens", json=body)
    if r.status_code != 201:
        fail(f"cannot get a token for {user}", r)
    return r.headers["X-Subject-Token"], r.json()["token"]


ADMIN_TOKEN, _ = password_token("admin", ADMIN_PW, "admin")
H = {"X-Auth-Token": ADMIN_TOKEN}


def get(path, key, **params):
    r = S.get(f"{KS}{path}", headers=H, params=params)
    if r.status_code != 200:
        fail(f"GET {path}", r)
    return r.json()[key]


def create(path, key, obj):
    r = S.post(f"{KS}{path}", headers=H, json={key: obj})
    if r.status_code != 201:
        fail(f"POST {path}", r)
    return r.json()[key]


def ensure(path, key, name, obj, **filters):
    found = get(path, key + "s", name=name, **filters)
    if found:
        return found[0]
    return create(path, key, dict(obj, name=name))


def role_id(name):
    found = get("/roles", "roles", name=name)
    return found[0]["id"] if found else None


def grant(target, user_id, role):
    """Give user_id ROLE on target, e.g. "projects/<id>" or "domains/default"."""
    rid = role_id(role)
    if rid is None:
        rid = create("/roles", "role", {"name": role})["id"]
    r = S.put(f"{KS}/{target}/users/{user_id}/roles/{rid}", headers=H)
    if r.status_code not in (200, 204):
        fail(f"grant {role} on {target}", r)


def password_works(user, pw, project):
    body = {"auth": {"identity": {"methods": ["password"], "password": {
        "user": {"name": user, "domain": {"id": "default"}, "password": pw}}}}}
    return S.post(f"{KS}/auth/tokens", json=body).status_code == 201


def ensure_user(name, pw, project_id=None):
    found = get("/users", "users", name=name, domain_id="default")
    if not found:
        user = {"name": name, "domain_id": "default", "password": pw}
        if project_id:
            user["default_project_id"] = project_id
        return create("/users", "user", user)
    user = found[0]
    if not password_works(name, pw, project_id):
        # Keep the password in sync with the bed's secrets. This revokes the
        # user's tokens (second granularity), so wait out the current second.
        r = S.patch(f"{KS}/users/{user['id']}", headers=H, json={"user": {"password": pw}})
        if r.status_code != 200:
            fail(f"set password of {name}", r)
        time.sleep(1.1)
    return user


service_project = ensure("/projects", "project", "service", {"domain_id": "default"},
                         domain_id="default")
charm_project = ensure("/projects", "project", "charm-project", {"domain_id": "default"},
                       domain_id="default")
charm_b_project = ensure("/projects", "project", "charm-b-project", {"domain_id": "default"},
                         domain_id="default")

glance_user = ensure_user("glance", GLANCE_PW, service_project["id"])
grant(f"projects/{service_project['id']}", glance_user["id"], "admin")
grant(f"projects/{service_project['id']}", glance_user["id"], "service")

charm_user = ensure_user("charm", CHARM_PW, charm_project["id"])
grant(f"projects/{charm_project['id']}", charm_user["id"], "member")

# Cloud B: its own user and project, its images in RegionTwo's Glance.
charm_b_user = ensure_user("charm-b", CHARM_B_PW, charm_b_project["id"])
grant(f"projects/{charm_b_project['id']}", charm_b_user["id"], "member")

# The clouds of the Glances configured like other clouds (import, stores,
# import only): a user and project each, member of it, as cloud B.
own_ids = {}
for name, pw in OWN_GLANCE_USERS.items():
    project = ensure("/projects", "project", f"{name}-project", {"domain_id": "default"},
                     domain_id="default")
    user = ensure_user(name, pw, project["id"])
    grant(f"projects/{project['id']}", user["id"], "member")
    key = name.replace("-", "_")
    own_ids[f"{key}_user_id"] = user["id"]
    own_ids[f"{key}_project_id"] = project["id"]

# A user with a role on the Default domain and on no project: its cloud entry
# gets a domain-scoped token, which the daemon must refuse.
domain_user = ensure_user("charm-domain", DOMAIN_PW)
grant("domains/default", domain_user["id"], "member")

# Image service + endpoints, one set per region.
for region in IMAGE_ENDPOINTS:
    if S.get(f"{KS}/regions/{region}", headers=H).status_code == 404:
        create("/regions", "region", {"id": region, "description": "a region of the test bed"})
svc = next((s for s in get("/services", "services", type="image") if s["name"] == "glance"), None)
if svc is None:
    svc = create("/services", "service", {"name": "glance", "type": "image", "enabled": True})
endpoints = get("/endpoints", "endpoints", service_id=svc["id"])
for region, url in IMAGE_ENDPOINTS.items():
    for iface in ("public", "internal", "admin"):
        mine = [e for e in endpoints if e["interface"] == iface and e["region_id"] == region]
        if len(mine) == 1 and mine[0]["url"] == url:
            continue
        for e in mine:
            S.delete(f"{KS}/endpoints/{e['id']}", headers=H)
        create("/endpoints", "endpoint",
               {"service_id": svc["id"], "interface": iface, "url": url, "region_id": region})

# Unified limits. glance-capped reads them as the glance user, system-scoped
# (oslo.limit looks up the image endpoint, then the registered and project limits).
grant("system", glance_user["id"], "reader")


def ensure_limit(kind, key, value_key, value, **match):
    """Create or update the registered limit or project limit matching `match`."""
    found = get(f"/{kind}", kind, **match)
    if not found:
        r = S.post(f"{KS}/{kind}", headers=H, json={kind: [dict(match, **{value_key: value})]})
        if r.status_code != 201:
            fail(f"POST /{kind}", r)
    elif found[0][value_key] != value:
        r = S.patch(f"{KS}/{kind}/{found[0]['id']}", headers=H, json={key: {value_key: value}})
        if r.status_code != 200:
            fail(f"PATCH /{kind}", r)


for resource, value in REGISTERED_LIMITS.items():
    ensure_limit("registered_limits", "registered_limit", "default_limit", value,
                 service_id=svc["id"], region_id=LIMITS_REGION, resource_name=resource)
for resource, value in QUOTA_LIMITS.items():
    ensure_limit("limits", "limit", "resource_limit", value, service_id=svc["id"],
                 region_id=LIMITS_REGION, resource_name=resource,
                 project_id=own_ids["charm_quota_project_id"])

# Application credential for charm (created as charm, as a user would).
charm_token, tok = password_token("charm", CHARM_PW, "charm-project")
CH = {"X-Auth-Token": charm_token}


def appcred_works(cred):
    body = {"auth": {"identity": {"methods": ["application_credential"],
                                  "application_credential": {"id": cred["id"],
                                                             "secret": cred["secret"]}}}}
    return S.post(f"{KS}/auth/tokens", json=body).status_code == 201


cred = None
if os.path.exists(APPCRED_FILE):
    with open(APPCRED_FILE) as f:
        cred = json.load(f)
    if not appcred_works(cred):
        cred = None
if cred is None:
    base = f"{KS}/users/{charm_user['id']}/application_credentials"
    r = S.get(base, headers=CH, params={"name": "osih-charm"})
    for old in r.json().get("application_credentials", []) if r.status_code == 200 else []:
        S.delete(f"{base}/{old['id']}", headers=CH)
    for attempt in range(5):
        r = S.post(base, headers=CH, json={"application_credential": {
            "name": "osih-charm", "description": "openstack-image-helper test bed"}})
        if r.status_code != 401:
            break
        # A token issued in the same second as a revocation event (role grant,
        # password change) counts as revoked: get a new one and retry.
        time.sleep(1.1)
        CH = {"X-Auth-Token": password_token("charm", CHARM_PW, "charm-project")[0]}
    if r.status_code != 201:
        fail("create application credential", r)
    ac = r.json()["application_credential"]
    cred = {"id": ac["id"], "secret": ac["secret"], "name": ac["name"]}
    tmp = APPCRED_FILE + ".tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump(cred, f)
    os.replace(tmp, APPCRED_FILE)

with open(os.path.join(BED, "ids.json"), "w") as f:
    json.dump({"charm_user_id": charm_user["id"], "charm_project_id": charm_project["id"],
               "charm_b_user_id": charm_b_user["id"], "charm_b_project_id": charm_b_project["id"],
               "domain_user_id": domain_user["id"],
               "service_project_id": service_project["id"], "glance_user_id": glance_user["id"],
               "image_service_id": svc["id"], **own_ids}, f, indent=1)
