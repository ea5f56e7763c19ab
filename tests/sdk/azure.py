"""azure-identity (and MSAL Python) against `imds-tun serve` with the default configuration.

The harness (tests/sdk.rs) sets AZURE_POD_IDENTITY_AUTHORITY_HOST=http://$IMDS_TUN_ADDR, the
documented override that points azure-identity and MSAL at another IMDS host, and IMDS_TUN_ADDR.
Every check compares with fixtures/default.json, the configuration the server runs, and raises on
any mismatch.

Covered: ManagedIdentityCredential for the system-assigned identity and for the user-assigned one
by client_id, object_id and msi_res_id; DefaultAzureCredential reaching managed identity; MSAL's
ManagedIdentityClient; every token validated with PyJWT against the JWKS the server publishes at
/imds-tun/jwks (signature, aud = the resource, iss, exp) plus the claims `az login --identity`
reads; and plain HTTP calls for the instance document, format=text leaves, the version list and
the documented 400 bodies.
"""

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request

# This file is named azure.py and Python puts its directory first on sys.path, which would make
# `import azure` import this script instead of the SDK's namespace package.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

import jwt  # noqa: E402  (PyJWT)
import msal  # noqa: E402
import requests  # noqa: E402
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# IMDS_TUN_CONFIG: the configuration the server answers this caller from (a fleet profile's
# merged document); fixtures/default.json when unset.
CONFIG_FILE = os.environ.get("IMDS_TUN_CONFIG") or os.path.join(ROOT, "fixtures", "default.json")
with open(CONFIG_FILE, encoding="utf-8") as f:
    AZURE = json.load(f)["azure"]
COMPUTE = AZURE["instance"]["compute"]
NIC = AZURE["instance"]["network"]["interface"][0]
SYSTEM = next(i for i in AZURE["identities"] if i["type"] == "systemAssigned")
USER = next(i for i in AZURE["identities"] if i["type"] == "userAssigned")

BASE = "http://" + os.environ["IMDS_TUN_ADDR"]
# Two ways to run: against `imds-tun serve` on a loopback port through the SDK's documented
# override, or (IMDS_TUN_NO_OVERRIDES=1, under `imds-tun up`) with no override at all.
if os.environ.get("IMDS_TUN_NO_OVERRIDES") == "1":
    if "AZURE_POD_IDENTITY_AUTHORITY_HOST" in os.environ or BASE != "http://169.254.169.254:80":
        raise AssertionError("no-override mode: no override may be set, and IMDS is 169.254.169.254:80")
elif os.environ.get("AZURE_POD_IDENTITY_AUTHORITY_HOST", "").rstrip("/") != BASE:
    raise AssertionError("AZURE_POD_IDENTITY_AUTHORITY_HOST must point at IMDS_TUN_ADDR")
ARM_SCOPE = "https://management.azure.com/.default"
# No proxy may sit between a client and IMDS.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def check(what, got, want):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")
    print(f"ok: {what}")


def get(path, headers=None):
    """(status, headers, body text) of a GET, errors included."""
    request = urllib.request.Request(BASE + path, headers=headers or {})
    try:
        with OPENER.open(request, timeout=5) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def metadata(path):
    return get(path, {"Metadata": "true"})


def check_expiry(what, expires_on, start):
    """A sane expiry: in the future, at most a managed-identity lifetime (24 h) away."""
    if not isinstance(expires_on, int):
        raise AssertionError(f"{what}: expires_on {expires_on!r} is not an int")
    if not start < expires_on <= int(time.time()) + 86400 + 60:
        raise AssertionError(f"{what}: expires_on {expires_on} not within 24 h of now ({start})")
    print(f"ok: {what} ({expires_on - int(time.time())} s left)")


def jwt_claims(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


# The server's public keys, as a relying party would fetch them.
JWKS = jwt.PyJWKClient(BASE + "/imds-tun/jwks", cache_keys=True)
ISSUER = f"https://sts.windows.net/{AZURE['tenantId']}/"
ARM = "https://management.azure.com"


def verify(what, token, resource, ident):
    """Validates a minted token end to end: RS256 signature by the JWKS key its kid names,
    aud = the resource asked for, iss, exp/nbf/iat; then the identity's claims."""
    key = JWKS.get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        key.key,
        algorithms=["RS256"],
        audience=resource,
        issuer=ISSUER,
        options={"require": ["exp", "iat", "nbf", "aud", "iss"]},
    )
    check(f"{what}: tid", claims["tid"], AZURE["tenantId"])
    check(f"{what}: appid", claims["appid"], ident["clientId"])
    check(f"{what}: oid", claims["oid"], ident["objectId"])
    mirid = ident.get("msiResId", COMPUTE["resourceId"])
    check(f"{what}: xms_mirid", claims["xms_mirid"], mirid)
    return claims


