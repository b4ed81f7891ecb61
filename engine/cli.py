"""The ``segone`` command line: synth, run, demo, info."""

import os
import shutil
import sys
import tempfile
import warnings

import click

import segone
from segone import io
from segone._validation import check_path
from segone.errors import SegoneError


def _show_warning(message, category, filename, lineno, file=None, line=None, _default=warnings.showwarning):
    """segone's own warnings in one line ("warning: ..."); others as Python shows them."""
    if issubclass(category, io.OutputRecoveryWarning):
        click.secho(f"warning: {message}", fg="yellow", err=True)
    else:
        _default(message, category, filename, lineno, file, line)


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                return super().invoke(ctx)
        except SegoneError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            ctx.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(segone.__version__, prog_name="segone")
def main():
    """segone: customer segmentation compute engine.

    \b
    segone synth DIR --customers N      write synthetic customer data
    segone run INPUT --out DIR -k K     profile, score, segment, predict, describe, write
    segone persona OUT CUSTOMER_ID      one customer's persona
    segone track OLD NEW --out DIR      who moved where between two runs
    segone apply MODEL INPUT --out DIR  assign new data to a saved model
    segone update STATE NEW --out DIR   fold new events into the state of `run --state`
    segone report OUT                   an HTML report of OUT to open in a browser
    segone demo                         two synthetic periods: run, track, score the moves, report
    segone info                         backends, threads, OpenMP
    """


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--customers", "-n", default=100_000, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", "-s", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--tx-per-customer", default=20.0, show_default=True, type=click.FloatRange(1, 10_000))
@click.option("--customers-per-file", default=500_000, show_default=True, type=click.IntRange(min=1))
@click.option("--overwrite", is_flag=True, help="Replace DIRECTORY if it exists.")
@click.option("--no-personal-data", is_flag=True, help="Leave out the fake names, e-mails, phones and consent purposes.")
@click.option("--periods", default=1, show_default=True, type=click.IntRange(min=1, max=100),
              help="Write this many periods as DIRECTORY/period-0, period-1, ... (10% of the customers switch "
                   "segment between periods), to try `segone run DIRECTORY/period-1 --previous OUT0`.")  # fmt: skip
@click.option("--campaign", "campaign_effect", default=None, type=click.FloatRange(0, 1), metavar="EFFECT",
              help="With --periods 2 or more: a campaign before period 1 reaches a random half of the customers; "
                   "a treated customer of latent segment 0 moves to segment 1 with probability EFFECT. Period 1 "
                   "gets treatment.parquet (treatment and control groups).")  # fmt: skip
@click.option("--drift", "drift_share", default=0.0, type=click.FloatRange(0, 1), metavar="SHARE",
              help="With --periods 2 or more: before each later period this share of the eligible customers "
                   "moves its category preference from its most bought category to one it never bought; "
                   "period-N/drift.parquet names them (the truth for the next best offers).")  # fmt: skip
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def synth(directory, customers, seed, tx_per_customer, customers_per_file, overwrite, no_personal_data, periods,
          campaign_effect, drift_share, quiet):  # fmt: skip
    """Write synthetic transactions, web events, CRM attributes and the true segments."""
    if campaign_effect is not None and periods < 2:
        raise click.UsageError("--campaign needs --periods 2 or more (the campaign runs between two periods).")
    if drift_share and periods < 2:
        raise click.UsageError("--drift needs --periods 2 or more (preferences drift between periods).")
    if periods > 1:
        campaign = None if campaign_effect is None else {"effect": campaign_effect, "name": "synthetic campaign"}
        ms = segone.synth.write_periods(directory, customers, periods=periods, seed=seed, overwrite=overwrite,
                                        tx_per_customer=tx_per_customer, personal_data=not no_personal_data,
                                        campaign=campaign, drift_share=drift_share)  # fmt: skip
        for p, m in enumerate(ms):
            rows = m["rows"]
            click.echo(f"wrote {os.path.join(directory, f'period-{p}')}: {rows['customers']:,} customers, "
                       f"{rows['transactions']:,} transactions, {rows['events']:,} web events")  # fmt: skip
        nxt = (f"next: segone run {os.path.join(directory, 'period-0')} -o OUT0, then segone run "
               f"{os.path.join(directory, 'period-1')} -o OUT1 --previous OUT0")  # fmt: skip
        if campaign is not None:
            nxt += f" --treatment {os.path.join(directory, 'period-1', 'treatment.parquet')}"
        click.echo(nxt)
        return
    m = segone.synth.write_dataset(
        directory, customers, seed=seed, tx_per_customer=tx_per_customer,
        customers_per_file=customers_per_file, overwrite=overwrite, progress=not quiet,
        personal_data=not no_personal_data,
    )  # fmt: skip
    rows = m["rows"]
    click.echo(
        f"wrote {directory}: {rows['customers']:,} customers, {rows['transactions']:,} transactions, "
        f"{rows['events']:,} web events, {len(m['segments'])} latent segments"
    )


