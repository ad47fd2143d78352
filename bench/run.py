"""klinetrio benchmarks: ingest rate, closed-candle latency, backfill rate, archive rate, memory.

Runs the real pipeline as the user runs it — ``klinetrio simulate`` and ``klinetrio serve`` (or
``klinetrio backfill``) as subprocesses against the local PostgreSQL — and measures it from the
outside: /proc for CPU and RSS, serve's /metrics for frame counts, and a ``committed_at`` column
(``DEFAULT clock_timestamp()``) added to ``candles`` in the bench database for commit times.
See bench/README.md for the method and error of every figure.

    python bench/run.py              # the full run (a few minutes)
    python bench/run.py --quick      # under a minute, smaller loads
    python bench/run.py --json       # ... and one JSON object as the last line
    python bench/run.py --profile    # also py-spy profiles of serve (full load) and backfill
    python bench/run.py --only store # compressed size, backup/restore time per million 1m candles
    python bench/run.py --only archive   # one symbol x one year of 1m from the archives
    python bench/run.py --only api   # klines pages/s, 304s/s, coverage of 24,000 series
    python bench/run.py --only universe  # spot, USD-M and COIN-M by globs: 32,250 streams
    python bench/run.py --only streams   # the full kline load plus trades, book and depth

Environment: BENCH_PG (default postgresql://postgres@127.0.0.1:5432/postgres) is the server on
which throw-away databases ``bench_<pid>_<scenario>`` are created and dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from common import ADMIN_URL, ALL_INTERVALS, log, machine, machine_line, summarize_profile
from history import ARCHIVE_SYMBOL, run_archive, run_backfill
from ingest import ServeLoad, closed_line, run_serve, serve_dict, serve_line

UNIVERSE = (("spot", 1500), ("usdm", 500), ("coinm", 50))


def main() -> None:
    parser = argparse.ArgumentParser(description="klinetrio benchmarks")
    parser.add_argument("--quick", action="store_true", help="smaller loads, under a minute")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy serve (full load) and backfill"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, profiles)")
    parser.add_argument("--window", type=float, help="override the full-load window (seconds)")
    parser.add_argument(
        "--symbols", type=int, help="override the full load's symbols (x 16 intervals)"
    )
    parser.add_argument(
        "--serve-env",
        action="append",
        default=[],
        metavar="KLINETRIO_X=VALUE",
        help="a setting for serve in every serve scenario (repeatable), for A/B runs",
    )
    scenarios = (
        "idle", "full", "relay", "peer", "universe", "streams", "backfill", "archive", "store",
        "api",
    )  # fmt: skip
    parser.add_argument("--only", choices=scenarios, action="append")
    args = parser.parse_args()
    only = set(args.only or set(scenarios) - {"peer"})  # peer needs the bench extra: asked for

    m = machine()
    log(f"machine: {machine_line(m)}")
    if args.quick:
        idle = ServeLoad("idle", 50, "1s,1m", 0.5, 8.0)
        full = ServeLoad("full", 300, ALL_INTERVALS, 0.5, 12.0, settle_s=6.0)
        backfill_symbols, backfill_days = 2, 30
    else:
        idle = ServeLoad("idle", 50, "1s,1m", 0.5, 30.0)
        full = ServeLoad("full", 1500, ALL_INTERVALS, 0.5, 125.0, settle_s=120.0)
        backfill_symbols, backfill_days = 4, 60

    # Spot 1,500 x 16 intervals, USD-M 500 x 15 and COIN-M 50 x 15 (futures have no 1s).
    markets = (("spot", 300), ("usdm", 100), ("coinm", 10)) if args.quick else UNIVERSE
    universe = replace(full, name="universe", synthetic=markets)
    # The 200 symbols at 25 trades, 50 book updates and 1 depth20 snapshot a second
    # each, spread over all 1,500 (KLINETRIO_STREAMS is for every symbol): the same events a
    # second in all, on 4,500 more streams instead of 600.
    kinds = ("aggTrade", "bookTicker", "depth")
    streams = replace(
        full, name="streams", kinds=kinds,
        trade_rate=5000 / 1500, book_rate=10_000 / 1500, depth_rate=200 / 1500,
    )  # fmt: skip
    if args.window:
        full.measure_s = universe.measure_s = streams.measure_s = args.window
    if args.serve_env:
        if any("=" not in kv or not kv.startswith("KLINETRIO_") for kv in args.serve_env):
            parser.error("--serve-env takes KLINETRIO_NAME=VALUE")
        pairs = tuple((k, v) for k, _, v in (kv.partition("=") for kv in args.serve_env))
        full.serve_env = universe.serve_env = streams.serve_env = pairs
    if args.symbols:
        full.symbols = args.symbols
    workdir = Path(tempfile.mkdtemp(prefix="klinetrio-bench-"))
    out: dict[str, object] = {}
    extra: dict[str, object] = {"mode": "quick" if args.quick else "full", "machine": m}
    started = time.monotonic()
    try:
        if "idle" in only:
            log(
                f"idle: {idle.streams} streams ({idle.symbols} symbols x {idle.intervals}), "
                f"{idle.updates_per_second:g} updates/s/stream, {idle.measure_s:g}s window"
            )
            r = run_serve(idle, workdir)
            log(f"  {serve_line(r)}")
            out["rss_idle_mb"] = r.rss_mb
            extra["idle"] = serve_dict(r)
        if "full" in only:
            log(
                f"load: {full.streams} streams ({full.symbols} symbols x 16 intervals), "
                f"{full.updates_per_second:g} updates/s/stream, {full.measure_s:g}s window"
            )
            r = run_serve(full, workdir, profile=args.profile)
            log(f"  {serve_line(r)}")
            out["ingest_frames_per_s"] = r.frames_per_s
            out["ingest_cpu_cores"] = r.serve_cpu_cores
            out["ingest_cpu_us_per_frame"] = r.cpu_us_per_frame
            out["rest_klines_after_sync"] = r.rest_kline_requests_after_sync
            out["closed_latency_p50_ms"] = r.latency.get("p50_ms")
            out["closed_latency_p99_ms"] = r.latency.get("p99_ms")
            out["rss_loaded_mb"] = r.rss_max_mb
            extra["load"] = serve_dict(r)
            if r.profile:
                summary = summarize_profile(r.profile)
                log("serve profile (py-spy, full load):\n" + summary)
                if r.sim_profile:
                    log("simulator profile:\n" + summarize_profile(r.sim_profile, 12))
                extra["serve_profile"] = r.profile
        if "relay" in only:
            relay = replace(
                full,
                name="relay",
                relay_clients=100,
                redis_url=os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/15"),
            )
            log(
                f"relay: the same load, {relay.relay_clients} relay clients x"
                f" {relay.streams_per_client} streams, Redis publishing every kline event"
                f" ({relay.redis_url})"
            )
            if "full" not in only:  # the extra cores need the plain load of the same run
                plain = run_serve(full, workdir)
                out["ingest_cpu_cores"] = plain.serve_cpu_cores
                log(f"  plain load for comparison: {serve_line(plain)}")
            r = run_serve(relay, workdir, profile=args.profile)
            if r.profile:
                log("serve profile (py-spy, relay load):\n" + summarize_profile(r.profile))
            log(f"  {serve_line(r)}")
            base_cores = out.get("ingest_cpu_cores")
            extra_cores = None
            if isinstance(base_cores, float):
                extra_cores = round(r.serve_cpu_cores - base_cores, 3)
            lat = r.relay_latency
            log(
                f"  relay: {r.relay_counts}; frame sent → relay client p50/p99/max"
                f" {lat.get('p50_ms')}/{lat.get('p99_ms')}/{lat.get('max_ms')} ms (n="
                f"{lat.get('count')}); Redis published {r.redis_published:,} events"
                f" ({r.redis_published / r.window_s:,.0f}/s), dropped {r.redis_dropped:,};"
                f" observers dropped {r.observer_dropped:,}; serve {r.serve_cpu_cores:.3f} cores"
                f" = {extra_cores} more than plain ingest; {r.cpu_us_per_frame:.1f} µs of CPU per"
                f" frame received"
            )
            out["relay_extra_cores"] = extra_cores
            out["relay_p99_ms"] = lat.get("p99_ms")
            extra["relay"] = serve_dict(r)
        if "universe" in only:
            log(
                f"universe: {universe.streams:,} streams ("
                + ", ".join(f"{m} {n:,} x {len(universe.market_intervals(m))}" for m, n in markets)
                + f") collected by globs, {universe.updates_per_second:g} updates/s/stream,"
                f" {universe.measure_s:g}s window"
            )
            r = run_serve(universe, workdir, profile=args.profile)
            log(f"  {serve_line(r)}")
            out["universe_streams"] = r.streams
            out["universe_cpu_cores"] = r.serve_cpu_cores
            out["universe_cpu_us_per_frame"] = r.cpu_us_per_frame
            out["universe_p99_ms"] = r.latency.get("p99_ms")
            out["universe_missing"] = r.closed_candles.get("missing")
            extra["universe"] = serve_dict(r)
        if "streams" in only:
            log(
                f"streams: {streams.streams:,} streams ({streams.symbols:,} symbols x 16 intervals"
                f" + {', '.join(kinds)}): {streams.trade_rate * streams.symbols:,.0f} trades/s,"
                f" {streams.book_rate * streams.symbols:,.0f} book updates/s,"
                f" {streams.depth_rate * streams.symbols:,.0f} depth20 snapshots/s besides the"
                f" klines, {streams.measure_s:g}s window"
            )
            r = run_serve(streams, workdir, profile=args.profile)
            log(f"  {serve_line(r)}")
            for table, lat in r.event_latency.items():
                if table not in r.event_rows:
                    continue
                log(
                    f"  {table}: {r.event_rows[table]:,} rows in the window"
                    f" ({r.event_rows[table] / r.window_s:,.0f}/s); event time → committed p50"
                    f" {lat.get('p50_ms')} ms, p99 {lat.get('p99_ms')} ms, max {lat.get('max_ms')}"
                )
            sent = r.event_latency.get("trades sent", {})
            log(
                f"  trades, frame sent → committed: p50 {sent.get('p50_ms')} ms, p99"
                f" {sent.get('p99_ms')} ms, max {sent.get('max_ms')} ms (n={sent.get('count')})"
            )
            log(f"  rows of other kinds dropped: {r.event_dropped:,}")
            out["streams_cpu_cores"] = r.serve_cpu_cores
            out["streams_frames_per_s"] = r.frames_per_s
            out["streams_p99_ms"] = r.latency.get("p99_ms")
            out["streams_trades_p99_ms"] = r.event_latency.get("trades sent", {}).get("p99_ms")
            out["streams_dropped"] = r.event_dropped
            extra["streams"] = serve_dict(r)
        if "peer" in only:
            run_peer_scenario(replace(full, name="peer"), workdir, out, extra)
        if "backfill" in only:
            log(
                f"backfill: {backfill_symbols} symbols x {backfill_days} days of 1m "
                f"({backfill_symbols * backfill_days * 1440:,} candles)"
            )
            b = run_backfill(backfill_symbols, backfill_days, workdir, profile=args.profile)
            log(
                f"  {b.candles:,} candles in {b.wall_s:.2f}s = {b.candles_per_s:,}/s end to end "
                f"({b.steady_candles_per_s:,}/s first to last commit); backfill "
                f"{b.cpu_cores:.2f} cores ({b.cpu_cores * b.wall_s / b.candles * 1e6:.1f} µs of CPU "
                f"per candle; no frames here), exchange {b.sim_cpu_cores:.2f}, PostgreSQL "
                f"{b.pg_cpu_cores:.2f}; RSS max {b.rss_max_mb:.0f} MB"
            )
            out["backfill_candles_per_s"] = b.candles_per_s
            extra["backfill"] = b.__dict__
            if b.profile:
                log("backfill profile (py-spy):\n" + summarize_profile(b.profile))
        if "archive" in only:
            log(f"archive: {ARCHIVE_SYMBOL} x 2025 of 1m (525,600 candles) from the archives")
            a = run_archive(workdir)
            log(
                f"  {a.candles:,} candles from {a.files} files in {a.wall_s:.2f}s ="
                f" {a.candles_per_s:,}/s end to end ({a.steady_candles_per_s:,}/s first to last"
                f" commit); raw COPY ceiling {a.ceiling_per_s:,}/s (1 connection"
                f" {a.ceiling_1_per_s:,}/s, 2 connections {a.ceiling_2_per_s:,}/s) ="
                f" {100 * a.share_of_ceiling:.0f} % of it; REST backfill of the same year"
                f" {a.rest_candles_per_s:,}/s ({a.rest_wall_s:.1f}s) = x{a.times_rest:.1f}"
                f" (REST 50 ms away: {a.rest_50ms_candles_per_s:,}/s);"
                f" bulk path text {a.text_copy_per_s:,}/s vs binary {a.binary_copy_per_s:,}/s;"
                f" backfill {a.cpu_cores:.2f} cores, PostgreSQL {a.pg_cpu_cores:.2f}, exchange"
                f" {a.sim_cpu_cores:.2f}; RSS max {a.rss_max_mb:.0f} MB"
            )
            out["archive_candles_per_s"] = a.candles_per_s
            out["archive_copy_ceiling_per_s"] = a.ceiling_per_s
            out["archive_rest_candles_per_s"] = a.rest_candles_per_s
            extra["archive"] = a.__dict__
        if "store" in only:
            run_store_scenario(out, extra)
        if "api" in only:
            from api import line as api_line
            from api import run_api

            log("api: /api/v3/klines pages, 304 revalidations, klinetrio coverage")
            api_result = run_api(workdir, quick=args.quick, window=5.0 if args.quick else 15.0)
            log(f"  {api_line(api_result)}")
            out["api_klines_pages_per_s"] = api_result.pages_per_s
            out["api_304_per_s"] = api_result.not_modified_per_s
            out["coverage_s"] = api_result.coverage_s
            extra["api"] = api_result.__dict__
    finally:
        if not args.keep and not args.profile:
            for p in workdir.iterdir():
                p.unlink()
            workdir.rmdir()
        else:
            log(f"logs and profiles in {workdir}")
    extra["elapsed_s"] = round(time.monotonic() - started, 1)
    keys = (
        "ingest_frames_per_s", "ingest_cpu_cores", "ingest_cpu_us_per_frame",
        "rest_klines_after_sync",
        "closed_latency_p50_ms",
        "closed_latency_p99_ms", "backfill_candles_per_s", "rss_idle_mb", "rss_loaded_mb",
        "relay_extra_cores", "relay_p99_ms",
        "peer_klinetrio_us_per_frame", "peer_cryptofeed_us_per_frame", "peer_ratio",
        "peer_klinetrio_rest_klines_after_sync", "peer_klinetrio_p99_ms",
        "universe_streams", "universe_cpu_cores", "universe_cpu_us_per_frame", "universe_p99_ms",
        "universe_missing",
        "streams_cpu_cores", "streams_frames_per_s", "streams_p99_ms", "streams_trades_p99_ms",
        "streams_dropped",
        "compressed_mib_per_million_1m", "backup_s_per_million", "restore_s_per_million",
        "archive_candles_per_s", "archive_copy_ceiling_per_s", "archive_rest_candles_per_s",
        "api_klines_pages_per_s", "api_304_per_s", "coverage_s",
    )  # fmt: skip
    summary = {k: out.get(k) for k in keys}
    log("figures: " + ", ".join(f"{k}={v}" for k, v in summary.items()))
    if args.json:
        print(json.dumps({**summary, **extra}, default=str))


def run_peer_scenario(
    load: ServeLoad, workdir: Path, out: dict[str, object], extra: dict[str, object]
) -> None:
    """klinetrio, then cryptofeed, on the same simulated load: µs of CPU per frame and closed
    candles of each, and the ratio (bench/peer.py)."""
    from peer import run_cryptofeed

    log(
        f"peer: {load.streams} streams ({load.symbols} symbols x 16 intervals),"
        f" {load.updates_per_second:g} updates/s/stream, {load.measure_s:g}s window each:"
        " klinetrio serve, then cryptofeed (Binance feed, CandlesPostgres, uvloop)"
    )
    k = run_serve(load, workdir)
    log(f"  klinetrio: {serve_line(k)}")
    c = run_cryptofeed(load, workdir)
    log(
        f"  cryptofeed: {c.frames_per_s:,.0f} frames/s; {c.cpu_cores:.2f} cores ="
        f" {c.cpu_us_per_frame:.1f} µs of CPU per frame; simulator {c.sim_cpu_cores:.2f},"
        f" PostgreSQL {c.pg_cpu_cores:.2f}; RSS max {c.rss_max_mb:.0f} MB; closed candles of the"
        f" window {closed_line(c.closed_candles)}; settled in {c.startup_s:.0f}s;"
        f" {c.log_warnings} warning/error lines in its log"
    )
    ratio = round(k.cpu_us_per_frame / c.cpu_us_per_frame, 3) if c.cpu_us_per_frame else None
    log(
        f"  µs of CPU per frame: klinetrio {k.cpu_us_per_frame:.1f}, cryptofeed"
        f" {c.cpu_us_per_frame:.1f}: klinetrio / cryptofeed = {ratio}; closed candles stored"
        f" klinetrio {closed_line(k.closed_candles)}, cryptofeed {closed_line(c.closed_candles)};"
        f" klinetrio's REST klines requests after its start-up sync"
        f" {k.rest_kline_requests_after_sync}, p99 frame sent → committed {k.latency.get('p99_ms')} ms"
    )
    out["peer_klinetrio_us_per_frame"] = k.cpu_us_per_frame
    out["peer_cryptofeed_us_per_frame"] = c.cpu_us_per_frame
    out["peer_ratio"] = ratio
    out["peer_klinetrio_rest_klines_after_sync"] = k.rest_kline_requests_after_sync
    out["peer_klinetrio_p99_ms"] = k.latency.get("p99_ms")
    extra["peer_klinetrio"] = serve_dict(k)
    extra["peer_cryptofeed"] = {**c.__dict__, "load": c.load.__dict__}


def run_store_scenario(out: dict[str, object], extra: dict[str, object]) -> None:
    """Compressed size and backup/restore time per million 1m candles (bench/store.py)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from store import line, run_store

    timescale_url = os.environ.get("BENCH_TIMESCALE_URL") or os.environ.get(
        "KLINETRIO_TEST_TIMESCALE_URL"
    )
    log("store: 1,002,240 real 1m candles (3 archive days x 232, one series)")
    plain = run_store(ADMIN_URL, False, log)
    log(f"  {line(plain)}")
    extra["store_postgresql"] = plain.__dict__
    out["backup_s_per_million"] = plain.per_million(plain.backup_s)
    out["restore_s_per_million"] = plain.per_million(plain.restore_s)
    if not timescale_url:
        log("  no TimescaleDB (set BENCH_TIMESCALE_URL): compressed size not measured")
        return
    ts = run_store(timescale_url, True, log)
    log(f"  {line(ts)}")
    extra["store_timescaledb"] = ts.__dict__
    assert ts.compressed_bytes is not None
    out["compressed_mib_per_million_1m"] = round(ts.compressed_bytes / ts.candles / 2**20 * 1e6, 2)
    extra["timescaledb_backup_s_per_million"] = ts.per_million(ts.backup_s)
    extra["timescaledb_restore_s_per_million"] = ts.per_million(ts.restore_s)


if __name__ == "__main__":
    main()
