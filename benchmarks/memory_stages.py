"""Peak RSS of every stage of ``segone run``, and as a multiple of the input.

Runs the whole job (transactions + web events + CRM, the default outputs) in
a child process that samples its own RSS every 20 ms, then maps the samples
to the stages through run.json's timings.  The input size is the in-memory
Arrow size of the three inputs (``pyarrow.Table.nbytes`` after reading them,
measured in a separate child)::

    python benchmarks/memory_stages.py DATA_DIR [--clusters 8] [--json OUT]

DATA_DIR is a ``segone synth`` directory (e.g. ``segone synth /tmp/s1m -n 1000000``).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, os, sys, threading, time
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
samples, stop = [], threading.Event()
def sample():
    while not stop.is_set():
        samples.append((time.perf_counter(), rss()))
        time.sleep(0.02)
th = threading.Thread(target=sample, daemon=True)
base = rss()
import segone
th.start()
data, out, k, stream = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
from segone._engine import LocalEngine
eng = LocalEngine() if stream == "default" else LocalEngine(stream_rows=int(stream))
t0 = time.perf_counter()
res = segone.run(data, out, k, overwrite=True, engine=eng)
t1 = time.perf_counter()
stop.set(); th.join()
print(json.dumps({"t0": t0, "t1": t1, "samples": samples, "timings": res.summary["timings_s"],
                  "pieces": res.summary["engine"].get("pieces", 1),
                  "customers": res.summary["customers"], "rows_read": res.summary["rows_read"],
                  "import_rss": base}))
"""

SIZE = r"""
import json, sys
import pyarrow.dataset as ds
d = sys.argv[1]
sizes = {}
for role in ("transactions", "events", "customers"):
    import os
    p = os.path.join(d, role)
    if os.path.exists(p):
        sizes[role] = ds.dataset(p, format="parquet").to_table().nbytes
print(json.dumps(sizes))
"""

ORDER = ("profile", "score", "segment", "assign", "predict", "track", "describe", "personas", "write")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data")
    ap.add_argument("--clusters", "-k", type=int, default=8)
    ap.add_argument("--stream-rows", default="default",
                    help="LocalEngine(stream_rows=N): profile split inputs file by file above N rows (default: its default)")
    ap.add_argument("--json")
    args = ap.parse_args()
    sizes = json.loads(subprocess.run([sys.executable, "-c", SIZE, args.data], check=True, capture_output=True,
                                      text=True).stdout)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([sys.executable, "-c", CHILD, args.data, os.path.join(tmp, "out"), str(args.clusters),
                            str(args.stream_rows)],
                           capture_output=True, text=True)  # fmt: skip
        if r.returncode:
            sys.exit(r.stderr)
        res = json.loads(r.stdout.strip().splitlines()[-1])
    gib = 2**30
    inp = sum(sizes.values())
    t = res["t0"]
    rows = []
    peak_all = max(s[1] for s in res["samples"])
    for name in ORDER:
        if name not in res["timings"]:
            continue
        t_end = t + res["timings"][name]
        inside = [s[1] for s in res["samples"] if t <= s[0] <= t_end] or [0]
        rows.append((name, res["timings"][name], max(inside)))
        t = t_end
    print(f"customers {res['customers']:,}, rows {res['rows_read']}, profiled in {res['pieces']} piece(s)")
    print(f"input in Arrow: {inp / gib:.2f} GiB ({', '.join(f'{k} {v / gib:.2f}' for k, v in sizes.items())})")
    print(f"RSS after import {res['import_rss'] / gib:.2f} GiB")
    print(f"{'stage':10s} {'time s':>8s} {'peak GiB':>9s} {'x input':>8s}")
    for name, dt, peak in rows:
        print(f"{name:10s} {dt:8.2f} {peak / gib:9.2f} {peak / inp:8.2f}")
    print(f"{'job':10s} {res['t1'] - res['t0']:8.2f} {peak_all / gib:9.2f} {peak_all / inp:8.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"sizes": sizes, "stages": rows, "peak": peak_all, "total_s": res["t1"] - res["t0"],
                       "customers": res["customers"]}, f, indent=1)  # fmt: skip


if __name__ == "__main__":
    main()