def _clusters_option(ctx, param, value):
    """-k/--n-clusters: a number of segments (>= 1) or 'auto' (None: not given)."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    try:
        k = int(text)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a number of segments nor 'auto'.") from None
    if k < 1:
        raise click.BadParameter(f"{k} segments: use at least 1 (or 'auto').")
    return k


def _n_clusters(n_clusters, old, default):
    """The number of segments from -k/--n-clusters and the deprecated --clusters (a warning; both: refused)."""
    if old is not None:
        click.secho("warning: --clusters is deprecated and will be removed in segone 0.3; use -k/--n-clusters "
                    "instead.", fg="yellow", err=True)  # fmt: skip
        if n_clusters is not None:
            raise click.UsageError("give -k/--n-clusters only (--clusters is its deprecated name), not both.")
        return old
    return default if n_clusters is None else n_clusters


def _print_segments(segments):
    cols = [c for c in ("segment", "size", "share", "value_share", "median_recency_days", "median_orders",
                        "median_spend_mean", "label") if c in segments.column_names]  # fmt: skip
    head = {"segment": "seg", "size": "customers", "share": "share", "value_share": "spend", "median_recency_days":
            "recency_d", "median_orders": "orders", "median_spend_mean": "avg_order", "label": "label"}  # fmt: skip
    data = segments.select(cols).to_pylist()
    click.echo("  ".join(f"{head[c]:>10}" if c != "label" else head[c] for c in cols))
    for row in data:
        cells = []
        for c in cols:
            v = row[c]
            if c == "label":
                cells.append(str(v))
            elif c in ("share", "value_share"):
                cells.append(f"{v:>10.1%}")
            elif isinstance(v, float):
                cells.append(f"{v:>10.1f}")
            else:
                cells.append(f"{v:>10,}")
        click.echo("  ".join(cells))


@main.command()
@click.argument("input", type=click.Path(exists=True))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("-k", "--n-clusters", "n_clusters", default=None, callback=_clusters_option, metavar="K|auto",
              help="Number of segments, or 'auto': a sweep over --k-min..--k-max chooses it (sweep.parquet, and "
                   "the table and the choice in run.json).  [default: 8]")  # fmt: skip
@click.option("--clusters", "clusters_old", default=None, hidden=True, callback=_clusters_option,
              help="Deprecated name of -k/--n-clusters.")  # fmt: skip
@click.option("--k-min", default=None, type=click.IntRange(min=2), help="-k auto: the smallest k tried (default 2).")
@click.option("--k-max", default=None, type=click.IntRange(min=3), help="-k auto: the largest k tried (default 20).")
@click.option("--events", type=click.Path(exists=True), help="Web events (Parquet, CSV or Arrow file or directory).")
@click.option("--attributes", type=click.Path(exists=True),
              help="CRM attributes (Parquet, CSV or Arrow file or directory).")  # fmt: skip
@click.option("--as-of", default=None, help="Reference time (ISO date); default: latest transaction.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--n-init", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--refine", default=2, show_default=True, type=click.IntRange(min=0))
@click.option("--backend", default="auto", show_default=True, type=click.Choice(["auto", "cython", "numba"]))
@click.option("--threads", "n_threads", default=None, type=int, help="Threads (default: all CPUs).")
@click.option("--overwrite", is_flag=True, help="Replace the output directory if it exists.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Run on the Dask cluster at this address (e.g. tcp://10.0.0.5:8786).")  # fmt: skip
@click.option("--workers", default=None, type=click.IntRange(min=1),
              help="Run on Dask with a LocalCluster of this many worker processes.")  # fmt: skip
@click.option("--partitions", default=None, type=click.IntRange(min=1),
              help="Dask: customer partitions (default: those of the transactions).")  # fmt: skip
@click.option("--memory-limit", default="auto", show_default=True, help="Dask LocalCluster: memory per worker.")
@click.option("--stall-timeout", default=300.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Dask: fail (exit 2, naming the stage and each worker's state) after this many seconds without "
                   "any task finishing while no running worker executes one (paused or lost workers).")  # fmt: skip
@click.option("--previous", default=None, type=click.Path(exists=True, file_okay=False),
              help="Output directory of an earlier run: keep its segment ids, write who moved where.")  # fmt: skip
@click.option("--no-value", is_flag=True, help="Skip the predicted customer value (BG/NBD + Gamma-Gamma).")
@click.option("--horizon-months", default=12, show_default=True, type=click.IntRange(min=1),
              help="Horizon of the predicted purchases and value.")  # fmt: skip
@click.option("--value-penalizer", default=0.0, show_default=True, type=click.FloatRange(min=0.0),
              help="L2 penalty on the value models' parameters (lifetimes' penalizer_coef; 0.001 to 0.1 steadies "
                   "fits on data with extreme customers).")  # fmt: skip
@click.option("--value-model", default="bgnbd", show_default=True,
              type=click.Choice(["bgnbd", "pareto", "mbgnbd", "auto"]),
              help="Purchase model: BG/NBD, Pareto/NBD, MBG/NBD, or auto (the lowest holdout error in a backtest "
                   "on the data's own past). BG/BB, for discrete-time data, is compared with `segone backtest "
                   "--models bgnbd,bgbb --freq W`.")  # fmt: skip
@click.option("--value-by", default=None, type=click.Choice(["segment"]),
              help="Fit the value models per segment, shrunk toward the fit on everyone.")
@click.option("--actions/--no-actions", "with_actions", default=False, show_default=True,
              help="Write actions.parquet (the next best offers, channel and timing of each customer). Opt-in: the "
                   "stage takes about 20x the profile stage.")  # fmt: skip
@click.option("--horizon-days", default=30, show_default=True, type=int,
              help="Actions: the propensity horizon, the probability of buying each category in that many days "
                   "(1..3650; the data need at least twice as many days of history).")  # fmt: skip
@click.option("--offers", default=3, show_default=True, type=int, help="Actions: offers per customer (1..50).")
@click.option("--new-only", is_flag=True, help="Actions: offer only categories the customer has not bought yet.")
@click.option("--treatment", default=None, type=click.Path(exists=True),
              help="With --previous: who a campaign reached (customer_id, group[, campaign, sent_at]); writes "
                   "effects.parquet.")  # fmt: skip
@click.option("--consent", "consent", multiple=True, metavar="COLUMN[=PURPOSE]",
              help="Consent column of the attributes (boolean), or COLUMN=purpose for a column of purposes; repeat "
                   "for several (all must hold). Customers without consent are in no per-customer output.")  # fmt: skip
@click.option("--consent-scope", default="export", show_default=True, type=click.Choice(["export", "processing"]),
              help="processing: also leave customers without consent out of every computation.")  # fmt: skip
@click.option("--consent-default", default="no", show_default=True, type=click.Choice(["no", "yes"]),
              help="Whether customers without a consent record (null, or no attributes row) consent.")  # fmt: skip
@click.option("--hash-ids", is_flag=True,
              help="Write HMAC-SHA256 pseudonyms instead of customer ids (key: $SEGONE_ID_KEY or --id-key-file).")  # fmt: skip
@click.option("--id-key-file", default=None, type=click.Path(dir_okay=False),
              help="File holding the secret id key (at least 16 bytes; e.g. `openssl rand -hex 32 > key`).")  # fmt: skip
@click.option("--min-segment-size", default=None, type=click.IntRange(min=1),
              help="No exported segment or cell stands for fewer customers.")  # fmt: skip
@click.option("--small-segments", default="merge", show_default=True, type=click.Choice(["merge", "withhold"]),
              help="What happens to a segment below --min-segment-size.")  # fmt: skip
@click.option("--keep-column", "keep_columns", multiple=True, metavar="COLUMN", help="Keep this personal column.")
@click.option("--personal-column", "personal_columns", multiple=True, metavar="COLUMN",
              help="Treat this attribute column as personal data too.")  # fmt: skip
@click.option("--schema", "schema_items", multiple=True, metavar="ROLE=COLUMN",
              help="Your column for a role, e.g. --schema customer_id=user_id --schema ts=event_time; repeat for "
                   "several (roles: customer_id, ts, amount, category, channel, event, order_id).")  # fmt: skip
@click.option("--report", "with_report", is_flag=True,
              help="Also write OUT/report.html, a report to open in a browser (needs segone[report]).")  # fmt: skip
@click.option("--state", "state", default=None, type=click.Path(file_okay=False),
              help="Also keep the state store of this run in this directory, for `segone update`.")  # fmt: skip
@click.option("--quiet", "-q", is_flag=True)
def run(input, out, n_clusters, clusters_old, events, attributes, as_of, seed, n_init, refine, backend, n_threads,
        overwrite, scheduler, workers, partitions, memory_limit, stall_timeout, previous, no_value, horizon_months,
        value_penalizer, value_model, value_by, treatment, consent, consent_scope, consent_default, hash_ids,
        id_key_file, min_segment_size, small_segments, keep_columns, personal_columns, schema_items, with_report, quiet,
        k_min, k_max, with_actions, horizon_days, offers, new_only, state):  # fmt: skip
    """Profile, score, segment and assign the customers in INPUT; write to --out.

    With --scheduler or --workers the job runs on Dask (segone.run with a segone.dask.DaskEngine):
    assignments.parquet is then a directory of Parquet files, one per partition.
    """
    if scheduler and workers:
        raise click.UsageError("give --scheduler (an existing cluster) or --workers (a local one), not both.")
    n_clusters = _n_clusters(n_clusters, clusters_old, 8)
    args = dict(
        events=events, attributes=attributes, as_of=as_of, random_state=seed, n_init=n_init, refine=refine,
        backend=backend, n_threads=n_threads, overwrite=overwrite, verbose=not quiet, previous=previous,
        value=not no_value, horizon_months=horizon_months, value_penalizer=value_penalizer,
        value_model=value_model, value_by=value_by, treatment=treatment, consent=list(consent) or None, consent_scope=consent_scope, consent_default=consent_default == "yes",
        hash_ids=hash_ids, id_key_file=id_key_file, min_segment_size=min_segment_size,
        small_segments=small_segments, keep_columns=keep_columns, personal_columns=personal_columns,
        schema=segone.io.parse_schema_options(schema_items) or None, k_min=k_min, k_max=k_max,
        actions=with_actions, horizon_days=horizon_days, offers=offers, new_only=new_only, state=state,
    )  # fmt: skip
    # every argument is checked before any data is read and before a Dask cluster is started
    segone.pipeline.check_run_arguments(input, out, n_clusters, **args)
    if with_report:
        from segone.report import check_dependencies

        check_dependencies()  # a missing extra is reported now, not after the run
    engine = None
    if scheduler or workers:
        from segone.dask import DaskEngine

        engine = DaskEngine(scheduler, n_workers=workers, memory_limit=memory_limit, npartitions=partitions,
                            n_threads=n_threads, verbose=not quiet, stall_timeout=stall_timeout)  # fmt: skip
        if not quiet:
            facts = engine.facts()
            click.echo(f"dask: {facts['workers']} workers at {engine.client.scheduler.address}")
    try:
        res = segone.run(input, out, n_clusters, engine=engine, **args)
    finally:
        if engine is not None:
            engine.close()
    sw = res.summary.get("sweep")
    if sw is not None:
        click.echo(sw["note"])
    if not quiet:
        _print_segments(res.segments)
    click.echo(f"{res.summary['customers']:,} customers -> {res.segments.num_rows} segments; outputs in {res.out}")
    tr = res.summary.get("tracking")
    if tr and not quiet:
        click.echo(f"tracking against {previous}: {_pct(tr.get('stayed_share'))} of common customers stayed, "
                   f"ARI {tr.get('adjusted_rand_common', float('nan')):.3f}, segment PSI {tr.get('segment_psi', 0):.3f}")
    act = res.summary.get("actions") or {}
    if act.get("skipped_stage") and not quiet:
        click.echo(f"actions skipped: {act['skipped_stage']}")
    eff = res.summary.get("effects")
    if eff:
        for line in format_effects(eff):
            click.echo(line)
    st = res.summary.get("state")
    if st:
        click.echo(f"state: {st['customers']:,} customers as of {st['as_of']} in {state} "
                   f"({_mib(st['bytes'])}); fold new events in with `segone update {state} NEW --out DIR`")
    if with_report:
        from segone.report import write_report

        click.echo(f"report: {write_report(res.out)}")


def _mib(size):
    return f"{sum(size.values()) / 2**20:,.1f} MiB"


def format_effects(info):
    """One line per campaign and treated group: the headline of run.json's effects section."""
    out = []
    for c in info.get("campaigns", []):
        for h in c.get("headline", []):
            bits = []
            top = h.get("into_top_segment")
            if top:
                bits.append(f"into segment {top['segment']}: {top['uplift']:+.1%} [{top['low']:+.1%}, "
                            f"{top['high']:+.1%}]")  # fmt: skip
            for key, name in (("spend_gained_per_treated", "spend"), ("clv_gained_per_treated", "CLV")):
                v = h.get(key)
                if v and v.get("low") is not None:
                    bits.append(f"{name} per treated customer {v['value']:+,.2f} [{v['low']:+,.2f}, {v['high']:+,.2f}]")
            kind = "observational" if c.get("observational") else f"vs {c.get('reference')}"
            srm = c.get("sample_ratio") or {}
            warn = "; SAMPLE RATIO MISMATCH" if srm.get("flagged") else ""
            out.append(f"campaign {c['campaign']} ({h['group']} {kind}): " + ("; ".join(bits) or "no headline")
                       + warn)  # fmt: skip
        for m in c.get("largest_moves", []):
            what = ("stayed" if m["measure"] == "stayed" else "left" if m["measure"] == "gone" else
                    f"moved to segment {m['to_segment']}")  # fmt: skip
            out.append(f"  segment {m['previous_segment']}, {what}: {m['value']:.1%} treated vs "
                       f"{m['reference_value']:.1%} ({m['difference'] * 100:+.1f} pts [{m['low'] * 100:+.1f}, "
                       f"{m['high'] * 100:+.1f}])")  # fmt: skip
    return out


