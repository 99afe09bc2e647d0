"""Runs the built Rust test binaries as `cargo test --all-targets` would, but the end-to-end ones
(tests/*_localstack.rs) in parallel lanes, because they spend most of their time waiting on
clusters (SSH, boots, heals), not on the two cores.

    python3 scripts/lib/test_lanes.py LANES THREADS < cargo-json

Reads `cargo test --no-run --message-format=json` on stdin. First runs every test binary that is
not end-to-end (the unit tests among them, which are CPU-bound and timing-sensitive), one after
the other; then spreads the end-to-end binaries over LANES lanes, longest first (by the run
times below, measured on a 2-core machine; an unknown binary counts as 60 s), each lane running
its binaries one after the other. Each binary's output goes to target/test-logs/<name>.log (the
end-to-end ones with --nocapture, so that the figures they print are kept) and is printed whole
when it fails; otherwise one line with its time and libtest's summary. Clusters do
not collide across binaries: each test file has its own cluster names and VPC CIDRs
(tests/common). Exits 1 if any binary failed, after every lane has finished.
"""

import json
import os
import subprocess
import sys
import threading
import time

SECONDS = {
    "workloads_localstack": 253,
    "ha_localstack": 164,
    "commands_localstack": 143,
    "cloud_localstack": 113,
    "cluster_localstack": 92,
    "infra_localstack": 15,
    "ssh_localstack": 14,
}

print_lock = threading.Lock()


def binaries(lines):
    found = []
    for line in lines:
        message = json.loads(line)
        if message.get("reason") != "compiler-artifact" or not message.get("executable"):
            continue
        if not message.get("profile", {}).get("test"):
            continue
        target = message["target"]
        name = target["name"] if target["kind"] != ["lib"] else "lib"
        found.append((f"{'-'.join(target['kind'])}:{name}", target["name"], message["executable"]))
    return found


def run(label, executable, threads, logs, nocapture=False):
    log_path = os.path.join(logs, label.replace(":", "-") + ".log")
    started = time.monotonic()
    # End-to-end tests print their figures (boot, heal, rotation times): kept in the log.
    args = [executable, f"--test-threads={threads}"] + (["--nocapture"] if nocapture else [])
    with open(log_path, "w") as log:
        code = subprocess.call(args, stdout=log, stderr=subprocess.STDOUT)
    took = time.monotonic() - started
    with open(log_path) as log:
        text = log.read()
    summary = [l for l in text.splitlines() if l.startswith("test result:")]
    with print_lock:
        if code == 0:
            print(f"  ok   {label} ({took:.0f} s) {summary[-1] if summary else ''}", flush=True)
        else:
            print(f"\n---- {label} FAILED (exit {code}, {took:.0f} s); its output:\n{text}\n---- end of {label}\n", flush=True)
    return code == 0


def main():
    lanes, threads = int(sys.argv[1]), sys.argv[2]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    logs = os.path.join(root, "target", "test-logs")
    os.makedirs(logs, exist_ok=True)
    found = binaries(sys.stdin)
    end_to_end = [b for b in found if b[1].endswith("_localstack")]
    others = [b for b in found if not b[1].endswith("_localstack")]
    failed = []
    print(f"tests: {len(others)} binaries one after the other, then {len(end_to_end)} end-to-end in {lanes} lanes", flush=True)
    for label, _, executable in others:
        if not run(label, executable, threads, logs):
            failed.append(label)
    plan = [[] for _ in range(max(lanes, 1))]
    load = [0] * len(plan)
    for binary in sorted(end_to_end, key=lambda b: -SECONDS.get(b[1], 60)):
        lane = load.index(min(load))
        plan[lane].append(binary)
        load[lane] += SECONDS.get(binary[1], 60)
    for i, lane in enumerate(plan):
        print(f"  lane {i + 1}: {' '.join(b[1] for b in lane)} (~{load[i]} s alone)", flush=True)

    def run_lane(lane):
        for label, _, executable in lane:
            if not run(label, executable, threads, logs, nocapture=True):
                failed.append(label)

    workers = [threading.Thread(target=run_lane, args=(lane,)) for lane in plan if lane]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if failed:
        print(f"failed: {' '.join(failed)} (logs in {logs})", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
