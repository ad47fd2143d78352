"""The serve scenarios: ingest rate, CPU, memory and the closed-candle latency under a load."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from common import (
    BIN,
    KLINETRIO,
    ROOT,
    backend_pids,
    bench_database,
    cpu_of,
    cpu_seconds,
    free_port,
    http_get,
    log,
    metrics,
    process,
    rss_mb,
    symbol_names,
    tail,
    wait_until,
)

# --- serve scenarios -------------------------------------------------------------------------


@dataclass
class ServeLoad:
    name: str
    symbols: int
    intervals: str
    updates_per_second: float
    measure_s: float
    settle_timeout_s: float = 240.0
    settle_s: float = 20.0
    # The relay scenario: relay clients of serve (10 streams each) and Redis publishing.
    relay_clients: int = 0
    streams_per_client: int = 10
    redis_url: str | None = None
    # The universe scenario: generated symbols per market (``--synthetic spot=1500,usdm=500``),
    # collected by globs; empty: ``symbols`` spot symbols named one by one.
    synthetic: tuple[tuple[str, int], ...] = ()
    # The streams scenario: the other kinds (``KLINETRIO_STREAMS`` beside ``kline``) for every
    # symbol, at these rates per symbol per second (``simulate --trade-rate`` etc.).
    kinds: tuple[str, ...] = ()
    trade_rate: float = 1.0
    book_rate: float = 5.0
    depth_rate: float = 1.0
    # More settings for serve (``--serve-env KLINETRIO_WRITER_FLUSH_S=0.01``), for A/B runs.
    serve_env: tuple[tuple[str, str], ...] = ()

    def market_symbols(self) -> dict[str, list[str]]:
        """The symbols of each market, as the simulator names them."""
        if not self.synthetic:
            return {"spot": symbol_names(self.symbols)}
        from klinetrio.simulate.config import synthetic_names

        return {market: synthetic_names(market, n) for market, n in self.synthetic}

    def market_intervals(self, market: str) -> list[str]:
        """The load's intervals that ``market`` serves (futures have no 1s)."""
        from klinetrio.binance.markets import MARKETS

        unsupported = MARKETS[market].intervals_unsupported
        return [i for i in self.intervals.split(",") if i not in unsupported]

    @property
    def streams(self) -> int:
        return sum(
            len(names) * (len(self.market_intervals(market)) + len(self.kinds))
            for market, names in self.market_symbols().items()
        )


@dataclass
class ServeResult:
    load: ServeLoad
    streams: int = 0
    connections: int = 0
    startup_s: float = 0.0
    window_s: float = 0.0
    frames: int = 0
    closed: int = 0
    frames_per_s: float = 0.0
    closed_per_s: float = 0.0
    serve_cpu_cores: float = 0.0
    cpu_us_per_frame: float = 0.0  # serve's CPU (all threads) in the window ÷ frames received
    sim_cpu_cores: float = 0.0
    pg_cpu_cores: float = 0.0
    sim_frames_per_s: float = 0.0
    rss_mb: float = 0.0
    rss_max_mb: float = 0.0
    rss_hwm_mb: float = 0.0
    latency: dict[str, float] = field(default_factory=dict)  # frame sent → row committed
    latency_from_close: dict[str, float] = field(default_factory=dict)  # candle close → committed
    closed_candles: dict[str, int] = field(default_factory=dict)  # closed_accounting()
    clock_offset_ms: float = 0.0
    clock_offset_error_ms: float = 0.0
    profile: str | None = None
    exchange_latency: dict[str, object] = field(default_factory=dict)
    rest_requests: int = 0
    # From the end of the start-up sync to the end of the window (+2 s): klines requests, and
    # what the streams said of skipped candles meanwhile (stream_gaps: handed to sync).
    rest_kline_requests_after_sync: int = 0
    stream_gaps_after_sync: int = 0
    sync_requests_saved_after_sync: int = 0
    late_candles_after_sync: int = 0
    sim_profile: str | None = None
    writer_latency: dict[str, object] = field(default_factory=dict)
    relay_latency: dict[str, float] = field(default_factory=dict)  # frame sent → client receipt
    relay_counts: dict[str, object] = field(default_factory=dict)
    redis_published: int = 0
    redis_dropped: int = 0
    observer_dropped: int = 0
    # The streams scenario: rows of each other kind committed in the window, rows dropped, and
    # the latency from the event's exchange time to its commit.
    event_rows: dict[str, int] = field(default_factory=dict)
    event_dropped: int = 0
    event_latency: dict[str, dict[str, float]] = field(default_factory=dict)