def _pct(x):
    return "n/a" if x is None else f"{x:.1%}"


def _count(n):
    """A customer count as printed; None is a count withheld under the minimum segment size."""
    return "(withheld)" if n is None else f"{n:,}"


@main.command()
@click.argument("out", type=click.Path(exists=True, file_okay=False))
@click.option("--output", "-o", default=None, type=click.Path(dir_okay=False),
              help="Where to write the HTML file (default: OUT/report.html).")  # fmt: skip
@click.option("--title", default=None, help="Title of the page (default: Customer segments).")
def report(out, output, title):
    """Write an HTML report of OUT, the output directory of `segone run`: one file that opens offline.

    Segments at a glance, what sets each segment apart (a heatmap of lifts), typical customers, predicted
    value, the RFM grid, movement since the previous run, and the run's data quality.
    Needs: pip install "segone[report]".
    """
    from segone.report import write_report

    click.echo(f"report: {write_report(out, output, title=title)}")


@main.command()
@click.argument("old", type=click.Path(exists=True, file_okay=False))
@click.argument("new", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--no-match", is_flag=True, help="Compare segment ids as they are (no one-to-one matching).")
@click.option("--spend", default=None, help="Spend column of the assignments, if any.")
@click.option("--overwrite", is_flag=True, help="Replace the output directory if it exists.")
@click.option("--treatment", default=None, type=click.Path(exists=True),
              help="Who a campaign reached between OLD and NEW (customer_id, group[, campaign, sent_at]): writes "
                   "effects.parquet.")  # fmt: skip
@click.option("--id-key-file", default=None, type=click.Path(dir_okay=False),
              help="With --treatment and pseudonymised outputs: the key the runs hashed the ids with (default: "
                   "SEGONE_ID_KEY).")  # fmt: skip
def track(old, new, out, no_match, spend, overwrite, treatment, id_key_file):
    """Compare two outputs of `segone run` (OLD, NEW) without refitting: migration.parquet, moves.parquet.

    The outputs honour the privacy options of both runs (the stricter apply: consent, minimum segment size);
    outputs with raw ids and pseudonyms, or pseudonyms of two keys, are refused.
    """
    cmp = segone.track.compare_outputs(old, new, out, match=not no_match, spend=spend, overwrite=overwrite,
                                       treatment=treatment, id_key_file=id_key_file)  # fmt: skip
    s = cmp.summary
    c = s.get("customers", {})
    click.echo(f"customers: {_count(c.get('previous'))} before, {_count(c.get('now'))} now, "
               f"{_count(c.get('common'))} in both")  # fmt: skip
    click.echo(f"stayed: {_pct(s.get('stayed_share'))}; adjusted Rand index {s.get('adjusted_rand_common')}; "
               f"segment PSI {s.get('segment_psi')}")
    for line in format_effects(s.get("effects") or {}):
        click.echo(line)
    click.echo(f"outputs in {os.path.abspath(out)}")


@main.command()
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("input", type=click.Path(exists=True))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--events", type=click.Path(exists=True), help="Web events.")
@click.option("--attributes", type=click.Path(exists=True), help="CRM attributes.")
@click.option("--as-of", default=None, help="Reference time (ISO date); default: latest transaction.")
@click.option("--schema", "schema_items", multiple=True, metavar="ROLE=COLUMN", help="As for `segone run`.")
@click.option("--overwrite", is_flag=True, help="Replace the output directory if it exists.")
@click.option("--consent", "consent", multiple=True, metavar="COLUMN[=PURPOSE]",
              help="As for `segone run` (default: the model's rules; they must all be given).")  # fmt: skip
@click.option("--consent-scope", default=None, type=click.Choice(["export", "processing"]),
              help="Default: the model's.")  # fmt: skip
@click.option("--consent-default", default=None, type=click.Choice(["no", "yes"]), help="Default: the model's.")
@click.option("--hash-ids/--no-hash-ids", default=None,
              help="Pseudonymous ids (default: as the model; refused: --no-hash-ids for a model that hashed).")
@click.option("--id-key-file", default=None, type=click.Path(dir_okay=False),
              help="The id key file (default: $SEGONE_ID_KEY); must be the model's key.")  # fmt: skip
@click.option("--min-segment-size", default=None, type=click.IntRange(min=1),
              help="Default: the model's; a smaller one is refused.")  # fmt: skip
@click.option("--small-segments", default=None, type=click.Choice(["merge", "withhold"]), help="Default: the model's.")
@click.option("--keep-column", "keep_columns", multiple=True, metavar="COLUMN",
              help="Keep this personal column (not one the model removed).")  # fmt: skip
@click.option("--personal-column", "personal_columns", multiple=True, metavar="COLUMN",
              help="Treat this attribute column as personal data too.")  # fmt: skip
def apply(model_dir, input, out, events, attributes, as_of, schema_items, overwrite, consent, consent_scope,
          consent_default, hash_ids, id_key_file, min_segment_size, small_segments, keep_columns,
          personal_columns):  # fmt: skip
    """Assign the customers in INPUT to the segments of a saved model (MODEL_DIR), without refitting.

    The privacy options the model was fitted with (consent, pseudonymous ids, minimum segment size, personal
    columns) apply by default; options that would widen them are refused.
    """
    res = segone.model.apply_model(
        model_dir, input, out, events=events, attributes=attributes, as_of=as_of, overwrite=overwrite,
        schema=segone.io.parse_schema_options(schema_items) or None, consent=list(consent) or None,
        consent_scope=consent_scope, consent_default=None if consent_default is None else consent_default == "yes",
        hash_ids=hash_ids, id_key_file=id_key_file, min_segment_size=min_segment_size, small_segments=small_segments,
        keep_columns=list(keep_columns) or None, personal_columns=list(personal_columns) or None,
    )  # fmt: skip
    taken = res.summary.get("privacy", {}).get("from_model") or []
    if taken:
        click.echo(f"privacy options of the model: {', '.join(taken)}")
    click.echo(f"{res.assignments.num_rows:,} customers assigned; outputs in {res.out}")


@main.command()
@click.argument("state", type=click.Path(file_okay=False))
@click.argument("input", required=False, type=click.Path(exists=True))
@click.option("--out", "-o", default=None, type=click.Path(file_okay=False),
              help="Write the changed customers (assignments.parquet), who moved (changelog.parquet) and run.json.")
@click.option("--events", type=click.Path(exists=True), help="New web events.")
@click.option("--attributes", type=click.Path(exists=True), help="New or changed CRM attribute rows.")
@click.option("--as-of", default=None, help="The new reference time (default: the latest of the state and batch).")
@click.option("--batch-id", default=None, help="The batch's id (default: a hash of its rows); re-applying one "
                                                "changes nothing.")  # fmt: skip
@click.option("--id-key-file", default=None, type=click.Path(dir_okay=False),
              help="The id key file of a model fitted with --hash-ids (default: $SEGONE_ID_KEY).")  # fmt: skip
@click.option("--refit-above", default=None, type=click.FloatRange(min=0),
              help="Refit (a full run with --previous, keeping segment ids) when a feature's PSI against the "
                   "model's data passes this (0.25 is a common 'large shift').")  # fmt: skip
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Update the buckets on the Dask cluster at this address (the state must be on a shared disk).")
@click.option("--workers", default=None, type=click.IntRange(min=1),
              help="Update the buckets on a Dask LocalCluster of this many worker processes.")  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace the output directory if it exists.")
def update(state, input, out, events, attributes, as_of, batch_id, id_key_file, refit_above, scheduler, workers,
           overwrite):  # fmt: skip
    """Fold new events (INPUT: transactions) into the STATE of `segone run --state`; no refit.

    The customers of the batch, and those whose time windows changed, are profiled again from all their rows;
    everyone moves to the new as-of and is assigned with the saved model. The result equals applying the model to
    all data at the same as-of.
    """
    if input is None and events is None and attributes is None:
        raise click.UsageError("give new transactions (INPUT), --events or --attributes.")
    from segone import update as _update

    if scheduler and workers:
        raise click.UsageError("give --scheduler (an existing cluster) or --workers (a local one), not both.")
    engine = None
    if scheduler or workers:
        from segone.dask import DaskEngine

        engine = DaskEngine(scheduler, n_workers=workers)
    try:
        res = _update.update(state, input, events=events, attributes=attributes, out=out, as_of=as_of,
                             batch_id=batch_id, id_key_file=id_key_file, overwrite=overwrite,
                             refit_above=refit_above, engine=engine)  # fmt: skip
    finally:
        if engine is not None:
            engine.close()
    i = res.info
    if not i.get("applied"):
        click.echo(i["note"])
        return
    click.echo(f"as of {i['as_of']}: {i['customers_reprofiled']:,} of {i['customers']:,} customers profiled again, "
               f"{i['customers_changed']:,} changed, {i['customers_moved']} moved segment"
               + (f"; {i['late_rows']:,} late rows folded in" if i.get("late_rows") else "")
               + (f"; largest feature PSI {i['max_feature_psi']:.3f}" if i.get("max_feature_psi") is not None
                  else ""))  # fmt: skip
    if i.get("refit"):
        click.echo(f"refit: {i['refit']['reason']}; the new run is in {i['refit']['out']}, the state rebuilt from it")
    if res.path:
        click.echo(f"outputs in {res.path}")


# the demo's campaign: a win-back offer to a random half of the customers; a treated "lapsed" customer (latent
# segment 5) comes back as a "loyal in store" one (segment 1) with this probability
DEMO_CAMPAIGN = {"name": "win-back", "from_segment": 5, "to_segment": 1, "effect": 0.3}
DEMO_SWITCH_SHARE = 0.1  # customers who switch latent segment between the demo's two periods
DEMO_NAMES = ("period-1", "period-2", "demo.json", "report.html")  # what `segone demo --out OUT` writes in OUT


@main.command()
@click.option("--customers", "-n", default=100_000, show_default=True, type=click.IntRange(min=1))
@click.option("-k", "--n-clusters", "n_clusters", default=None, callback=_clusters_option, metavar="K|auto",
              help="Number of segments, or 'auto' (a sweep over k = 2..20 chooses it).  [default: auto]")  # fmt: skip
@click.option("--clusters", "clusters_old", default=None, hidden=True, callback=_clusters_option,
              help="Deprecated name of -k/--n-clusters.")  # fmt: skip
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--out", "-o", default=None, type=click.Path(file_okay=False),
              help="Keep the outputs here: OUT/period-1 and OUT/period-2 (the runs), OUT/demo.json (how well the "
                   "segments and the moves were found) and OUT/report.html.")  # fmt: skip
