"""Sends one read-only request to each service the clusters use, so that LocalStack builds its
moto backends (region, account) now rather than while the first `clusterctl create` waits: ten
parallel first requests took 4 s together, against about 1 s for this warm-up alone.

usage: warm.py URL [REGION]
Exit 0 when every service answered, 1 otherwise (the message says which). Standard library only.
LocalStack reads the account and region from the credential scope and does not check signatures.
"""

import sys
import urllib.error
import urllib.request

CALLS = [
    ("ec2", "Action=DescribeVpcs&Version=2016-11-15"),
    ("ec2", "Action=DescribeInstances&Version=2016-11-15"),
    ("elasticloadbalancing", "Action=DescribeLoadBalancers&Version=2015-12-01"),
    ("iam", "Action=ListRoles&Version=2010-05-08"),
    ("sts", "Action=GetCallerIdentity&Version=2011-06-15"),
]


def main() -> int:
    url = sys.argv[1].rstrip("/") + "/"
    region = sys.argv[2] if len(sys.argv) > 2 else "us-east-1"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    failed = []
    for service, body in CALLS:
        headers = {
            "Authorization": f"AWS4-HMAC-SHA256 Credential=test/20260101/{region}/{service}/aws4_request, SignedHeaders=host, Signature=0",
            "Content-Type": "application/x-www-form-urlencoded",
        }
        try:
            with opener.open(urllib.request.Request(url, data=body.encode(), headers=headers, method="POST"), timeout=60) as resp:
                resp.read()
        except (urllib.error.URLError, OSError) as e:
            failed.append(f"{service} {body.split('&')[0]}: {e}")
    if failed:
        print("warm-up requests failed: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
