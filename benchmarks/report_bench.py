"""How long `segone.report.write_report` takes, for a small run and for a run of 10M customers.

The report reads the small outputs whole (run.json, segments.parquet,
rfm.parquet, migration.parquet) and at most 100,000 rows of a few columns of
assignments.parquet and 50,000 rows of personas.parquet (the first rows,
batch by batch); so its time must not grow with the number of customers.

Set-up (not timed):

1. a real run: ``segone synth`` of ``--small`` customers (20,000 by default),
   ``segone.run`` with 6 segments, tracked against a run with an earlier
   as-of date (so migration.parquet, moves.parquet and run.json tracking
   exist, as do rfm.parquet and the predicted value);
2. a fake large run next to it: the small outputs copied as they are, and
   assignments.parquet, personas.parquet and moves.parquet of ``--customers``
   rows (10,000,000 by default) made by tiling the real ones with new
   customer ids, written like the pipeline writes them (pyarrow's default
   row groups of 1,048,576 rows).

Timed: ``write_report`` on each directory, ``--repeat`` times in this process
(the first call includes importing Altair and building the inlined Vega
bundle, about a second), and once in a fresh Python process
(``python -c "import segone.report; segone.report.write_report(...)"``, the
way ``segone report OUT`` runs).  Also printed: the rows actually read from
the large per-customer files and the size of the HTML.

Usage (from the repository root):

    python benchmarks/report_bench.py                      # 10M customers (writes ~1.5 GB under --work)
    python benchmarks/report_bench.py --customers 1000000  # quick
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import pyarrow as pa
import pyarrow.parquet as pq

ROW_GROUP = 1024 * 1024  # pyarrow's default, as pq.write_table in segone.io.write_parquet


def _small_run(work, n, seed=0):
    import segone

    data = os.path.join(work, "data")
    segone.synth.write_dataset(data, n, seed=seed, progress=False, overwrite=True)
    prev = os.path.join(work, "prev")
    out = os.path.join(work, "small")
    segone.run(data, prev, 6, as_of="2025-06-30", random_state=seed, overwrite=True)
    try:
        segone.run(data, out, 6, random_state=seed, previous=prev, overwrite=True)
    except TypeError:  # a segone without tracking
        segone.run(data, out, 6, random_state=seed, overwrite=True)
    return out


def _tile(path, dest, rows, id_column="customer_id"):
    """Write ``rows`` rows made of copies of the table at ``path``, ids shifted per copy, in 1Mi-row groups."""
    src = pq.read_table(path)
    n = src.num_rows
    ids = src.column(id_column).to_numpy()
    span = int(ids.max()) - int(ids.min()) + 1
    writer = None
    done, copy = 0, 0
    try:
        while done < rows:
            parts = []
            got = 0
            while got < min(ROW_GROUP, rows - done):
                take = min(n, min(ROW_GROUP, rows - done) - got)
                t = src.slice(0, take)
                t = t.set_column(t.column_names.index(id_column), id_column, pa.array(ids[:take] + copy * span))
                parts.append(t)
                got += take
                copy += 1
            chunk = pa.concat_tables(parts).combine_chunks()
            if writer is None:
                writer = pq.ParquetWriter(dest, chunk.schema)
            writer.write_table(chunk, row_group_size=ROW_GROUP)
            done += chunk.num_rows
    finally:
        if writer is not None:
            writer.close()


def _large_copy(small, large, customers):
    shutil.rmtree(large, ignore_errors=True)
    os.makedirs(large)
    for name in os.listdir(small):
        src = os.path.join(small, name)
        if name in ("assignments.parquet", "personas.parquet", "moves.parquet", "report.html"):
            continue
        (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, os.path.join(large, name))
    for name in ("assignments.parquet", "personas.parquet", "moves.parquet"):
        if os.path.exists(os.path.join(small, name)):
            t0 = time.perf_counter()
            _tile(os.path.join(small, name), os.path.join(large, name), customers)
            print(f"  wrote {name}: {customers:,} rows, {os.path.getsize(os.path.join(large, name)) / 1e6:,.0f} MB "
                  f"in {time.perf_counter() - t0:.1f}s", flush=True)
    with open(os.path.join(large, "run.json")) as f:
        run = json.load(f)
    run["customers"] = run["customers_assigned"] = customers
    with open(os.path.join(large, "run.json"), "w") as f:
        json.dump(run, f)


def _time_in_process(out, repeat):
    from segone.report import write_report

    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        path = write_report(out, os.path.join(out, "report.html"))
        times.append(time.perf_counter() - t0)
    return times, path


def _time_fresh_process(out):
    code = f"import segone.report as r; r.write_report({out!r}, {os.path.join(out, 'report-cli.html')!r})"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--customers", type=int, default=10_000_000)
    ap.add_argument("--small", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", default=None, help="working directory (default: a temporary one, removed after)")
    args = ap.parse_args(argv)
    work = args.work or tempfile.mkdtemp(prefix="segone-report-bench-")
    os.makedirs(work, exist_ok=True)
    try:
        print(f"set-up in {work}: a real run of {args.small:,} customers ...", flush=True)
        small = _small_run(work, args.small)
        print(f"  a fake run of {args.customers:,} customers next to it ...", flush=True)
        large = os.path.join(work, "large")
        _large_copy(small, large, args.customers)
        from segone.report import read_outputs

        rows = {}
        for name, out in (("small", small), (f"{args.customers:,}", large)):
            t_in, path = _time_in_process(out, args.repeat)
            t_fresh = _time_fresh_process(out)
            d = read_outputs(out)
            rows[name] = (t_in, t_fresh, os.path.getsize(path), d.sample)
        print()
        print(f"{'customers':>12}  {'first call':>10}  {'warm (median)':>13}  {'fresh process':>13}  {'HTML':>8}  read")
        for name, (t_in, t_fresh, size, sample) in rows.items():
            warm = statistics.median(t_in[1:]) if len(t_in) > 1 else t_in[0]
            a, p = sample.get("assignments"), sample.get("personas")
            print(f"{name:>12}  {t_in[0]:>9.2f}s  {warm:>12.2f}s  {t_fresh:>12.2f}s  {size / 1e6:>6.2f}MB  "
                  f"assignments {a[0]:,} of {a[1]:,} rows, personas {p[0]:,} of {p[1]:,} rows")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
