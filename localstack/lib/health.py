"""Waits until LocalStack's health endpoint shows the given services ready.

usage: health.py URL SERVICES DEADLINE_SECONDS [PID]
Exit 0: ready. Exit 1: deadline passed. Exit 2: the process PID died. Standard library only,
so it runs under any Python 3.
"""

import json
import os
import sys
import time
import urllib.request

READY = {"available", "running"}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def main() -> int:
    url, services, deadline_s = sys.argv[1], sys.argv[2].split(","), float(sys.argv[3])
    pid = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[4] else None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    deadline = time.monotonic() + deadline_s
    last = "no answer yet"
    while True:
        try:
            with opener.open(url.rstrip("/") + "/_localstack/health", timeout=2) as resp:
                states = json.load(resp).get("services", {})
            missing = {s: states.get(s, "absent") for s in services if states.get(s) not in READY}
            if not missing:
                return 0
            last = f"not ready: {missing}"
        except Exception as e:  # noqa: BLE001 - anything means "not yet"
            last = f"{type(e).__name__}: {e}"
        if pid is not None and not _alive(pid):
            print(f"process {pid} exited ({last})", file=sys.stderr)
            return 2
        if time.monotonic() >= deadline:
            print(f"deadline of {deadline_s:g} s passed ({last})", file=sys.stderr)
            return 1
        time.sleep(0.25)


if __name__ == "__main__":
    sys.exit(main())
