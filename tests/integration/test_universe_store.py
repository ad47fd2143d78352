"""The universe against the project's fake exchange and a real PostgreSQL: resolution at start,
the symbols table, the fall-back to the last known symbols when the exchange is away."""

from __future__ import annotations

import httpx
import psycopg
import pytest
import trio

from klinetrio.binance.rest import RestClient
from klinetrio.errors import SettingsError
from klinetrio.simulate import Simulator, SimulatorConfig
from klinetrio.store.database import Database
from klinetrio.store.symbols import load_symbols
from klinetrio.threads import in_thread
from klinetrio.universe import Universe

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLBTC", "ETHBTC")


def universe(entries: list[str], rest: RestClient, db: Database) -> Universe:
    return Universe(entries, {"spot": rest}, db, refresh_s=3600, offload=in_thread)


async def test_start_resolves_globs_saves_the_table_and_falls_back_to_it(
    database_url: str,
) -> None:
    simulator = Simulator(SimulatorConfig(port=0, symbols=SYMBOLS, updates_per_second=0))
    db = Database(database_url)
    db.migrate()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
            port = await nursery.start(simulator.serve)
            rest = RestClient(http, f"http://127.0.0.1:{port}")
            first = universe(["*BTC", "btcusdt"], rest, db)
            assert await first.start() == {"spot": ("BTCUSDT", "ETHBTC", "SOLBTC")}
            assert first.statistics().collected == {"spot": 3}
            # Nothing changed on the exchange: a refresh changes nothing.
            assert await first.refresh(lambda change: None) == []
            assert first.statistics().refreshes == 1

            with pytest.raises(SettingsError, match=r"unknown symbol.*NOPEUSDT"):
                await universe(["btcusdt", "nopeusdt"], rest, db).start()
            nursery.cancel_scope.cancel()

    with psycopg.connect(database_url) as conn:
        rows = load_symbols(conn)
    assert [(r.market, r.symbol, r.status) for r in rows] == [
        ("spot", "BTCUSDT", "TRADING"),
        ("spot", "ETHBTC", "TRADING"),
        ("spot", "SOLBTC", "TRADING"),
    ]
    assert all(r.first_seen_ms <= r.last_seen_ms for r in rows)

    # The exchange is away at the next start: the last known universe is collected meanwhile,
    # and the exact names in any case.
    async with httpx.AsyncClient() as http:
        away = RestClient(http, "http://127.0.0.1:9", max_attempts=1)
        again = universe(["*BTC", "ethusdt"], away, db)
        with trio.fail_after(30):
            assert await again.start() == {"spot": ("ETHBTC", "ETHUSDT", "SOLBTC")}
            # A refresh that cannot read the exchange keeps what is collected.
            assert await again.refresh(lambda change: None) == []
        assert again.statistics().failures == 1
    db.close()
