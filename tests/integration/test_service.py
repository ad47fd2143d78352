"""The whole service in-process: the project's fake exchange, a real PostgreSQL, real sockets.

After every stop the invariants are checked, not only that it stopped: every producer closed its
channel end, the writer holds nothing, every received candle is accounted for, and the table has
each candle of the window exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import msgspec
import psycopg
import pytest
import trio
from support import eventually
from support.database import set_read_only
from support.processes import hourly_archives, replay_dir
from support.proxy import CuttableProxy

from klinetrio.api.health import health
from klinetrio.collector import Collector
from klinetrio.settings import Settings, load_settings
from klinetrio.simulate import Simulator, SimulatorConfig

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
SPEED = 600.0  # a 1m candle closes every 0.1 s
MONTHS = ("2024-11", "2024-12", "2025-01", "2025-02")
REPLAY_START_MS = 1735668000000  # 2024-12-31T18:00Z: the first 2025 candles come live
NEW_YEAR_MS = 1735689600000  # 2025-01-01: the spot archives' times are in microseconds since


def settings_for(port: int, **extra: str) -> Settings:
    values = {
        "symbols": "btcusdt,ethusdt",
        "intervals": "1m",
        "ws_url": f"ws://127.0.0.1:{port}",
        "rest_url": f"http://127.0.0.1:{port}",
        "http_addr": "127.0.0.1:0",
        "sync_lookback": "30m",
        **extra,
    }
    return load_settings(values, environ={}, dotenv=None)


def stored_times(database_url: str) -> dict[str, list[int]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT symbol, (extract(epoch FROM time) * 1000)::bigint FROM candles ORDER BY symbol, time"
        ).fetchall()
    result: dict[str, list[int]] = {}
    for symbol, t in rows:
        result.setdefault(str(symbol), []).append(int(t))
    return result


def assert_contiguous(
    times: dict[str, list[int]], symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
) -> None:
    assert sorted(times) == sorted(symbols)
    for symbol, series in times.items():
        assert series == list(range(series[0], series[-1] + MINUTE_MS, MINUTE_MS)), symbol


def assert_orderly_stop(service: Collector) -> None:
    stats = service.writer.statistics()
    assert stats.channel_closed, "a producer did not close its end of the channel"
    assert stats.buffered == 0
    assert stats.received == stats.written + stats.duplicates + stats.dropped
    assert not service.ready


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    with trio.fail_after(seconds):
        yield


async def test_collects_live_and_history_then_stops_in_order(database_url: str) -> None:
    simulator = Simulator(SimulatorConfig(port=0, speed=SPEED, updates_per_second=2))
    with deadline(60):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(simulator.serve)
            service = Collector(settings_for(port), database_url=database_url)
            await nursery.start(service.run)
            await eventually(lambda: service.ready)
            assert service.http_port is not None
            async with httpx.AsyncClient() as client:
                ready = await client.get(f"http://127.0.0.1:{service.http_port}/ready")
            assert ready.status_code == 200
            # Thirty candles per symbol arrive live.
            await eventually(
                lambda: sum(c.closed_candles for c in service.statistics().connections) >= 60
            )
            service.stop()
            with trio.fail_after(10):
                await service.stopped.wait()
            nursery.cancel_scope.cancel()
    assert_orderly_stop(service)
    times = stored_times(database_url)
    assert_contiguous(times)
    for series in times.values():
        assert len(series) >= 29 + 29  # the look-back (29 or 30 closed candles) and the live ones
    assert service.syncer.statistics().fetched >= 58


async def test_database_outage_degrades_then_heals_without_loss(database_url: str) -> None:
    parts = urlsplit(database_url)
    proxy = CuttableProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    simulator = Simulator(SimulatorConfig(port=0, speed=SPEED, updates_per_second=0))
    statuses: list[str] = []
    with deadline(90):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(simulator.serve)
            await nursery.start(proxy.run)
            service = Collector(settings_for(port), database_url=proxy.url_for(database_url))
            await nursery.start(service.run)
            await eventually(lambda: service.ready)
            statuses.append(health(service.statistics()).status)
            written_before = service.writer.statistics().written
            proxy.cut()
            await eventually(lambda: health(service.statistics()).status != "healthy")
            statuses.append(health(service.statistics()).status)
            assert not service.ready
            async with httpx.AsyncClient() as client:
                ready = await client.get(f"http://127.0.0.1:{service.http_port}/ready")
            assert ready.status_code == 503
            assert "database unreachable" in ready.json()["reasons"]
            # Forty candles arrive while the database is away; the writer holds them all.
            await eventually(lambda: service.writer.statistics().buffered >= 40)
            proxy.restore()
            await eventually(lambda: health(service.statistics()).status == "healthy")
            statuses.append(health(service.statistics()).status)
            # Everything held through the outage (forty candles and more) is committed.
            await eventually(lambda: service.writer.statistics().buffered == 0)
            assert service.writer.statistics().written >= written_before + 40
            await service.syncer.wait_idle()
            service.stop()
            await service.stopped.wait()
            nursery.cancel_scope.cancel()
    assert statuses == ["healthy", "degraded", "healthy"]
    assert_orderly_stop(service)
    assert service.writer.statistics().dropped == 0
    assert_contiguous(stored_times(database_url))


async def test_a_dropped_connection_leaves_no_hole(database_url: str) -> None:
    simulator = Simulator(SimulatorConfig(port=0, speed=SPEED, updates_per_second=0, drop_after=25))
    with deadline(60):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(simulator.serve)
            service = Collector(settings_for(port), database_url=database_url)
            await nursery.start(service.run)
            # Two drops, each followed by a backoff of a second or more: ten candles or more
            # close unseen each time, and must come back from REST.
            await eventually(
                lambda: sum(c.reconnects for c in service.statistics().connections) >= 2
            )
            await eventually(lambda: service.ready)
            await service.syncer.wait_idle()
            service.stop()
            await service.stopped.wait()
            nursery.cancel_scope.cancel()
    assert_orderly_stop(service)
    assert simulator.statistics().dropped_connections >= 2
    assert_contiguous(stored_times(database_url))


@pytest.mark.parametrize("symbols", ["NOSUCHCOIN", "btcusdt,NOSUCHCOIN"])
async def test_an_unknown_symbol_stops_start_up_with_a_clear_error(
    database_url: str, symbols: str
) -> None:
    from klinetrio.errors import SettingsError

    simulator = Simulator(SimulatorConfig(port=0, speed=SPEED))
    with deadline(30):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(simulator.serve)
            service = Collector(settings_for(port, symbols=symbols), database_url=database_url)
            with pytest.raises(SettingsError, match="NOSUCHCOIN"):
                await service.run()
            nursery.cancel_scope.cancel()
    assert stored_times(database_url) == {}


def exact_rows(database_url: str) -> dict[str, list[tuple[object, ...]]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            """
            SELECT symbol, (extract(epoch FROM time) * 1000)::bigint, open::text, high::text,
                   low::text, close::text, volume::text,
                   (extract(epoch FROM close_time) * 1000000)::bigint, quote_volume::text,
                   trades, taker_buy_volume::text, taker_buy_quote_volume::text
              FROM candles ORDER BY symbol, time
            """
        ).fetchall()
    result: dict[str, list[tuple[object, ...]]] = {}
    for row in rows:
        result.setdefault(str(row[0]), []).append(tuple(row[1:]))
    return result


@pytest.mark.shared_data
async def test_a_read_only_database_for_six_seconds_loses_nothing(
    shared_data: Path, tmp_path: Path, pg_server_url: str, database_url: str
) -> None:
    """A fail-over seen from serve: the server turns read-only (sessions cut), then writable.
    Real candles (BTCUSDT and ETHUSDT 1h across the ms → µs switch of 2025) arrive one a second;
    every one of the window must be stored once and exactly, and serve must keep running."""
    data = replay_dir(shared_data, tmp_path, hourly_archives(("BTCUSDT", "ETHUSDT"), MONTHS))
    config = SimulatorConfig(
        port=0, data_dir=str(data), start_ms=REPLAY_START_MS, speed=3600.0, updates_per_second=2
    )
    simulator = Simulator(config)
    statuses: list[str] = []
    with deadline(120):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(simulator.serve)
            settings = settings_for(
                port, intervals="1h", sync_lookback="1d", data_dir=str(tmp_path / "data-dir")
            )
            service = Collector(settings, database_url=database_url)
            await nursery.start(service.run)
            await eventually(lambda: service.ready)
            await eventually(lambda: service.writer.statistics().written >= 2 * 24 + 6)
            statuses.append(health(service.statistics()).status)
            await trio.to_thread.run_sync(set_read_only, pg_server_url, database_url, True)
            refused_from = service.writer.statistics().received
            # Six hourly candles per symbol: six seconds of refused writes.
            await eventually(lambda: service.writer.statistics().received >= refused_from + 12)
            statuses.append(health(service.statistics()).status)
            assert not service.ready
            assert service.writer.statistics().buffered >= 12
            await trio.to_thread.run_sync(set_read_only, pg_server_url, database_url, False)
            await eventually(lambda: health(service.statistics()).status == "healthy")
            statuses.append(health(service.statistics()).status)
            await eventually(lambda: service.writer.statistics().buffered == 0)
            await service.syncer.wait_idle()
            assert not service.stopped.is_set()  # it never stopped
            service.stop()
            await service.stopped.wait()
            nursery.cancel_scope.cancel()
    assert statuses == ["healthy", "degraded", "healthy"]
    assert_orderly_stop(service)
    stats = service.writer.statistics()
    assert (stats.dropped, stats.rejected) == (0, 0)
    assert stats.outages == 1
    rows = exact_rows(database_url)
    assert sorted(rows) == ["BTCUSDT", "ETHUSDT"]
    for symbol, stored in rows.items():
        times = [int(r[0]) for r in stored]  # type: ignore[call-overload]
        assert times == list(range(times[0], times[-1] + HOUR_MS, HOUR_MS)), symbol
        assert times[0] < NEW_YEAR_MS < times[-1]
        for row in stored:
            bar = simulator.market.bar(symbol, "1h", int(row[0]))  # type: ignore[call-overload]
            assert bar is not None
            expected = (
                bar.open_time, bar.open, bar.high, bar.low, bar.close, bar.volume,
                bar.close_time * 1000,  # REST and WebSocket carry ms, also in 2025
                bar.quote_volume, bar.trades, bar.taker_buy_volume, bar.taker_buy_quote_volume,
            )  # fmt: skip
            assert row == expected, (symbol, row, expected)


async def test_serve_applies_the_store_settings_and_reports_them_in_health(
    database_url: str, tmp_path: Path
) -> None:
    simulator = Simulator(SimulatorConfig(port=0, speed=SPEED, updates_per_second=0))
    settings = settings_for(
        0,
        derived_intervals="5m",
        retention="candles:400d",
        backup_dir=str(tmp_path / "backups"),
        backup_at="03:00",
    )
    with deadline(60):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(simulator.serve)
            settings = msgspec.structs.replace(
                settings, ws_url=f"ws://127.0.0.1:{port}", rest_url=f"http://127.0.0.1:{port}"
            )
            service = Collector(settings, database_url=database_url)
            await nursery.start(service.run)

            def upkept() -> bool:
                store = service.upkeep.statistics()
                return (
                    bool(store.tables)
                    and store.retention is not None
                    and store.retention.passes > 0
                )

            await eventually(lambda: service.ready and upkept())
            async with httpx.AsyncClient() as client:
                health = (await client.get(f"http://127.0.0.1:{service.http_port}/health")).json()
            service.stop()
            with trio.fail_after(10):
                await service.stopped.wait()
            nursery.cancel_scope.cancel()
    assert_orderly_stop(service)
    assert health["tables"][0]["table"] == "candles"
    assert health["tables"][0]["total_bytes"] > 0
    assert health["backup"]["directory"] == str(tmp_path / "backups")
    assert health["backup"]["next_backup_at"].endswith("T03:00:00Z")
    assert health["backup"]["last_backup_at"] is None
    assert health["retention"]["tables"] == {"candles": "400d"}
    assert health["retention"]["passes"] == 1
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) >= 0 FROM candles_5m").fetchone() == (True,)
