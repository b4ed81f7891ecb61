"""How much the opt-in allocator setting segone.keep_freed_memory() matters on this machine.

Runs ``segone.build_profiles`` (1M customers, ~20M transactions: the PROFILE
workload's data) several times in a child process per setting, with a pause
between calls as a benchmark's peer would leave, and prints per call the wall
time, minor page faults, system CPU time, and the child's peak RSS::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/memory_probe.py [--quick]

Settings: the allocators' defaults (what ``import segone`` leaves) and
``segone.keep_freed_memory()`` called first (freed memory kept in the heap).
The rounds alternate between the two children.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, os, resource, sys, time
import segone
path, rounds, pause, keep = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "1"
if keep:
    segone.keep_freed_memory()
def ru():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_minflt, r.ru_stime
out = []
for i in range(rounds + 1):
    f0, s0 = ru(); t = time.perf_counter()
    p = segone.build_profiles(f"{path}/transactions")
    wall = time.perf_counter() - t; f1, s1 = ru()
    del p
    if i:  # the first call loads the kernels
        out.append({"wall": wall, "faults": f1 - f0, "sys": s1 - s0})
    time.sleep(pause)
print(json.dumps({"calls": out, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "memory": segone.memory_settings()}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="50k customers instead of 1M")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=3, help="calls per child per round")
    ap.add_argument("--pause", type=float, default=3.0, help="seconds between calls (a peer's run)")
    ap.add_argument("--workdir", default=os.path.join(os.path.expanduser("~"), ".cache", "segone-bench"))
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(__file__))
    from compare import synth_dataset

    _, path = synth_dataset(args.quick, args.workdir)
    res = {"defaults": [], "keep_freed_memory()": []}
    peaks = {k: [] for k in res}
    for _ in range(args.rounds):
        for label, val in (("defaults", "0"), ("keep_freed_memory()", "1")):
            env = dict(os.environ)
            out = subprocess.run([sys.executable, "-c", CHILD, path, str(args.calls), str(args.pause), val], env=env,
                                 check=True, capture_output=True, text=True).stdout  # fmt: skip
            r = json.loads(out.strip().splitlines()[-1])
            res[label] += r["calls"]
            peaks[label].append(r["peak_rss_mib"])
    for label, calls in res.items():
        med = {k: statistics.median(c[k] for c in calls) for k in ("wall", "faults", "sys")}
        print(f"{label:22s} build_profiles median of {len(calls)} calls: {med['wall']:.3f} s, "
              f"{med['faults']:,.0f} page faults, {med['sys']:.2f} s system time; "
              f"walls {[round(c['wall'], 2) for c in calls]}; peak RSS {statistics.median(peaks[label]):,.0f} MiB")


if __name__ == "__main__":
    main()
