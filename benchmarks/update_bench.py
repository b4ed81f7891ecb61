"""UPDATE workload: fold a batch of new transactions into a state store against a full `segone run`.

The data: a `segone synth` directory.  Its latest ``--batch-rows`` transactions (and the web events of the same
period) are the new batch; everything before is the history the state is built from (untimed preparation:
`segone run HISTORY --state`).  Then, interleaved, each in its own process, ``--rounds`` times:

* full: `segone.run` of history + batch (what a nightly job does without a state);
* update: `segone.update.update` of a fresh copy of the state with the batch (the copy is not timed);
* updater: a warm `segone.update.Updater` on a copy of the state, ``--small`` batches of ``--small-rows``
  transactions each: the latency of every ``update()`` call (the load and the final flush are reported apart).

Also reported: the state's bytes per customer against the Parquet input it replaces (history).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/update_bench.py --data /work/data/s1m --rounds 2
    # one night in the steady state: the data up to 2025-07-01, its last 26,000 transactions (about a day)
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/update_bench.py --data /work/data/s1m \
        --work /tmp/segone-update-night --end 2025-07-01 --batch-rows 26000 --rounds 2
"""

import argparse
import json
import multiprocessing as mp
import os
import shutil
import statistics
import time


def _dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def _rss_mib():
    """This process's peak RSS (VmHWM: reset by exec, unlike ru_maxrss, which a spawned child inherits from the
    parent it was forked from)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def prepare(data, work, batch_rows, end=None):
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    os.makedirs(work, exist_ok=True)
    done = os.path.join(work, "prepared.json")
    if os.path.exists(done):
        return json.load(open(done))
    tx = ds.dataset(os.path.join(data, "transactions")).to_table()
    ev = ds.dataset(os.path.join(data, "events")).to_table()
    if end is not None:  # the data as it stood at `end` (a night in the steady state, not the data's thinning tail)
        end_ts = pa.scalar(pc.strptime(pa.array([end]), format="%Y-%m-%d", unit="us")[0].value, pa.int64())
        tx = tx.filter(pc.less(pc.cast(tx.column("ts"), pa.int64()), end_ts))
        ev = ev.filter(pc.less(pc.cast(ev.column("ts"), pa.int64()), end_ts))
    ts = pc.cast(tx.column("ts"), pa.int64()).to_numpy()
    cut = int(pc.partition_nth_indices(pa.array(-ts), pivot=batch_rows).to_numpy()[batch_rows - 1])
    cut_us = int(ts[cut])  # the batch: the batch_rows latest transactions (ties: at the cut go to the batch)
    new = ts >= cut_us
    ev_ts = pc.cast(ev.column("ts"), pa.int64()).to_numpy()
    for name, table, mask in (("history", tx, ~new), ("batch", tx, new)):
        os.makedirs(os.path.join(work, name, "transactions"), exist_ok=True)
        pq.write_table(table.filter(pa.array(mask)), os.path.join(work, name, "transactions", "part-0.parquet"))
    for name, mask in (("history", ev_ts < cut_us), ("batch", ev_ts >= cut_us)):
        os.makedirs(os.path.join(work, name, "events"), exist_ok=True)
        pq.write_table(ev.filter(pa.array(mask)), os.path.join(work, name, "events", "part-0.parquet"))
    shutil.copytree(os.path.join(data, "customers"), os.path.join(work, "history", "customers"), dirs_exist_ok=True)
    info = {"cut_us": cut_us, "end": end, "batch_transactions": int(new.sum()), "batch_events": int((ev_ts >= cut_us).sum()),
            "history_transactions": int((~new).sum()), "history_events": int((ev_ts < cut_us).sum())}
    json.dump(info, open(done, "w"))
    return info


def build_state(work):
    """The state of a run of the history (untimed preparation; built once per work directory)."""
    import pyarrow.dataset as ds

    import segone

    base = os.path.join(work, "state")
    if not os.path.exists(os.path.join(base, "manifest.json")):
        h = os.path.join(work, "history")
        segone.run(ds.dataset(os.path.join(h, "transactions")).to_table(), os.path.join(work, "fit"), 8,
                   events=ds.dataset(os.path.join(h, "events")).to_table(),
                   attributes=ds.dataset(os.path.join(h, "customers")).to_table(), state=base, overwrite=True)
    return base


def copy_state(base, work, round_):
    """Fresh copies of the state for one round's update and warm updater (not timed)."""
    for name in (f"state-{round_}", f"warm-{round_}"):
        shutil.rmtree(os.path.join(work, name), ignore_errors=True)
        shutil.copytree(base, os.path.join(work, name))