@click.option("--report", "report_path", default=None, type=click.Path(dir_okay=False),
              help="Where to write the HTML report of period 2 (default: OUT/report.html with --out, else "
                   "segone-demo-report.html in the temporary directory).")  # fmt: skip
def demo(customers, n_clusters, clusters_old, seed, out, report_path):
    """Synthesise two periods of customers with known segments (10% switch between them), segment period 1,
    track period 2 against it (--previous), print how well the segments and the moves were found."""
    import time

    import numpy as np
    import pyarrow.parquet as pq

    t_start = time.perf_counter()
    clusters = _n_clusters(n_clusters, clusters_old, "auto")
    if out is not None:
        check_path(out, "--out", must_exist=False)
        _check_demo_out(out)
    if report_path is not None:
        check_path(report_path, "--report", must_exist=False)
    work = tempfile.mkdtemp(prefix="segone-demo-")
    try:
        data_dir = os.path.join(work, "data")
        click.echo(f"synthesising {customers:,} customers in two periods, {DEMO_SWITCH_SHARE:.0%} switching "
                   f"segment (seed {seed}) ...")  # fmt: skip
        segone.synth.write_periods(data_dir, customers, periods=2, switch_share=DEMO_SWITCH_SHARE, seed=seed,
                                   redraw=True, campaign=DEMO_CAMPAIGN)  # fmt: skip
        treatment = os.path.join(data_dir, "period-1", "treatment.parquet")
        base = out or os.path.join(work, "out")
        runs, aris = [], []
        for p in (0, 1):
            click.echo(f"\n== period {p + 1}" + (" (tracked against period 1: --previous)" if p else "") + " ==")
            k = clusters if p == 0 else runs[0].summary["segments"]  # period 2: period 1's k, so ids carry over
            res = segone.run(os.path.join(data_dir, f"period-{p}"), os.path.join(base, f"period-{p + 1}"),
                             n_clusters=k, random_state=seed, overwrite=bool(out), verbose=True,
                             previous=os.path.join(base, "period-1") if p else None,
                             treatment=treatment if p else None, actions=bool(p))  # fmt: skip
            _print_segments(res.segments)
            truth = pq.read_table(os.path.join(data_dir, f"period-{p}", "truth")).sort_by("customer_id")
            found = res.assignments.sort_by("customer_id")
            aris.append(_adjusted_rand(truth.column("segment").to_numpy(), found.column("segment").to_numpy()))
            t = res.summary["timings_s"]
            click.echo(f"adjusted Rand index vs the true segments: {aris[-1]:.3f}; "
                       + ", ".join(f"{k} {v:.2f}s" for k, v in t.items()))  # fmt: skip
            runs.append(res)
        truths = [pq.read_table(os.path.join(data_dir, f"period-{p}", "truth")) for p in (0, 1)]
        moves = pq.read_table(os.path.join(base, "period-2", "moves.parquet"))
        rec = segone.synth.moves_recovery(moves, *truths)
        tracking = runs[1].summary.get("tracking", {})
        click.echo(
            f"\nmoves recovered: {rec['found_moved']:,} customers flagged 'moved', {rec['true_moved']:,} truly "
            f"switched; precision {rec['moved_precision']:.3f}, recall {rec['moved_recall']:.3f}\n"
            f"migration matrix vs the true one: {rec['migration_agreement']:.1%} agreement (total variation "
            f"distance {rec['migration_tv_distance']:.4f}); stayed share {_pct(tracking.get('stayed_share'))}"
        )  # fmt: skip
        eff = runs[1].summary.get("effects") or {}
        truth_uplift = segone.synth.campaign_truth(DEMO_CAMPAIGN, switch_share=DEMO_SWITCH_SHARE)
        click.echo(f"\ncampaign '{DEMO_CAMPAIGN['name']}' (half the customers; a treated lapsed customer comes back "
                   f"with probability {DEMO_CAMPAIGN['effect']:.0%}: {truth_uplift:+.1%} of the lapsed, planted):")
        for line in format_effects(eff):
            click.echo("  " + line)
        summary = {"format": "segone-demo", "version": 1, "customers": customers, "seed": seed,
                   "campaign": {**DEMO_CAMPAIGN, "true_uplift_in_latent_segment": truth_uplift,
                                "effects": eff.get("campaigns")},
                   "switch_share": DEMO_SWITCH_SHARE, "segments": runs[0].summary["segments"],
                   "adjusted_rand": {"period-1": float(aris[0]), "period-2": float(aris[1])},
                   "moves": rec, "stayed_share": tracking.get("stayed_share"),
                   "seconds": round(time.perf_counter() - t_start, 2)}  # fmt: skip
        summary_path = os.path.join(out, "demo.json") if out else os.path.join(tempfile.gettempdir(),
                                                                               "segone-demo.json")  # fmt: skip
        io.write_json(summary, summary_path)
        click.echo(f"recovery figures: {summary_path}")
        if out:
            click.echo(f"outputs in {os.path.abspath(out)} (period-1, period-2)")
        from segone.report import MissingDependencyError, write_report

        try:
            path = write_report(runs[1].out, report_path or (os.path.join(out, "report.html") if out else
                                os.path.join(tempfile.gettempdir(), "segone-demo-report.html")))  # fmt: skip
            click.echo(f"report: {path} (open it in a browser)")
        except MissingDependencyError as exc:
            click.echo(f"report: not written ({exc})")
        click.echo(f"demo done in {time.perf_counter() - t_start:.1f}s")
        return np.float64(aris[0])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _check_demo_out(out):
    """``segone demo --out OUT`` replaces only what an earlier demo wrote there (or fills an empty directory)."""
    from segone.errors import OutputError

    if os.path.lexists(out) and not os.path.isdir(out):
        raise OutputError(f"the output {out!r} exists and is not a directory; choose a directory path.")
    names = sorted(os.listdir(out)) if os.path.isdir(out) else []
    foreign = [n for n in names if n not in DEMO_NAMES]
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise OutputError(
            f"the output {out!r} holds files segone did not write ({shown}); `segone demo --out` replaces only an "
            f"earlier demo's outputs ({', '.join(DEMO_NAMES)}). Choose another output directory, or empty it "
            "yourself."
        )
    for run in ("period-1", "period-2"):  # each run directory must be segone's own, as for `segone run`
        d = os.path.join(out, run)
        if os.path.isdir(d) and os.listdir(d) and not io.is_segone_output(d):
            raise OutputError(f"the output {d!r} holds files segone did not write; choose another output "
                              "directory, or empty it yourself.")  # fmt: skip


