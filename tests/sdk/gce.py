"""google-auth against `imds-tun serve`, asserting the values of fixtures/default.json.

The harness (tests/sdk.rs) starts the server with the default configuration and sets
GCE_METADATA_HOST and GCE_METADATA_IP to its host:port: google-auth sends its detection ping
to GCE_METADATA_IP and every data request to GCE_METADATA_HOST. Any mismatch raises, so the
script exits non-zero.

Tokens are minted: access tokens are opaque `ya29.` strings that follow `scopes=`; ID tokens
(IDTokenCredentials asks with format=full) are validated with PyJWT against the JWKS the server
publishes at /imds-tun/jwks: signature, aud, iss, exp, and the format=full claims.
"""

import datetime
import json
import os
import sys

import google.auth
import google.auth.exceptions
import google.auth.transport.requests
import google.oauth2.id_token
import jwt  # PyJWT
from google.auth import compute_engine
from google.auth.compute_engine import _metadata

# IMDS_TUN_CONFIG: the configuration the server answers this caller from (a fleet profile's
# merged document); fixtures/default.json when unset.
FIXTURE = os.environ.get("IMDS_TUN_CONFIG") or os.path.join(
    os.path.dirname(__file__), "..", "..", "fixtures", "default.json"
)


def check(what, got, want):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")
    print(f"ok  {what}")


def verify_id_token(what, token, audience, email, instance, project):
    """PyJWT validation against the server's JWKS, then the format=full claims."""
    host = os.environ.get("GCE_METADATA_HOST", "metadata.google.internal")
    keys = jwt.PyJWKClient(f"http://{host}/imds-tun/jwks")
    claims = jwt.decode(
        token,
        keys.get_signing_key_from_jwt(token).key,
        algorithms=["RS256"],
        audience=audience,
        issuer="https://accounts.google.com",
        options={"require": ["exp", "iat", "aud", "iss", "sub"]},
    )
    check(f"{what}: email (format=full)", claims.get("email"), email)
    check(f"{what}: email_verified", claims.get("email_verified"), True)
    check(f"{what}: azp is sub", claims["azp"], claims["sub"])
    ce = claims["google"]["compute_engine"]
    check(f"{what}: project_id", ce["project_id"], project["project-id"])
    check(f"{what}: project_number", ce["project_number"], project["numeric-project-id"])
    check(f"{what}: instance_id", ce["instance_id"], str(instance["id"]))
    check(f"{what}: instance_name", ce["instance_name"], instance["name"])
    check(f"{what}: zone", ce["zone"], instance["zone"].rsplit("/", 1)[-1])
    return claims