def per_frame_us(cpu_s: float, frames: int) -> float:
    """µs of CPU per frame received: a process's CPU time (all threads) over a window ÷ the
    frames it received in that window."""
    return round(cpu_s / frames * 1e6, 2) if frames else float("nan")


def histogram_quantiles(
    m0: dict[str, float], m1: dict[str, float], family: str
) -> dict[str, object]:
    """Upper bucket bounds of p50/p99 of a Prometheus histogram between two scrapes."""
    buckets = []
    for name, value in m1.items():
        if name.startswith(family + "_bucket{"):
            le = re.search(r'le="([^"]+)"', name)
            if le:
                buckets.append((float(le[1]), value - m0.get(name, 0.0)))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    result: dict[str, object] = {"batches": int(total)}
    for q in (0.5, 0.99):
        bound = next((le for le, n in buckets if total and n >= q * total), None)
        result[f"p{int(q * 100)}_le_s"] = bound
    return result


def exchange_offset(sim_port: int, samples: int = 7) -> tuple[float, float]:
    """exchange clock - wall clock in ms, from /api/v3/time, with its error (half the best RTT)."""
    best: tuple[float, float] | None = None
    for _ in range(samples):
        before = time.time()
        _, body = http_get(f"http://127.0.0.1:{sim_port}/api/v3/time")
        after = time.time()
        server_ms = json.loads(body)["serverTime"] + 0.5  # it floors to the millisecond
        rtt = (after - before) * 1000
        offset = server_ms - (before + after) / 2 * 1000
        if best is None or rtt < best[1]:
            best = (offset, rtt)
    assert best is not None
    return best[0], best[1] / 2 + 0.5


def _percentiles(row: tuple[object, ...] | None) -> dict[str, float]:
    assert row is not None
    count, pct, worst, mean = row
    if not count:
        return {"count": 0}
    return {
        "count": int(count),  # type: ignore[call-overload]
        "p50_ms": round(pct[0], 1),  # type: ignore[index]
        "p90_ms": round(pct[1], 1),  # type: ignore[index]
        "p99_ms": round(pct[2], 1),  # type: ignore[index]
        "p999_ms": round(pct[3], 1),  # type: ignore[index]
        "max_ms": round(float(worst), 1),  # type: ignore[arg-type]
        "mean_ms": round(float(mean), 1),  # type: ignore[arg-type]
    }


# How a line of the simulator's ``--sent-log`` meets its row: a closed kline by its series and
# open time, a trade by its symbol and agg id (its lines say ``aggTrade`` and the id).
_SENT_JOINS = {
    "candles": """
        FROM candles r
        JOIN sent s ON s.symbol = r.symbol AND s.interval = r.interval
                   AND r.time = timestamptz 'epoch' + s.open_ms * interval '1 ms'
       WHERE r.source = 'ws' AND s.sent_ms >= %s AND s.sent_ms < %s
       GROUP BY r.symbol, r.interval, r.time, r.committed_at""",
    "trades": """
        FROM trades r
        JOIN sent s ON s.interval = 'aggTrade' AND s.symbol = r.symbol AND s.open_ms = r.agg_id
       WHERE r.source = 'ws' AND s.sent_ms >= %s AND s.sent_ms < %s
       GROUP BY r.symbol, r.agg_id, r.committed_at""",
}