# --- azure-identity: ManagedIdentityCredential -------------------------------------------------

start = int(time.time())
token = ManagedIdentityCredential().get_token(ARM_SCOPE)
claims = verify("system-assigned token", token.token, ARM, SYSTEM)
check_expiry("system-assigned expires_on", token.expires_on, start)
check("expires_on is the token's exp", token.expires_on, claims["exp"])

token = ManagedIdentityCredential(client_id=USER["clientId"]).get_token(ARM_SCOPE)
verify("user-assigned token by client_id", token.token, ARM, USER)
check_expiry("user-assigned expires_on", token.expires_on, start)

# azure-identity's identity_config keys; MSAL sends resource_id to IMDS as msi_res_id.
for key, value in (("object_id", USER["objectId"]), ("resource_id", USER["msiResId"])):
    cred = ManagedIdentityCredential(identity_config={key: value})
    verify(f"user-assigned token by {key}", cred.get_token(ARM_SCOPE).token, ARM, USER)

info = ManagedIdentityCredential().get_token_info("https://vault.azure.net/.default")
verify("get_token_info token", info.token, "https://vault.azure.net", SYSTEM)
check_expiry("get_token_info expires_on", info.expires_on, start)

# A token for one resource is refused by another resource's validation.
try:
    jwt.decode(info.token, JWKS.get_signing_key_from_jwt(info.token).key, algorithms=["RS256"],
               audience=ARM, issuer=ISSUER)
    raise AssertionError("a vault token validated for ARM")
except jwt.InvalidAudienceError:
    print("ok: a token is bound to its resource")

# An identity the VM does not have: IMDS answers 400, which azure-identity reports as
# "no identity assigned" rather than a transient failure.
try:
    ManagedIdentityCredential(client_id="00000000-0000-0000-0000-000000000000").get_token(ARM_SCOPE)
    raise AssertionError("an unknown client_id must not get a token")
except Exception as e:  # CredentialUnavailableError
    check("unknown client_id is unavailable", type(e).__name__, "CredentialUnavailableError")
    # MSAL passes on the error code of IMDS's JSON body.
    if "invalid_request" not in str(e):
        raise AssertionError(f"IMDS error code missing from {e}")

# DefaultAzureCredential walks its chain to managed identity (the others find nothing here).
dac = DefaultAzureCredential(
    exclude_shared_token_cache_credential=True,
    exclude_cli_credential=True,
    exclude_powershell_credential=True,
    exclude_developer_cli_credential=True,
    exclude_interactive_browser_credential=True,
    exclude_visual_studio_code_credential=True,
)
verify("DefaultAzureCredential token", dac.get_token(ARM_SCOPE).token, ARM, SYSTEM)

# --- MSAL Python: ManagedIdentityClient (what `az login --identity` uses) -----------------------

client = msal.ManagedIdentityClient(msal.SystemAssignedManagedIdentity(), http_client=requests.Session())
result = client.acquire_token_for_client(resource="https://management.azure.com")
verify("msal system-assigned token", result.get("access_token"), ARM, SYSTEM)
if not 0 < int(result.get("expires_in", 0)) <= 86400:
    raise AssertionError(f"msal expires_in {result.get('expires_in')!r}")
client = msal.ManagedIdentityClient(
    msal.UserAssignedManagedIdentity(client_id=USER["clientId"]), http_client=requests.Session()
)
result = client.acquire_token_for_client(resource="https://vault.azure.net")
verify("msal user-assigned token", result.get("access_token"), "https://vault.azure.net", USER)

# `az login --identity` decodes the token without checking the signature and reads these.
claims = jwt_claims(result["access_token"])
for key in ("tid", "oid", "appid", "xms_mirid", "iss", "aud", "iat", "nbf", "exp"):
    if key not in claims:
        raise AssertionError(f"unverified decode lacks {key}")
print("ok: unverified decode has every claim az reads")

# --- the token endpoint on the wire --------------------------------------------------------------

status, headers, body = metadata(
    "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F"
)
check("token status", status, 200)
doc = json.loads(body)
check("token fields are strings", all(isinstance(v, str) for v in doc.values()), True)
check("token client_id", doc["client_id"], SYSTEM["clientId"])
check("token resource", doc["resource"], "https://management.azure.com/")
check("token type", doc["token_type"], "Bearer")
check("expires_in agrees with expires_on", int(doc["expires_on"]) - int(doc["expires_in"]) in range(start - 5, int(time.time()) + 5), True)
claims = verify("token on the wire", doc["access_token"], "https://management.azure.com/", SYSTEM)
check("expires_on is exp", doc["expires_on"], str(claims["exp"]))
check("not_before is nbf", doc["not_before"], str(claims["nbf"]))