def _adjusted_rand(a, b):
    """Adjusted Rand index (Hubert & Arabie) from the contingency table."""
    import numpy as np

    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    table = np.zeros((ai.max() + 1, bi.max() + 1), dtype=np.float64)
    np.add.at(table, (ai, bi), 1)

    def comb2(x):
        return (x * (x - 1) / 2.0).sum()

    n = a.size
    sum_ij = comb2(table)
    sum_a = comb2(table.sum(axis=1))
    sum_b = comb2(table.sum(axis=0))
    expected = sum_a * sum_b / (n * (n - 1) / 2.0)
    max_index = (sum_a + sum_b) / 2.0
    if max_index == expected:
        return 1.0
    return (sum_ij - expected) / (max_index - expected)


@main.command()
@click.argument("out", type=click.Path(exists=True, file_okay=False))
@click.argument("customer_id")
@click.option("--id-key-file", default=None, type=click.Path(dir_okay=False),
              help="With pseudonymous outputs: the key file (default: $SEGONE_ID_KEY).")  # fmt: skip
def persona(out, customer_id, id_key_file):
    """Print the persona of CUSTOMER_ID from the output directory OUT of `segone run`."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from segone import outputs
    from segone import privacy as _privacy
    from segone.errors import DataError, ModelFormatError

    path = os.path.join(out, outputs.PERSONAS)
    if not os.path.exists(path):
        raise ModelFormatError(f"{out!r} has no {outputs.PERSONAS}; give the output directory of `segone run`.")
    data = ds.dataset(path)
    names = data.schema.names
    id_name = outputs.ID_COLUMN if outputs.ID_COLUMN in names else names[0]
    field = data.schema.field(id_name)
    id_type = field.type
    record, _ = _privacy.output_record(out)  # the privacy options OUT was written with
    marked = bool(field.metadata and outputs.PSEUDONYM_METADATA in field.metadata)
    if record and record.get("hash_ids") and not marked:
        raise ModelFormatError(f"{path}: the model hashed the customer ids but the ids of {outputs.PERSONAS} are not "
                               "marked as pseudonyms; the output was altered. Run `segone run` again.")  # fmt: skip
    shown = customer_id
    if marked:  # outputs hold pseudonyms: hash the id asked for, with the key OUT was written with
        key, source = _privacy.load_key(id_key_file=id_key_file)
        if record and record.get("key_check") and _privacy.key_check(key) != record["key_check"]:
            raise _privacy.WiderPrivacyError(
                f"the id key (from the {source}) is not the key {out!r} was written with (the key checks differ); "
                f"give that key (${_privacy.KEY_ENV} or --id-key-file)."
            )
        length = record["pseudonym_length"] if record else _privacy.PSEUDONYM_HEX
        shown = _privacy.pseudonym_of(customer_id, key, length)  # printed instead of the id: as in the outputs
        value = pa.scalar(shown, pa.string())
    else:
        try:
            value = pa.scalar(int(customer_id) if pa.types.is_integer(id_type) else customer_id, id_type)
        except ValueError:
            raise DataError(f"customer id {customer_id!r} is not an integer, but the ids in {path} are.") from None
    rows = data.to_table(filter=pc.field(id_name) == value).to_pylist()
    if not rows:
        raise DataError(f"customer {customer_id!r} is not in {path} (not in the run's input, or without consent).")
    row = rows[0]
    seg = row.get(outputs.SEGMENT_COLUMN)
    label = ""
    seg_path = os.path.join(out, outputs.SEGMENTS)
    if seg is not None and os.path.exists(seg_path):
        import pyarrow.parquet as pq

        segs = pq.read_table(seg_path, columns=[outputs.SEGMENT_COLUMN, "label"]).to_pylist()
        label = next((s["label"] for s in segs if s[outputs.SEGMENT_COLUMN] == seg), "")
    click.echo(f"customer {shown}: segment {seg}" + (f" ({label})" if label else ""))
    click.echo(f"  {row['summary']}")
    for t in row["traits"]:
        value = "" if t["value"] is None else f"{t['value']:.4g}"
        pct = "" if t["percentile"] is None else f"percentile {t['percentile']:.0%}"
        if t.get("against") == "segment":
            pct += " of segment"
        click.echo(f"  - {t['feature']:<28} {value:>10}  {pct:<27} strength {t['strength']:+.2f}")


@main.command()
@click.argument("input", type=click.Path(exists=True))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--holdout-days", default=None, type=click.IntRange(min=1),
              help="The holdout is the last N days of the data.")  # fmt: skip
@click.option("--cutoff", default=None, help="The last day of the calibration period (ISO date), instead of "
              "--holdout-days.")  # fmt: skip
@click.option("--end", default=None, help="The last day of the holdout (ISO date); default: the latest transaction.")
@click.option("--freq", default="D", show_default=True, type=click.Choice(["D", "W", "M"]),
              help="BTYD period: days, weeks or months.")  # fmt: skip
@click.option("--models", default="all", show_default=True, metavar="all|NAME,...",
              help="Purchase models to fit and compare: all (bgnbd, pareto, mbgnbd) or a list of them; add bgbb "
                   "(BG/BB, discrete time: each period of --freq W or M is one transaction opportunity; refused "
                   "with --freq D), e.g. --models bgnbd,bgbb --freq W.")  # fmt: skip
@click.option("--value-penalizer", default=0.0, show_default=True, type=click.FloatRange(min=0.0),
              help="L2 penalty of every value fit (lifetimes' penalizer_coef).")  # fmt: skip
@click.option("--n-clusters", "-k", default=8, show_default=True, type=click.IntRange(min=1),
              help="Segments of the segment-mean baseline.")  # fmt: skip
@click.option("--events", type=click.Path(exists=True), help="Web events.")
@click.option("--attributes", type=click.Path(exists=True), help="CRM attributes.")
@click.option("--schema", "schema_items", multiple=True, metavar="ROLE=COLUMN", help="As for `segone run`.")
@click.option("--min-segment-size", default=None, type=click.IntRange(min=1),
              help="Leave out decile cells of fewer customers.")  # fmt: skip
@click.option("--workers", default=None, type=click.IntRange(min=1),
              help="Run on Dask with a LocalCluster of this many worker processes.")  # fmt: skip
@click.option("--scheduler", default=None, metavar="ADDRESS", help="Run on this Dask cluster.")
@click.option("--overwrite", is_flag=True, help="Replace the output directory if it exists.")
@click.option("--quiet", "-q", is_flag=True)
def backtest(input, out, holdout_days, cutoff, end, freq, models, value_penalizer, n_clusters, events, attributes,
             schema_items, min_segment_size, workers, scheduler, overwrite, quiet):  # fmt: skip
    """How good is the value prediction? Fit every purchase model on INPUT up to a cutoff, predict each
    customer's purchases and spend in the holdout after it, and compare with what happened (and with two
    baselines: each customer's own last window, and their segment's mean)."""
    if scheduler and workers:
        raise click.UsageError("give --scheduler (an existing cluster) or --workers (a local one), not both.")
    engine = None
    if scheduler or workers:
        from segone.dask import DaskEngine

        engine = DaskEngine(scheduler, n_workers=workers, verbose=not quiet)
    try:
        res = segone.backtest(
            input, out, holdout_days=holdout_days, cutoff=cutoff, end=end, freq=freq, models=models,
            value_penalizer=value_penalizer, n_clusters=n_clusters, events=events, attributes=attributes,
            schema=segone.io.parse_schema_options(schema_items) or None, min_segment_size=min_segment_size,
            engine=engine, overwrite=overwrite, verbose=not quiet,
        )  # fmt: skip
    finally:
        if engine is not None:
            engine.close()
    s = res.summary
    click.echo(f"calibration up to {s['cutoff']}, holdout to {s['end']} ({s['duration_holdout']:g} {s['unit']}); "
               f"{s['customers_scored']:,} customers scored ({s['customers_without_purchase_before_cutoff']:,} "
               "without a purchase before the cutoff)")  # fmt: skip
    click.echo(format_backtest(res.metrics))
    if s["fitted"].get("spend_skipped"):
        click.echo(f"spend predictions of the models: none ({s['fitted']['spend_skipped']})")
    click.echo(f"outputs in {res.out}")


def format_backtest(metrics):
    """The backtest table as text: one line per model and baseline."""
    head = f"{'model':<14}{'MAE purch.':>11}{'RMSE':>8}{'Pearson':>9}{'Spearman':>9}{'pred/actual':>12}{'MAE spend':>11}"
    lines = [head]
    for r in metrics.to_pylist():
        if r["skipped"]:
            lines.append(f"{r['model']:<14}skipped: {r['skipped']}")
            continue

        def f(v, fmt):
            return format(v, fmt) if v is not None else "-"

        ratio = None if not r["actual_purchases"] else r["predicted_purchases"] / r["actual_purchases"]
        lines.append(f"{r['model']:<14}{f(r['mae_purchases'], '.3f'):>11}{f(r['rmse_purchases'], '.3f'):>8}"
                     f"{f(r['pearson_purchases'], '.3f'):>9}{f(r['spearman_purchases'], '.3f'):>9}"
                     f"{f(ratio, '.3f'):>12}{f(r['mae_spend'], '.2f'):>11}")  # fmt: skip
    return "\n".join(lines)


@main.command()
def info():
    """Show backends, OpenMP and thread settings."""
    from segone._threads import effective_n_threads

    click.echo(f"segone {segone.__version__}")
    click.echo(f"backends available: {', '.join(segone.available_backends()) or 'none'}")
    try:
        from segone.kernels import _cy

        click.echo(f"cython kernels built with OpenMP: {_cy.openmp_enabled()}")
        click.echo(f"SIMD variant: {_cy.simd_level()} (best this CPU supports: {_cy.cpu_simd_level()})")
    except ImportError as exc:
        click.echo(f"cython kernels: not built ({exc})")
    click.echo(f"threads (n_threads=None): {effective_n_threads(None)}")
    click.echo(f"SEGONE_BACKEND={os.environ.get('SEGONE_BACKEND', '')!s}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