def sent_latency_stats(
    url: str, start: float, end: float, sent_log: Path, table: str = "candles"
) -> dict[str, float]:
    """Frame sent by the simulator → row committed (the issue's definition): closed klines
    (``candles``) or trades (``trades``).

    The simulator's ``--sent-log`` has the wall-clock ms each such frame left it; the row's
    ``committed_at`` is PostgreSQL's wall clock on the same machine, so no offset is involved.
    Rows: ws rows whose frame was sent in [start, end).
    """
    with psycopg.connect(url) as conn:
        conn.execute(
            "CREATE TEMP TABLE sent (symbol text, interval text, open_ms bigint, sent_ms bigint)"
        )
        with conn.cursor().copy("COPY sent FROM STDIN WITH (DELIMITER ' ')") as copy:
            copy.write(sent_log.read_bytes())
        # Without statistics of the temporary table the planner may join millions of trade
        # lines by a nested loop (a query of minutes instead of seconds).
        conn.execute("ANALYZE sent")
        row = conn.execute(
            f"""
            SELECT count(*),
                   percentile_cont(ARRAY[0.5, 0.9, 0.99, 0.999]) WITHIN GROUP (ORDER BY ms),
                   max(ms), avg(ms)
              FROM (SELECT extract(epoch FROM r.committed_at) * 1000 - min(s.sent_ms) AS ms
                    {_SENT_JOINS[table]}) l
            """,  # the join: one of two constants
            (start * 1000, end * 1000),
        ).fetchone()
    return _percentiles(row)


