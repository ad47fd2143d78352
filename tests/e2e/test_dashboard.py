"""The dashboard at ``/`` in a real browser: headless Chromium (Debian's ``chromium`` and
``chromedriver``) driven by Selenium, skipped cleanly where either is missing.

The API runs over a real socket (hypercorn in a thread of its own) on a real PostgreSQL holding
two real series, one complete with its confirmed hole and one with candles deleted. The page
must show one row per series with its percentage, draw the selected series with one SVG group
per candle, follow the relay live (a frame played into the fan-out moves the chart), and leave
a screenshot as a test artefact (``$KLINETRIO_TEST_ARTIFACTS`` or the test's tmp dir).
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio
from support.vision import HALT, vision_csv

from klinetrio.api import build_app, serve_api
from klinetrio.binance import wire
from klinetrio.core.intervals import HOUR_MS
from klinetrio.core.models import StreamKey
from klinetrio.fanout import Fanout, Observed
from klinetrio.store.database import Database
from klinetrio.store.reader import StoreReader

pytestmark = pytest.mark.shared_data

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
STREAM = "btcusdt@kline_1h"
NEWEST = 1685574000000  # BTCUSDT 1h 2023-05-31 23:00, the newest stored candle


def browser() -> Any:
    webdriver = pytest.importorskip("selenium.webdriver")
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("needs Debian's chromium and chromedriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1300,1100"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))


def no_statistics() -> Any:
    raise AssertionError("the dashboard needs no statistics")


@contextmanager
def api_server(database_url: str) -> Iterator[tuple[str, Any]]:
    """The API on 127.0.0.1:<free port> in a thread; yields its URL and a function that plays
    a raw kline frame into the relay's fan-out (as a stream connection would)."""
    started: queue.Queue[tuple[int, trio.lowlevel.TrioToken, Fanout, trio.Event]] = queue.Queue()

    async def main() -> None:
        reader = StoreReader(database_url)
        fanout = Fanout({"spot": [STREAM]})
        app = build_app(no_statistics, store=reader, fanout=fanout)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_api, app, "127.0.0.1", 0)
            stop = trio.Event()
            started.put((port, trio.lowlevel.current_trio_token(), fanout, stop))
            await stop.wait()
            nursery.cancel_scope.cancel()
        await reader.aclose()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    port, token, fanout, stop = started.get(timeout=30)

    def play(event: str) -> None:
        frame = f'{{"stream":"{STREAM}","data":{event}}}'

        def offer() -> None:
            data = wire.combined_decoder.decode(frame).data
            for watcher in fanout.watching("spot").get(STREAM, ()):
                watcher.offer(Observed("spot", STREAM, frame, data))

        trio.from_thread.run_sync(offer, trio_token=token)

    try:
        yield f"http://127.0.0.1:{port}", play
    finally:
        trio.from_thread.run_sync(stop.set, trio_token=token)
        thread.join(timeout=30)


def kline_frame(open_time: int, close: str) -> str:
    k = (
        f'{{"t":{open_time},"T":{open_time + HOUR_MS - 1},"s":"BTCUSDT","i":"1h","f":1,"L":2,'
        f'"o":"27200.00000000","c":"{close}","h":"27300.00000000","l":"27100.00000000",'
        f'"v":"10.00000000","n":5,"x":false,"q":"272000.00000000","V":"5.00000000",'
        f'"Q":"136000.00000000","B":"0"}}'
    )
    return f'{{"e":"kline","E":{open_time + 1000},"s":"BTCUSDT","k":{k}}}'


def test_dashboard_shows_coverage_and_a_live_chart(
    shared_data: Path, tmp_path: Path, database_url: str
) -> None:
    driver = browser()
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    spot = shared_data / "vision" / "spot"
    db = Database(database_url)
    db.migrate()
    db.write([c for m in range(1, 6) for c in vision_csv(spot / f"BTCUSDT-1h-2023-0{m}.csv")])
    db.add_hole(StreamKey("BTCUSDT", "1h"), HALT, HALT + HOUR_MS)
    db.write(vision_csv(spot / "ETHUSDT-1h-2025-01.csv", "ETHUSDT"))
    db.close()
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "DELETE FROM candles WHERE symbol = 'ETHUSDT'"
            " AND time >= '2025-01-10' AND time < '2025-01-11'"
        )
    try:
        with api_server(database_url) as (url, play):
            driver.get(f"{url}/#spot/BTCUSDT/1h")
            # The page redraws the chart and the table as data arrives: an element found a moment
            # ago may be gone by the time it is read, so the waits look again.
            wait = WebDriverWait(driver, 20, ignored_exceptions=(StaleElementReferenceException,))
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#series tbody tr")) == 2)
            rows = {
                r.get_attribute("data-series"): r.find_element(By.CSS_SELECTOR, ".pct").text
                for r in driver.find_elements(By.CSS_SELECTOR, "#series tbody tr")
            }
            assert rows == {"spot/BTCUSDT/1h": "100 %", "spot/ETHUSDT/1h": "96.7742 %"}
            eth = driver.find_element(By.CSS_SELECTOR, 'tr[data-series="spot/ETHUSDT/1h"]')
            assert len(eth.find_elements(By.CSS_SELECTOR, "rect.missing")) == 1
            btc = driver.find_element(By.CSS_SELECTOR, 'tr[data-series="spot/BTCUSDT/1h"]')
            assert len(btc.find_elements(By.CSS_SELECTOR, "rect.hole")) == 1

            def candles(d: Any) -> list[Any]:
                found: list[Any] = d.find_elements(By.CSS_SELECTOR, "#chart g.candle")
                return found

            wait.until(lambda d: len(candles(d)) == 200)
            assert candles(driver)[-1].get_attribute("data-time") == str(NEWEST)
            assert driver.find_element(By.ID, "chart-title").text == "spot BTCUSDT 1h"
            # Live: the relay's next candle is appended, then updated in place.
            wait.until(lambda d: d.find_element(By.ID, "live").text == f"live: {STREAM}")
            play(kline_frame(NEWEST + HOUR_MS, "27250.00000000"))
            wait.until(lambda d: candles(d)[-1].get_attribute("data-time") == str(NEWEST + HOUR_MS))
            assert len(candles(driver)) == 200
            driver.save_screenshot(str(artefacts(tmp_path) / "dashboard.png"))
            # Another series by clicking its row.
            driver.find_element(By.CSS_SELECTOR, 'tr[data-series="spot/ETHUSDT/1h"]').click()
            wait.until(lambda d: d.find_element(By.ID, "chart-title").text == "spot ETHUSDT 1h")
            wait.until(lambda d: candles(d)[-1].get_attribute("data-time") == "1738364400000")
            assert len(candles(driver)) == 200
    finally:
        driver.quit()


def artefacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("KLINETRIO_TEST_ARTIFACTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder
