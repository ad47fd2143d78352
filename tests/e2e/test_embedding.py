"""``examples/embed.py``, the library's own example, run as a user would run it: against the
simulator and a real database, stopped by SIGTERM once it has printed live closed candles."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
from support.processes import simulator, wait_until

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "embed.py"


def test_the_embedding_example_collects_subscribes_and_stops_in_order(
    tmp_path: Path, database_url: str
) -> None:
    with simulator(tmp_path, "--speed", "600", "--updates-per-second", "5") as (_, base):
        env = {k: v for k, v in os.environ.items() if not k.startswith("KLINETRIO_")}
        env.update(
            {
                "KLINETRIO_DATABASE_URL": database_url,
                "KLINETRIO_SYMBOLS": "btcusdt,ethusdt",
                "KLINETRIO_WS_URL": base.replace("http://", "ws://"),
                "KLINETRIO_REST_URL": base,
                "KLINETRIO_HTTP_ADDR": "off",
                "KLINETRIO_SYNC_LOOKBACK": "30m",
            }
        )
        log = tmp_path / "embed.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, str(EXAMPLE), "--seconds", "0", "--every", "0.5"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=tmp_path,
            )
            try:
                wait_until(
                    lambda: (
                        log.read_text().count("closed ") >= 6 and "ready=True" in log.read_text()
                    ),
                    timeout=60,
                    what="six closed candles and a report of a ready collector",
                )
                process.send_signal(signal.SIGTERM)
                code = process.wait(20)
            finally:
                if process.poll() is None:
                    process.kill()
    output = log.read_text()
    assert code == 0, output[-3000:]
    assert "Traceback" not in output
    assert "collecting 2 stream(s); API on port None" in output
    closed = [line.split() for line in output.splitlines() if line.startswith("closed ")]
    assert {c[1] for c in closed} == {"BTCUSDT", "ETHUSDT"}
    assert "ready=True" in output
    assert "events dropped by our subscription: 0" in output
    stopped = next(line for line in output.splitlines() if line.startswith("stopped: "))
    assert "buffered=0" in stopped
    # Every candle it printed as closed is in the table, exactly.
    with psycopg.connect(database_url) as conn:
        for _, symbol, _interval, open_time, close in closed:
            row = conn.execute(
                "SELECT close::text FROM candles WHERE symbol = %s AND"
                " time = timestamptz 'epoch' + %s * interval '1 millisecond'",
                (symbol, int(open_time)),
            ).fetchone()
            assert row == (close.removeprefix("close="),), (symbol, open_time)