def relay_streams(symbols: list[str], load: ServeLoad) -> list[str]:
    """Distinct streams for the relay clients: per client half 1s (a closed candle a second,
    for latency samples) and half 1m, over symbols no other client has."""
    per = load.streams_per_client
    names: list[str] = []
    for client in range(load.relay_clients):
        chosen = symbols[client * per // 2 : (client + 1) * per // 2]
        names += [f"{s.lower()}@kline_{i}" for s in chosen for i in ("1s", "1m")]
    return names


def relay_latency_stats(
    received: Path, sent_log: Path, start: float, end: float
) -> dict[str, float]:
    """Closed frame sent by the simulator → received by a relay client (both wall-clock ms on
    this machine), for frames sent in [start, end)."""
    sent: dict[tuple[str, str, str], int] = {}
    for line in sent_log.read_text().splitlines():
        symbol, interval, open_ms, sent_ms = line.split()
        sent.setdefault((symbol, interval, open_ms), int(sent_ms))
    samples: list[float] = []
    for line in received.read_text().splitlines() if received.exists() else ():
        symbol, interval, open_ms, got_ms = line.split()
        at = sent.get((symbol, interval, open_ms))
        if at is not None and start * 1000 <= at < end * 1000:
            samples.append(int(got_ms) - at)
    if not samples:
        return {}
    samples.sort()

    def q(x: float) -> float:
        return round(samples[min(len(samples) - 1, int(x * len(samples)))], 1)

    return {"count": len(samples), "p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": samples[-1]}


def latency_stats(url: str, start: float, end: float, offset_ms: float) -> dict[str, float]:
    """Candle close → row committed, for ws rows whose candle closed in [start, end).

    This includes the simulator's own lateness in sending the closed frame."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            """
            SELECT count(*),
                   percentile_cont(ARRAY[0.5, 0.9, 0.99, 0.999]) WITHIN GROUP (ORDER BY ms),
                   max(ms), avg(ms)
              FROM (SELECT extract(epoch FROM committed_at - close_time) * 1000 - 1 + %s AS ms
                      FROM candles
                     WHERE source = 'ws'
                       AND close_time >= to_timestamp(%s) AND close_time < to_timestamp(%s)) s
            """,
            (offset_ms, start + offset_ms / 1000, end + offset_ms / 1000),
        ).fetchone()
    return _percentiles(row)


EVENT_TABLES = {"aggTrade": "trades", "bookTicker": "book_tickers", "ticker": "tickers",
                "depth": "depth_snapshots"}  # fmt: skip


def event_stats(
    url: str, start: float, end: float, offset_ms: float
) -> tuple[dict[str, int], dict[str, dict[str, float]]]:
    """Rows of each other kind whose exchange time falls in the window, and their latency from
    that time to the commit (trades: the trade time, within a millisecond of when the simulator
    sends the frame; book and depth: the receive time serve stamped on the exchange's clock)."""
    rows: dict[str, int] = {}
    latency: dict[str, dict[str, float]] = {}
    with psycopg.connect(url) as conn:
        for table in EVENT_TABLES.values():
            row = conn.execute(
                f"""
                SELECT count(*),
                       percentile_cont(ARRAY[0.5, 0.9, 0.99, 0.999]) WITHIN GROUP (ORDER BY ms),
                       max(ms), avg(ms)
                  FROM (SELECT extract(epoch FROM committed_at - time) * 1000 + %s AS ms
                          FROM {table}
                         WHERE time >= to_timestamp(%s) AND time < to_timestamp(%s)) s
                """,
                (offset_ms, start + offset_ms / 1000, end + offset_ms / 1000),
            ).fetchone()
            stats = _percentiles(row)
            if stats.get("count"):
                rows[table] = int(stats["count"])
                latency[table] = stats
    return rows, latency


def simulator_args(load: ServeLoad, port: int, sent_log: Path) -> list[str]:
    """``klinetrio simulate`` offering ``load``: every scenario that shares a load shares this."""
    if load.synthetic:
        offered = ["--synthetic", ",".join(f"{m}={n}" for m, n in load.synthetic)]
    else:
        offered = ["--symbols", ",".join(symbol_names(load.symbols))]
    if load.kinds:
        offered += ["--trade-rate", f"{load.trade_rate:g}", "--book-rate", f"{load.book_rate:g}",
                    "--depth-rate", f"{load.depth_rate:g}"]  # fmt: skip
    return [
        *KLINETRIO, "simulate", "--port", str(port), *offered,
        "--speed", "1", "--updates-per-second", str(load.updates_per_second),
        "--weight-limit", str(2**62), "--log-level", "WARNING",
        "--sent-log", str(sent_log),
    ]  # fmt: skip


def expected_closed(load: ServeLoad, start_ms: int, end_ms: int) -> int:
    """Candles of ``load`` that close in ``[start_ms, end_ms)`` of the exchange's clock: one per
    candle boundary of each interval, for every symbol (a candle's close time + 1 ms is the
    next one's open)."""
    from klinetrio.core.intervals import Interval

    total = 0
    for market, names in load.market_symbols().items():
        intervals = load.market_intervals(market)
        total += len(names) * sum(Interval.parse(i).count(start_ms, end_ms) for i in intervals)
    return total


# A row counts when its close time + 1 ms falls in the window: close in [start - 1, end - 1) ms;
# the half millisecond absorbs cryptofeed's float seconds (close_ms / 1000 through a datetime).
CLOSED_IN_WINDOW = {
    "klinetrio": """
        SELECT count(*), count(DISTINCT (market, symbol, interval, time)) FROM candles
         WHERE close_time >= to_timestamp((%(start)s - 1.5) / 1000.0)
           AND close_time < to_timestamp((%(end)s - 1.5) / 1000.0)""",
    "cryptofeed": """
        SELECT count(*), count(DISTINCT (symbol, interval, start)) FROM candles
         WHERE closed
           AND stop >= to_timestamp((%(start)s - 1.5) / 1000.0) AT TIME ZONE 'UTC'
           AND stop < to_timestamp((%(end)s - 1.5) / 1000.0) AT TIME ZONE 'UTC'""",
}


def closed_accounting(
    url: str, schema: str, load: ServeLoad, start_ms: int, end_ms: int
) -> dict[str, int]:
    """Closed candles of the window: expected from the clock, stored (distinct), duplicates
    (rows beyond the first of a candle) and missing."""
    with psycopg.connect(url) as conn:
        row = conn.execute(CLOSED_IN_WINDOW[schema], {"start": start_ms, "end": end_ms}).fetchone()
    assert row is not None
    rows, distinct = int(row[0]), int(row[1])
    expected = expected_closed(load, start_ms, end_ms)
    return {
        "expected": expected,
        "stored": distinct,
        "missing": expected - distinct,
        "duplicates": rows - distinct,
    }


def run_serve(load: ServeLoad, workdir: Path, profile: bool = False) -> ServeResult:
    result = ServeResult(load)
    symbols = load.market_symbols()["spot"]
    sim_port, http_port = free_port(), free_port()
    sent_log = workdir / f"{load.name}-sent.log"
    sim_args = simulator_args(load, sim_port, sent_log)
    with (
        bench_database(load.name) as url,
        process(sim_args, f"{load.name}-simulate", workdir) as sim,
    ):
        wait_until(
            lambda: http_get(f"http://127.0.0.1:{sim_port}/api/v3/ping")[0] == 200,
            30,
            "the simulator",
        )
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("KLINETRIO_")},
            "KLINETRIO_DATABASE_URL": url,
            "KLINETRIO_SYMBOLS": ",".join(symbols),
            "KLINETRIO_INTERVALS": load.intervals,
            "KLINETRIO_WS_URL": f"ws://127.0.0.1:{sim_port}",
            "KLINETRIO_REST_URL": f"http://127.0.0.1:{sim_port}",
            "KLINETRIO_HTTP_ADDR": f"127.0.0.1:{http_port}",
            # Nothing to fetch at start: the run measures the live path, not a day of history.
            "KLINETRIO_SYNC_LOOKBACK": "0s",
        }
        if load.synthetic:  # every market's symbols by a glob, as a user collects them
            env["KLINETRIO_SYMBOLS"] = ",".join(
                "*" if m == "spot" else f"{m}:*" for m, _ in load.synthetic
            )
            for market in ("usdm", "coinm"):
                env[f"KLINETRIO_{market.upper()}_WS_URL"] = f"ws://127.0.0.1:{sim_port}/{market}"
                env[f"KLINETRIO_{market.upper()}_REST_URL"] = f"http://127.0.0.1:{sim_port}"
        if load.redis_url is not None:
            env["KLINETRIO_REDIS_URL"] = load.redis_url
        if load.kinds:
            env["KLINETRIO_STREAMS"] = ",".join(("kline", *load.kinds))
        env.update(load.serve_env)
        started = time.monotonic()
        with process([*KLINETRIO, "serve"], f"{load.name}-serve", workdir, env) as serve:
            try:
                wait_until(
                    lambda: (
                        serve.poll() is None
                        and http_get(f"http://127.0.0.1:{http_port}/ready")[0] == 200
                    ),
                    load.settle_timeout_s,
                    "serve to be ready",
                    0.5,
                )
                # Start-up sync: one pass per series at start and one after each subscription.
                # Measure once no series waits for a pass and REST has been quiet for 2 s.
                quiet = {"n": -1.0, "since": time.monotonic()}

                def sync_done() -> bool:
                    if serve.poll() is not None:
                        raise RuntimeError("serve exited")
                    m = metrics(http_port)
                    n = m.get("klinetrio_rest_requests_total", 0.0)
                    if n != quiet["n"] or m.get("klinetrio_sync_pending", 0.0):
                        quiet["n"], quiet["since"] = n, time.monotonic()
                    return time.monotonic() - quiet["since"] >= 2.0

                with contextlib.suppress(RuntimeError):
                    wait_until(sync_done, load.settle_s, "start-up sync to finish", 0.5)
            except RuntimeError:
                log(tail(workdir / f"{load.name}-serve.log"))
                raise
            result.startup_s = round(time.monotonic() - started - 2.0, 1)
            settled = metrics(http_port)
            pids = backend_pids(url)
            offset_before = exchange_offset(sim_port)
            time.sleep(2.0)  # let the first candles of every series pass (no gap checks before)

            spy = None
            if profile:
                spy_out = workdir / f"{load.name}-serve.pyspy.txt"
                spy = subprocess.Popen(
                    [str(BIN / "py-spy"), "record", "--pid", str(serve.pid), "--duration",
                     str(int(load.measure_s)), "--rate", "250", "--format", "raw",
                     "--nonblocking", "--threads", "--output", str(spy_out)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                result.sim_profile = str(workdir / f"{load.name}-simulate.pyspy.txt")
                spy_sim = subprocess.Popen(
                    [str(BIN / "py-spy"), "record", "--pid", str(sim.pid), "--duration",
                     str(int(load.measure_s)), "--rate", "100", "--format", "raw",
                     "--nonblocking", "--output", result.sim_profile],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip

            relay_out = workdir / f"{load.name}-relay.txt"
            relay = None
            if load.relay_clients:
                relay = subprocess.Popen(
                    [sys.executable, str(ROOT / "bench" / "relay_clients.py"),
                     f"ws://127.0.0.1:{http_port}", str(load.measure_s + 4), str(relay_out),
                     str(load.streams_per_client), *relay_streams(symbols, load)],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                time.sleep(3.0)  # every client connected and subscribed before the window
            probe_streams = [f"{s.lower()}@kline_{i}" for s in symbols[:10] for i in ("1s", "1m")]
            probe = subprocess.Popen(
                [sys.executable, str(ROOT / "bench" / "probe.py"), f"ws://127.0.0.1:{sim_port}",
                 str(offset_before[0]), str(load.measure_s), *probe_streams],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            m0 = metrics(http_port)
            t0, c0 = time.time(), cpu_seconds(serve.pid)
            s0, p0 = cpu_seconds(sim.pid), cpu_of(pids)
            rss_samples = []
            while time.time() - t0 < load.measure_s:
                time.sleep(1.0)
                rss_samples.append(rss_mb(serve.pid))
            t1, c1 = time.time(), cpu_seconds(serve.pid)
            s1, p1 = cpu_seconds(sim.pid), cpu_of(pids)
            m1 = metrics(http_port)
            offset_after = exchange_offset(sim_port)
            with contextlib.suppress(Exception):
                result.exchange_latency = json.loads(probe.communicate(timeout=30)[0])
            result.writer_latency = histogram_quantiles(m0, m1, "klinetrio_writer_latency_seconds")
            if relay is not None:
                with contextlib.suppress(Exception):
                    result.relay_counts = json.loads(relay.communicate(timeout=60)[0])
                result.relay_latency = relay_latency_stats(relay_out, sent_log, t0, t1)
            result.redis_published = int(
                m1.get("klinetrio_redis_published_total", 0)
                - m0.get("klinetrio_redis_published_total", 0)
            )
            result.redis_dropped = int(
                m1.get("klinetrio_redis_dropped_total", 0)
                - m0.get("klinetrio_redis_dropped_total", 0)
            )
            result.observer_dropped = int(
                m1.get("klinetrio_observer_dropped_total", 0)
                - m0.get("klinetrio_observer_dropped_total", 0)
            )
            if spy is not None:
                spy.wait(timeout=60)
                spy_sim.wait(timeout=60)
                result.profile = str(workdir / f"{load.name}-serve.pyspy.txt")
            time.sleep(2.0)  # candles that closed at the end of the window get committed
            end = metrics(http_port)
            for attr, family in (
                ("rest_kline_requests_after_sync", "klinetrio_rest_kline_requests_total"),
                ("stream_gaps_after_sync", "klinetrio_stream_gaps_total"),
                ("sync_requests_saved_after_sync", "klinetrio_sync_requests_saved_total"),
                ("late_candles_after_sync", "klinetrio_late_candles_total"),
            ):
                setattr(result, attr, int(end.get(family, 0) - settled.get(family, 0)))
            result.rss_hwm_mb = round(rss_mb(serve.pid, "VmHWM"), 1)
            result.window_s = round(t1 - t0, 2)
            result.frames = int(m1["klinetrio_frames_total"] - m0["klinetrio_frames_total"])
            result.closed = int(
                m1["klinetrio_closed_candles_total"] - m0["klinetrio_closed_candles_total"]
            )
            result.rest_requests = int(
                m1.get("klinetrio_rest_requests_total", 0)
                - m0.get("klinetrio_rest_requests_total", 0)
            )
            result.frames_per_s = round(result.frames / (t1 - t0), 1)
            result.closed_per_s = round(result.closed / (t1 - t0), 1)
            result.serve_cpu_cores = round((c1 - c0) / (t1 - t0), 3)
            result.cpu_us_per_frame = per_frame_us(c1 - c0, result.frames)
            result.sim_cpu_cores = round((s1 - s0) / (t1 - t0), 3)
            result.pg_cpu_cores = round((p1 - p0) / (t1 - t0), 3)
            result.rss_mb = round(sorted(rss_samples)[len(rss_samples) // 2], 1)
            result.rss_max_mb = round(max(rss_samples), 1)
            result.connections = sum(
                1
                for line in http_get(f"http://127.0.0.1:{http_port}/metrics")[1]
                .decode()
                .splitlines()
                if line.startswith("klinetrio_connection_up{")
            )
            result.streams = load.streams
            offset = (offset_before[0] + offset_after[0]) / 2
            result.clock_offset_ms = round(offset, 2)
            result.clock_offset_error_ms = round(
                max(offset_before[1], offset_after[1])
                + abs(offset_before[0] - offset_after[0]) / 2,
                2,
            )
            result.latency_from_close = latency_stats(url, t0, t1, offset)
            result.latency = sent_latency_stats(url, t0, t1, sent_log)
            if load.kinds:
                result.event_rows, result.event_latency = event_stats(url, t0, t1, offset)
                result.event_latency["trades sent"] = sent_latency_stats(
                    url, t0, t1, sent_log, "trades"
                )
                result.event_dropped = int(
                    m1.get("klinetrio_event_rows_dropped_total", 0)
                    - m0.get("klinetrio_event_rows_dropped_total", 0)
                )
            result.closed_candles = closed_accounting(
                url, "klinetrio", load, round(t0 * 1000 + offset), round(t1 * 1000 + offset)
            )
            if m1.get("klinetrio_decode_errors_total") or m1.get("klinetrio_reconnects_total"):
                log(
                    f"  warning: decode errors/reconnects during {load.name}: "
                    f"{m1.get('klinetrio_decode_errors_total')}/{m1.get('klinetrio_reconnects_total')}"
                )
    return result


# --- backfill --------------------------------------------------------------------------------


def serve_line(r: ServeResult) -> str:
    lat = r.latency
    return (
        f"exchange-side p50/p99 {r.exchange_latency.get('p50_ms')}/{r.exchange_latency.get('p99_ms')} ms, "
        f"writer receipt-to-commit p50/p99 <= {r.writer_latency.get('p50_le_s')}/{r.writer_latency.get('p99_le_s')} s; "
        f"{r.frames_per_s:,.0f} frames/s ({r.closed_per_s:,.0f} closed/s) over {r.connections} "
        f"connections; serve {r.serve_cpu_cores:.2f} cores = {r.cpu_us_per_frame:.1f} µs of CPU "
        f"per frame, simulator {r.sim_cpu_cores:.2f}, "
        f"PostgreSQL {r.pg_cpu_cores:.2f}; closed latency (frame sent → committed) p50 "
        f"{lat.get('p50_ms')} ms, p99 {lat.get('p99_ms')} ms, max {lat.get('max_ms')} ms "
        f"(n={lat.get('count')}); from the candle's close p50 {r.latency_from_close.get('p50_ms')} "
        f"ms, p99 {r.latency_from_close.get('p99_ms')} ms (clock ±{r.clock_offset_error_ms} ms); RSS {r.rss_mb:.0f} MB (max {r.rss_max_mb:.0f}, peak "
        f"{r.rss_hwm_mb:.0f}); closed candles of the window {closed_line(r.closed_candles)}; ready+settled in {r.startup_s:.0f}s; {r.rest_requests} REST "
        f"requests in the window; after the start-up sync {r.rest_kline_requests_after_sync} REST"
        f" klines requests ({r.stream_gaps_after_sync} stream gaps, {r.sync_requests_saved_after_sync}"
        f" requests saved by the grace, {r.late_candles_after_sync} late closed frames)"
    )


def closed_line(c: dict[str, int]) -> str:
    return (
        f"expected {c.get('expected', 0):,} / stored {c.get('stored', 0):,} (missing"
        f" {c.get('missing', 0):,}, duplicates {c.get('duplicates', 0):,})"
    )


def serve_dict(r: ServeResult) -> dict[str, object]:
    d = dict(r.__dict__)
    d["load"] = r.load.__dict__
    return d