def _child(kind, work, round_, small, small_rows, q):
    import pyarrow as pa
    import pyarrow.dataset as ds

    import segone
    from segone import update as up

    out = {}
    if kind == "full":
        tx = pa.concat_tables([ds.dataset(os.path.join(work, p, "transactions")).to_table() for p in ("history", "batch")])
        ev = pa.concat_tables([ds.dataset(os.path.join(work, p, "events")).to_table() for p in ("history", "batch")])
        at = ds.dataset(os.path.join(work, "history", "customers")).to_table()
        t = time.perf_counter()
        res = segone.run(tx, os.path.join(work, f"full-{round_}"), 8, events=ev, attributes=at, overwrite=True)
        out["seconds"] = time.perf_counter() - t
        out["stages"] = res.summary["timings_s"]
    elif kind == "update":
        state = os.path.join(work, f"state-{round_}")
        t = time.perf_counter()
        res = up.update(state, os.path.join(work, "batch", "transactions"), events=os.path.join(work, "batch", "events"),
                        out=os.path.join(work, f"night-{round_}"), overwrite=True)
        out["seconds"] = time.perf_counter() - t
        out["info"] = {k: res.info.get(k) for k in ("customers", "customers_reprofiled", "customers_changed",
                                                     "customers_moved", "late_rows")}
    else:  # the warm updater
        state = os.path.join(work, f"warm-{round_}")
        tx = ds.dataset(os.path.join(work, "batch", "transactions")).to_table().sort_by("ts")
        t = time.perf_counter()
        u = up.Updater(state)
        out["load_seconds"] = time.perf_counter() - t
        lat, touched = [], []
        for i in range(small):
            b = tx.slice(i * small_rows, small_rows)
            t = time.perf_counter()
            ch = u.update(b)
            lat.append(time.perf_counter() - t)
            touched.append(0 if ch is None else ch.num_rows)
        t = time.perf_counter()
        u.close()
        out["flush_seconds"] = time.perf_counter() - t
        out["latencies_ms"] = [round(x * 1000, 1) for x in lat]
        out["customers_per_batch"] = touched
    out["peak_rss_mib"] = round(_rss_mib())
    q.put(out)


def _run_child(*args):
    q = mp.get_context("spawn").Queue()
    p = mp.get_context("spawn").Process(target=_child, args=(*args, q))
    p.start()
    res = q.get()
    p.join()
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a `segone synth` directory")
    ap.add_argument("--work", default="/tmp/segone-update-bench")
    ap.add_argument("--batch-rows", type=int, default=100_000)
    ap.add_argument("--end", default=None, help="use the data before this date (YYYY-MM-DD) only")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--small", type=int, default=20, help="warm updater: number of small batches")
    ap.add_argument("--small-rows", type=int, default=1000, help="warm updater: transactions per small batch")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    import segone

    info = prepare(a.data, a.work, a.batch_rows, a.end)
    base = build_state(a.work)
    from segone.update import state_summary

    st = state_summary(base)
    hist_bytes = _dir_bytes(os.path.join(a.work, "history"))
    info["state"] = st
    info["state_bytes_per_customer"] = sum(st["bytes"].values()) / st["customers"]
    info["input_bytes_per_customer"] = hist_bytes / st["customers"]
    info["state_over_input"] = sum(st["bytes"].values()) / hist_bytes
    rounds = []
    for r in range(a.rounds):
        copy_state(base, a.work, r)
        row = {"full": _run_child("full", a.work, r, a.small, a.small_rows),
               "update": _run_child("update", a.work, r, a.small, a.small_rows),
               "updater": _run_child("updater", a.work, r, a.small, a.small_rows)}
        row["update_over_full"] = row["update"]["seconds"] / row["full"]["seconds"]
        lat = row["updater"]["latencies_ms"]
        row["updater_median_ms"] = statistics.median(lat)
        row["updater_p90_ms"] = sorted(lat)[int(0.9 * (len(lat) - 1))]
        rounds.append(row)
        print(f"round {r}: full {row['full']['seconds']:.2f} s, update {row['update']['seconds']:.2f} s "
              f"({row['update_over_full']:.1%} of full; {row['update']['info']}), warm updater "
              f"{row['updater_median_ms']:.0f} ms median / {row['updater_p90_ms']:.0f} ms p90 per "
              f"{a.small_rows} transactions (load {row['updater']['load_seconds']:.1f} s, flush "
              f"{row['updater']['flush_seconds']:.1f} s); peak RSS full {row['full']['peak_rss_mib']} MiB, update "
              f"{row['update']['peak_rss_mib']} MiB, updater {row['updater']['peak_rss_mib']} MiB", flush=True)
    info["rounds"] = rounds
    print(f"state: {info['state_bytes_per_customer']:.0f} bytes per customer, {info['state_over_input']:.2f}x the "
          f"Parquet input it replaces ({info['input_bytes_per_customer']:.0f} bytes per customer)")
    if a.json:
        json.dump(info, open(a.json, "w"), indent=1, default=str)


if __name__ == "__main__":
    main()
