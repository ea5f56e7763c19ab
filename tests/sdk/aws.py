"""botocore (and boto3) against `imds-tun serve` with the default configuration.

The harness (tests/sdk.rs) sets AWS_EC2_METADATA_SERVICE_ENDPOINT=http://$IMDS_TUN_ADDR/ and
IMDS_TUN_ADDR. Every check compares with fixtures/default.json, the configuration the server
runs, and raises on any mismatch.

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
with open(os.path.join(ROOT, "fixtures", "default.json"), encoding="utf-8") as f:
    AWS = json.load(f)["aws"]
STATIC = AWS["iam"]["credentials"]["static"]
ROLE = AWS["iam"]["roleName"]
ZONE = AWS["metaData"]["placement"]["availability-zone"]
REGION = AWS["metaData"]["placement"]["region"]
EXPIRY = datetime.datetime.strptime(STATIC["expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(
    tzinfo=datetime.timezone.utc
)

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
check("fetcher access key", creds.get("access_key"), STATIC["accessKeyId"])
check("fetcher secret key", creds.get("secret_key"), STATIC["secretAccessKey"])
check("fetcher token", creds.get("token"), STATIC["token"])
check("fetcher expiry", creds.get("expiry_time"), STATIC["expiration"])
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
check("provider access key", frozen.access_key, STATIC["accessKeyId"])
check("provider secret key", frozen.secret_key, STATIC["secretAccessKey"])
check("provider token", frozen.token, STATIC["token"])
check("provider expiry", loaded._expiry_time, EXPIRY)
SENT.clear()

# 4. A whole session, as an application builds it: the default chain reaches IMDS through
#    AWS_EC2_METADATA_SERVICE_ENDPOINT; with IMDSv1 disabled it must use a token.
os.environ["AWS_EC2_METADATA_V1_DISABLED"] = "true"
session_creds = botocore.session.get_session().get_credentials()
if session_creds is None:
    raise AssertionError("botocore session found no credentials")
check("session method", session_creds.method, "iam-role")
check("session access key", session_creds.access_key, STATIC["accessKeyId"])
check("session secret key", session_creds.secret_key, STATIC["secretAccessKey"])
check("session token", session_creds.token, STATIC["token"])
assert_v2(
    "session chain",
    [
        "latest/meta-data/iam/security-credentials/",
        f"latest/meta-data/iam/security-credentials/{ROLE}",
    ],
)

import boto3  # noqa: E402  (installed by the harness; a missing boto3 is a failure)

b3 = boto3.Session(region_name=REGION).get_credentials().get_frozen_credentials()
check("boto3 access key", b3.access_key, STATIC["accessKeyId"])
check("boto3 secret key", b3.secret_key, STATIC["secretAccessKey"])
check("boto3 token", b3.token, STATIC["token"])
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

print("aws: all checks passed")
sys.exit(0)
