"""botocore (and boto3) against `imds-tun serve` with the default configuration.

The harness (tests/sdk.rs) sets AWS_EC2_METADATA_SERVICE_ENDPOINT=http://$IMDS_TUN_ADDR/ and
IMDS_TUN_ADDR. Every check compares with fixtures/default.json, the configuration the server
runs, and raises on any mismatch.

The role's credentials are minted and rotate hourly (each valid six hours): they are checked for
STS's shapes (ASIA key ids, 40-character secrets, session tokens), for agreeing across every
client, and for an Expiration five to six hours ahead.

IMDSv2 is proved, not assumed: botocore falls back to IMDSv1 silently when the token PUT fails,
so every fetcher here runs with IMDSv1 disabled (it then refuses to send a request without a
token), and every request botocore sends is recorded and checked for the token header.
"""

import datetime
import json
import os
import sys
import urllib.error
import urllib.request

import botocore.httpsession
import botocore.session
from botocore.credentials import InstanceMetadataProvider
from botocore.utils import InstanceMetadataFetcher, InstanceMetadataRegionFetcher

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# IMDS_TUN_CONFIG: the configuration the server answers this caller from (a fleet profile's
# merged document); fixtures/default.json when unset.
CONFIG_FILE = os.environ.get("IMDS_TUN_CONFIG") or os.path.join(ROOT, "fixtures", "default.json")
with open(CONFIG_FILE, encoding="utf-8") as f:
    AWS = json.load(f)["aws"]
if "minted" not in AWS["iam"]["credentials"]:
    raise AssertionError("the default configuration mints the role's credentials")
ROLE = AWS["iam"]["roleName"]
ZONE = AWS["metaData"]["placement"]["availability-zone"]
REGION = AWS["metaData"]["placement"]["region"]

BASE = "http://" + os.environ["IMDS_TUN_ADDR"]
# Two ways to run: against `imds-tun serve` through AWS_EC2_METADATA_SERVICE_ENDPOINT, or
# (IMDS_TUN_NO_OVERRIDES=1, under `imds-tun up`) with botocore's built-in endpoint.
if os.environ.get("IMDS_TUN_NO_OVERRIDES") == "1":
    if "AWS_EC2_METADATA_SERVICE_ENDPOINT" in os.environ:
        raise AssertionError("no-override mode, but AWS_EC2_METADATA_SERVICE_ENDPOINT is set")
    ENDPOINT = "http://169.254.169.254/"
    CONFIG = {"ec2_metadata_v1_disabled": True}
else:
    ENDPOINT = os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"]
    CONFIG = {"ec2_metadata_service_endpoint": ENDPOINT, "ec2_metadata_v1_disabled": True}


def check(what, got, want):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")
    print(f"ok: {what}")


def parse_time(text):
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)


def check_minted(what, access_key, secret_key, token, expiry):
    """STS shapes, and an expiry 5 to 6 hours ahead (rotated hourly, valid 6 h)."""
    if not (access_key.startswith("ASIA") and len(access_key) == 20 and access_key.isalnum()):
        raise AssertionError(f"{what}: access key {access_key!r}")
    if len(secret_key) != 40:
        raise AssertionError(f"{what}: secret key of {len(secret_key)} characters")
    if not token.startswith("IQoJb3JpZ2luX2Vj"):
        raise AssertionError(f"{what}: session token prefix")
    if isinstance(expiry, str):
        expiry = parse_time(expiry)
    now = datetime.datetime.now(datetime.timezone.utc)
    left = (expiry - now).total_seconds()
    if not 5 * 3600 - 60 < left <= 6 * 3600 + 60:
        raise AssertionError(f"{what}: expiry {expiry} is {left} s away, not 5 to 6 hours")
    print(f"ok: {what}: minted credentials, {int(left)} s left")


# Record every request botocore's IMDS client sends.
SENT = []
_send = botocore.httpsession.URLLib3Session.send


def recording_send(self, request):
    SENT.append((request.method, request.url, dict(request.headers)))
    return _send(self, request)


botocore.httpsession.URLLib3Session.send = recording_send


def token_header(headers):
    return next((v for k, v in headers.items() if k.lower() == "x-aws-ec2-metadata-token"), None)


def assert_v2(label, expected_gets):
    """The requests since the last call: one token PUT, then GETs that all carry a token."""
    sent = SENT[:]
    SENT.clear()
    puts = [s for s in sent if s[0] == "PUT"]
    gets = [s for s in sent if s[0] == "GET"]
    check(f"{label}: one token PUT", [p[1].split("/", 3)[3] for p in puts], ["latest/api/token"])
    ttl = next(v for k, v in puts[0][2].items() if k.lower() == "x-aws-ec2-metadata-token-ttl-seconds")
    check(f"{label}: token TTL asked", ttl, "21600")
    check(f"{label}: GET paths", [g[1].split("/", 3)[3] for g in gets], expected_gets)
    for method, url, headers in gets:
        tok = token_header(headers)
        if not tok or len(tok) != 56:
            raise AssertionError(f"{label}: {method} {url} sent without a session token: {headers}")
    print(f"ok: {label}: IMDSv2 used for every GET")


