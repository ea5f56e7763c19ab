"""azure-identity and MSAL Python through the token doors besides IMDS (tests/doors.rs runs it).

    azure_doors.py arc         IDENTITY_ENDPOINT + IMDS_ENDPOINT point at imds-tun's HIMDS door
    azure_doors.py appservice  IDENTITY_ENDPOINT + IDENTITY_HEADER point at its App Service door

The harness runs `imds-tun serve --himds --app-service` as root in a test host whose
/var/opt is a private temporary directory, so the key files are in /var/opt/azcmagent/tokens
where the clients insist on finding them, and /etc/group a private copy (the `himds` group).
Every check compares with fixtures/default.json and raises on any mismatch; one `ok` line each.
"""

import base64
import grp
import json
import os
import stat
import sys
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

import msal  # noqa: E402
import requests  # noqa: E402
from azure.identity import ManagedIdentityCredential  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))
with open(os.path.join(ROOT, "fixtures", "default.json"), encoding="utf-8") as f:
    AZURE = json.load(f)["azure"]
SYSTEM = next(i for i in AZURE["identities"] if i["type"] == "systemAssigned")
USER = next(i for i in AZURE["identities"] if i["type"] == "userAssigned")
KEY_DIR = "/var/opt/azcmagent/tokens"
ARM = "https://management.azure.com"
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def check(what, got, want):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")
    print(f"ok: {what}")


def get(url, headers):
    request = urllib.request.Request(url, headers=headers)
    try:
        with OPENER.open(request, timeout=5) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def claims(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def keys_on_disk():
    return sorted(os.listdir(KEY_DIR))


def arc():
    endpoint = os.environ["IDENTITY_ENDPOINT"]
    check("IMDS_ENDPOINT is set (Arc detection)", "IMDS_ENDPOINT" in os.environ, True)
    check("key directory exists", os.path.isdir(KEY_DIR), True)

    # The challenge by hand: 401, realm in the key directory, file mode and owner, single use.
    url = endpoint + "?api-version=2019-11-01&resource=" + ARM
    status, headers, _ = get(url, {"Metadata": "true"})
    check("first call is challenged", status, 401)
    realm = headers["WWW-Authenticate"].split("=", 1)[1]
    check("realm directory", os.path.dirname(realm), KEY_DIR)
    check("realm suffix", realm.endswith(".key"), True)
    st = os.stat(realm)
    check("key file mode", stat.S_IMODE(st.st_mode), 0o640)
    check("key file owner", st.st_uid, 0)
    check("key file group", grp.getgrgid(st.st_gid).gr_name, "himds")
    check("key directory group", grp.getgrgid(os.stat(KEY_DIR).st_gid).gr_name, "himds")
    with open(realm, encoding="utf-8") as f:
        secret = f.read()
    auth = {"Metadata": "true", "Authorization": "Basic " + secret}
    status, _, body = get(url, auth)
    check("the key buys a token", status, 200)
    check("token is for the resource", json.loads(body)["resource"], ARM)
    check("used key file is removed", os.path.exists(realm), False)
    status, headers, _ = get(url, auth)
    check("a used key is refused", status, 401)
    check("with a fresh challenge", "WWW-Authenticate" in headers, True)
    status, _, _ = get(url, {"Metadata": "true", "Authorization": "Basic nope"})
    check("a wrong key is refused", status, 401)
    status, _, body = get(url, {"Authorization": "Basic " + secret})
    check("no Metadata header: 400", status, 400)
    status, _, _ = get(endpoint + "?api-version=2018-02-01&resource=" + ARM, {"Metadata": "true"})
    check("IMDS api-version at HIMDS: 400", status, 400)

    # No challenge for the instance document and identity info.
    base = os.environ["IMDS_ENDPOINT"]
    status, _, body = get(base + "/metadata/instance?api-version=2020-06-01", {"Metadata": "true"})
    check("instance document without challenge", (status, json.loads(body)["compute"]["vmId"]),
          (200, AZURE["instance"]["compute"]["vmId"]))
    status, _, body = get(base + "/metadata/identity/info?api-version=2020-06-01",
                          {"Metadata": "true"})
    check("identity info without challenge", (status, json.loads(body)["tenantId"]),
          (200, AZURE["tenantId"]))

    # azure-identity: ManagedIdentityCredential picks Azure Arc from the two variables. The
    # refused requests above left keys that expire on their own; the clients' must be gone.
    before = set(keys_on_disk())
    token = ManagedIdentityCredential().get_token(ARM + "/.default")
    c = claims(token.token)
    check("azure-identity (Arc) token audience", c["aud"].rstrip("/"), ARM)
    check("azure-identity (Arc) token oid", c["oid"], SYSTEM["objectId"])
    check("azure-identity's key file was removed", set(keys_on_disk()) - before, set())

    # MSAL Python: ManagedIdentityClient detects Arc the same way.
    client = msal.ManagedIdentityClient(msal.SystemAssignedManagedIdentity(),
                                        http_client=requests.Session())
    result = client.acquire_token_for_client(resource=ARM)
    check("MSAL (Arc) got a token", "access_token" in result, True)
    check("MSAL (Arc) token oid", claims(result["access_token"])["oid"], SYSTEM["objectId"])
    check("MSAL (Arc) expires_in", result.get("expires_in", 0) > 0, True)
    check("MSAL's key file was removed", set(keys_on_disk()) - before, set())


def appservice():
    check("IDENTITY_HEADER is set", bool(os.environ.get("IDENTITY_HEADER")), True)
    cred = ManagedIdentityCredential()
    token = cred.get_token("https://vault.azure.net/.default")
    c = claims(token.token)
    check("azure-identity (App Service) token oid", c["oid"], SYSTEM["objectId"])
    check("azure-identity (App Service) expiry", token.expires_on > 0, True)
    user = ManagedIdentityCredential(client_id=USER["clientId"]).get_token(ARM + "/.default")
    check("azure-identity (App Service) user-assigned", claims(user.token)["oid"],
          USER["objectId"])

    endpoint = os.environ["IDENTITY_ENDPOINT"]
    header = {"X-IDENTITY-HEADER": os.environ["IDENTITY_HEADER"]}
    url = endpoint + "?api-version=2019-08-01&resource=" + ARM
    status, _, body = get(url, header)
    fields = json.loads(body)
    check("App Service answer", status, 200)
    check("App Service fields", sorted(fields),
          ["access_token", "client_id", "expires_on", "resource", "token_type"])
    check("expires_on is epoch text", fields["expires_on"].isdigit(), True)
    status, _, body = get(endpoint + "?api-version=2019-08-01&resource=" + ARM
                          + "&principal_id=" + USER["objectId"], header)
    check("principal_id selects", claims(json.loads(body)["access_token"])["oid"],
          USER["objectId"])
    status, _, _ = get(url, {"X-IDENTITY-HEADER": "wrong"})
    check("wrong header: 401", status, 401)
    status, _, _ = get(url, {})
    check("no header: 401", status, 401)
    status, _, _ = get(endpoint + "?api-version=2018-02-01&resource=" + ARM, header)
    check("IMDS api-version: 400", status, 400)


if __name__ == "__main__":
    {"arc": arc, "appservice": appservice}[sys.argv[1]]()