status, _, body = get("/metadata/identity/oauth2/token?api-version=2018-02-01&resource=r")
check("token without Metadata header", (status, json.loads(body)),
      (400, {"error": "invalid_request", "error_description": "Required metadata header not specified"}))
status, _, body = metadata("/metadata/identity/oauth2/token?api-version=2018-02-01&resource=r&client_id=" + "0" * 8 + "-0000-0000-0000-" + "0" * 12)
check("unknown identity", (status, json.loads(body)),
      (400, {"error": "invalid_request", "error_description": "Identity not found"}))
status, _, body = metadata("/metadata/identity/info?api-version=2018-02-01")
check("identity info", (status, json.loads(body)), (200, {"tenantId": AZURE["tenantId"]}))

# --- instance metadata with plain HTTP -------------------------------------------------------------

status, headers, body = metadata("/metadata/instance?api-version=2021-02-01")
check("instance status", status, 200)
check("instance content type", headers["Content-Type"], "application/json; charset=utf-8")
check("Server header", headers["Server"], "IMDS/150.870.65.1854")
doc = json.loads(body)
for key in ("vmId", "name", "location", "subscriptionId", "resourceId", "tags", "vmSize", "zone"):
    check(f"compute.{key}", doc["compute"][key], COMPUTE[key])
check("compute.tagsList", doc["compute"]["tagsList"], COMPUTE["tagsList"])
check("network", doc["network"]["interface"][0], NIC)

r = requests.get(BASE + "/metadata/instance/compute", params={"api-version": "2025-04-07"}, headers={"Metadata": "true"})
check("compute via requests", r.json()["osProfile"], COMPUTE["osProfile"])

for path, want in (
    ("compute/vmId", COMPUTE["vmId"]),
    ("compute/tags", COMPUTE["tags"]),
    ("compute/userData", COMPUTE["userData"]),
    ("compute/platformFaultDomain", COMPUTE["platformFaultDomain"]),
    ("network/interface/0/macAddress", NIC["macAddress"]),
    ("network/interface/0/ipv4/ipAddress/0/privateIpAddress", NIC["ipv4"]["ipAddress"][0]["privateIpAddress"]),
    ("network/interface/0/ipv4/ipAddress/0/publicIpAddress", NIC["ipv4"]["ipAddress"][0]["publicIpAddress"]),
):
    status, headers, body = metadata(f"/metadata/instance/{path}?api-version=2021-02-01&format=text")
    check(f"text {path}", (status, headers["Content-Type"], body), (200, "text/plain; charset=utf-8", want))

status, _, body = metadata("/metadata/instance?api-version=2021-02-01&format=text")
check("instance listing", (status, body), (200, "compute/\nnetwork/"))

status, _, body = metadata("/metadata/versions")
versions = json.loads(body)["apiVersions"]
check("versions", (status, versions[0], versions[-1], len(versions)), (200, "2017-03-01", "2025-04-07", 35))

# --- the documented 400 bodies -------------------------------------------------------------------

status, _, body = metadata("/metadata/instance")
check("missing api-version", (status, json.loads(body)), (400, {
    "error": "Bad request. api-version is invalid or was not specified in the request. "
             "For more information refer to aka.ms/azureimds",
    "newest-versions": ["2025-04-07", "2024-07-17", "2024-03-15"],
}))
status, _, body = get("/metadata/instance?api-version=2021-02-01")
check("missing Metadata header", (status, json.loads(body)),
      (400, {"error": "Bad request. Required metadata header not specified"}))
status, _, body = metadata("/metadata/instance/compute/vmId?api-version=2021-02-01")
check("leaf without format=text", status, 400)
status, _, _ = metadata("/metadata/instance?api-version=2021-02-01&api-version=2021-02-01")
check("duplicate query parameter", status, 400)
status, _, _ = get("/metadata/instance?api-version=2021-02-01", {"Metadata": "true", "X-Forwarded-For": "10.1.2.3"})
check("X-Forwarded-For", status, 400)
status, _, _ = metadata("/metadata/instance/compute/nothing?api-version=2021-02-01")
check("unknown element", status, 404)

status, _, body = metadata("/metadata/loadbalancer?api-version=2020-10-01")
check("load balancer", (status, json.loads(body)["loadbalancer"]["inboundRules"][0]["frontendPort"]),
      (200, AZURE["loadbalancer"]["inboundRules"][0]["frontendPort"]))
status, _, body = metadata("/metadata/scheduledevents?api-version=2020-07-01")
check("scheduled events", (status, json.loads(body)),
      (200, {"DocumentIncarnation": AZURE["scheduledEvents"]["documentIncarnation"], "Events": []}))

print("azure: all checks passed")