# 1. The credential fetcher: token, role name, credentials, all four fields.
fetcher = InstanceMetadataFetcher(timeout=2, num_attempts=1, config=CONFIG)
creds = fetcher.retrieve_iam_role_credentials()
check("fetcher role", creds.get("role_name"), ROLE)
check_minted("fetcher", creds["access_key"], creds["secret_key"], creds["token"], creds["expiry_time"])
# Everything below is fetched within the same rotation window, unless the hour turns meanwhile.
FIRST = (creds["access_key"], creds["secret_key"], creds["token"])


def same_as_first(what, access_key, secret_key, token):
    if (access_key, secret_key, token) != FIRST and datetime.datetime.now().minute != 0:
        raise AssertionError(f"{what}: credentials differ from the fetcher's within one hour")
    print(f"ok: {what}: the same credentials")


assert_v2(
    "credential fetcher",
    [
        "latest/meta-data/iam/security-credentials/",
        f"latest/meta-data/iam/security-credentials/{ROLE}",
    ],
)

# 2. The region fetcher asks for the zone with a trailing slash and drops the last letter.
region = InstanceMetadataRegionFetcher(timeout=2, num_attempts=1, config=CONFIG).retrieve_region()
check("region fetcher", region, REGION)
check("region is the zone's prefix", ZONE[:-1], REGION)
assert_v2("region fetcher", ["latest/meta-data/placement/availability-zone/"])

# 3. The credential provider the default chain uses.
provider = InstanceMetadataProvider(
    iam_role_fetcher=InstanceMetadataFetcher(timeout=2, num_attempts=1, config=CONFIG)
)
loaded = provider.load()
if loaded is None:
    raise AssertionError("InstanceMetadataProvider found no credentials")
check("provider method", loaded.method, "iam-role")
frozen = loaded.get_frozen_credentials()
check_minted("provider", frozen.access_key, frozen.secret_key, frozen.token, loaded._expiry_time)
same_as_first("provider", frozen.access_key, frozen.secret_key, frozen.token)
SENT.clear()

# 4. A whole session, as an application builds it: the default chain reaches IMDS through
#    AWS_EC2_METADATA_SERVICE_ENDPOINT; with IMDSv1 disabled it must use a token.
os.environ["AWS_EC2_METADATA_V1_DISABLED"] = "true"
session_creds = botocore.session.get_session().get_credentials()
if session_creds is None:
    raise AssertionError("botocore session found no credentials")
check("session method", session_creds.method, "iam-role")
same_as_first("session", session_creds.access_key, session_creds.secret_key, session_creds.token)
assert_v2(
    "session chain",
    [
        "latest/meta-data/iam/security-credentials/",
        f"latest/meta-data/iam/security-credentials/{ROLE}",
    ],
)

import boto3  # noqa: E402  (installed by the harness; a missing boto3 is a failure)

b3 = boto3.Session(region_name=REGION).get_credentials().get_frozen_credentials()
same_as_first("boto3", b3.access_key, b3.secret_key, b3.token)
SENT.clear()


# 5. The wire facts SDKs rely on but botocore does not check: the TTL echo (Go v2 and Rust
#    refuse a token without it) and 401 for a token this server did not issue.
def raw(method, path, headers):
    req = urllib.request.Request(BASE + path, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


status, headers, token = raw("PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "300"})
check("token PUT status", status, 200)
check("token TTL echo", headers.get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds"), "300")
check("Server header", headers.get("Server"), "EC2ws")
status, _, body = raw("GET", "/latest/meta-data/instance-id", {"X-aws-ec2-metadata-token": token})
check("GET with token", (status, body), (200, AWS["metaData"]["instance-id"]))
status, _, _ = raw("GET", "/latest/meta-data/instance-id", {"X-aws-ec2-metadata-token": "A" * 56})
check("GET with a forged token", status, 401)
status, _, _ = raw("PUT", "/latest/api/token", {})
check("token PUT without TTL", status, 400)

# iam/info and the credentials agree on LastUpdated, the start of the rotation window.
_, _, info = raw("GET", "/latest/meta-data/iam/info", {"X-aws-ec2-metadata-token": token})
_, headers, creds = raw("GET", f"/latest/meta-data/iam/security-credentials/{ROLE}", {"X-aws-ec2-metadata-token": token})
info, creds = json.loads(info), json.loads(creds)
check("iam/info LastUpdated", info["LastUpdated"], creds["LastUpdated"])
updated = parse_time(creds["LastUpdated"])
check("LastUpdated is on the hour", (updated.minute, updated.second), (0, 0))
check("Expiration is six hours later", parse_time(creds["Expiration"]) - updated, datetime.timedelta(hours=6))

print("aws: all checks passed")
sys.exit(0)