def main():
    # Two ways to run: against `imds-tun serve` through GCE_METADATA_HOST/IP, or
    # (IMDS_TUN_NO_OVERRIDES=1, under `imds-tun up`) with no override at all, where google-auth
    # pings 169.254.169.254 and reads from metadata.google.internal via /etc/hosts.
    for name in ("GCE_METADATA_HOST", "GCE_METADATA_IP"):
        if os.environ.get("IMDS_TUN_NO_OVERRIDES") == "1":
            if name in os.environ:
                raise AssertionError(f"no-override mode, but {name} is set")
        elif not os.environ.get(name):
            raise AssertionError(f"{name} is not set (the harness sets it to IMDS_TUN_ADDR)")
    with open(FIXTURE) as f:
        gce = json.load(f)["gce"]
    project, instance = gce["project"], gce["instance"]
    (email, account), = gce["serviceAccounts"].items()
    request = google.auth.transport.requests.Request()

    # Detection: GET / on GCE_METADATA_IP must be 200 with Metadata-Flavor: Google.
    check("ping", _metadata.ping(request), True)
    check("is_on_gce", _metadata.is_on_gce(request), True)

    # Plain values: text unless the server says application/json.
    check("get_project_id", _metadata.get_project_id(request), project["project-id"])
    check(
        "numeric-project-id",
        _metadata.get(request, "project/numeric-project-id"),
        str(project["numeric-project-id"]),
    )
    check("instance/zone", _metadata.get(request, "instance/zone"), instance["zone"])
    check("instance/tags (JSON)", _metadata.get(request, "instance/tags"), instance["tags"])
    check("universe domain", _metadata.get_universe_domain(request), gce["universeDomain"])

    # Recursive: camelCase for fixed keys, user keys unchanged.
    tree = _metadata.get(request, "instance/", recursive=True)
    check("recursive machineType", tree["machineType"], instance["machine-type"])
    check("recursive id", tree["id"], instance["id"])
    check("recursive attributes", tree["attributes"], instance["attributes"])
    check(
        "recursive networkInterfaces[0].accessConfigs[0].externalIp",
        tree["networkInterfaces"][0]["accessConfigs"][0]["externalIp"],
        instance["network-interfaces"][0]["access-configs"][0]["external-ip"],
    )
    whole = _metadata.get(request, "", recursive=True)
    check("recursive root projectId", whole["project"]["projectId"], project["project-id"])
    check(
        "recursive root numericProjectId",
        whole["project"]["numericProjectId"],
        project["numeric-project-id"],
    )

    # Service account info, by alias and by e-mail (gcloud asks by e-mail).
    info = {"aliases": account["aliases"], "email": email, "scopes": account["scopes"]}
    check("get_service_account_info(default)", _metadata.get_service_account_info(request), info)
    check(
        "get_service_account_info(email)",
        _metadata.get_service_account_info(request, email),
        info,
    )
    token, expiry = _metadata.get_service_account_token(request, email)
    check("get_service_account_token(email) is a Google-style token", token.startswith("ya29."), True)
    scoped, _ = _metadata.get_service_account_token(
        request, email, scopes=["https://www.googleapis.com/auth/devstorage.read_only"]
    )
    check("scopes= choose another token", scoped != token and scoped.startswith("ya29."), True)

    # Missing paths are errors, not values.
    try:
        _metadata.get(request, "instance/no-such-key")
    except google.auth.exceptions.TransportError:
        print("ok  missing key raises TransportError")
    else:
        raise AssertionError("a missing key did not raise")

    # Compute Engine credentials: refresh() reads the token and a numeric expires_in.
    creds = compute_engine.Credentials()
    creds.refresh(request)
    check("Credentials.token is minted", creds.token.startswith("ya29.c."), True)
    check("Credentials.service_account_email", creds.service_account_email, email)
    now = datetime.datetime.utcnow()
    if not (creds.expiry and creds.expiry > now + datetime.timedelta(minutes=30)):
        raise AssertionError(f"token expiry {creds.expiry!r} is not about an hour ahead of {now}")
    print("ok  Credentials.expiry in the future")
    check("Credentials.valid", creds.valid, True)

    # Application default credentials find the metadata server and its project.
    adc, adc_project = google.auth.default()
    check("google.auth.default() type", type(adc).__name__, "Credentials")
    check("google.auth.default() project", adc_project, project["project-id"])
    adc.refresh(request)
    check("google.auth.default() token", adc.token.startswith("ya29.c."), True)

    # ID tokens from the identity endpoint: IDTokenCredentials asks with format=full.
    idc = compute_engine.IDTokenCredentials(
        request, "https://example.com", use_metadata_identity_endpoint=True
    )
    idc.refresh(request)
    claims = verify_id_token("IDTokenCredentials", idc.token, "https://example.com", email, instance, project)
    check("IDTokenCredentials.expiry is exp", int(idc.expiry.replace(tzinfo=datetime.timezone.utc).timestamp()), claims["exp"])
    fetched = google.oauth2.id_token.fetch_id_token(request, "https://other.example.com")
    verify_id_token("fetch_id_token", fetched, "https://other.example.com", email, instance, project)
    try:
        jwt.decode(fetched, options={"verify_signature": False, "verify_aud": True}, audience="https://example.com")
        raise AssertionError("an ID token for one audience validated for another")
    except jwt.InvalidAudienceError:
        print("ok  an ID token is bound to its audience")
    print("all google-auth checks passed")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # any failure is a test failure, with its reason
        print(f"FAIL: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
