"""The hot loop's glance (stream, event time, ``k.t``, ``k.x``) against the full decode.

The glance decides alone that a frame is a candle in progress and needs nothing more, so it
must never call a closed candle in progress, never miss a kline frame the full decoder reads,
and never take a frame of another kind for a kline. Checked on every real frame in
``../shared/data/ws`` (klines of three markets, the other kinds, control replies), as sent and
rewritten (pretty-printed, keys reversed, ``x`` flipped), and on malformed frames.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from klinetrio.binance.wire import KlineGlance, StreamEnvelope, combined_decoder, glance_decoder

pytestmark = pytest.mark.shared_data


def _envelope(event: dict[str, Any]) -> dict[str, Any]:
    """A raw event (``/ws`` stream) as the combined stream would carry it."""
    if event.get("e") == "kline":
        name = f"{event['s'].lower()}@kline_{event['k']['i']}"
    else:
        name = f"{str(event.get('s', 'x')).lower()}@{event.get('e', 'x')}"
    return {"stream": name, "data": event}


def real_frames(data: Path) -> list[bytes]:
    """Every frame of the captures, as bytes of a combined stream where it was a raw one."""
    frames: list[bytes] = []
    for path in sorted((data / "ws").rglob("*")):
        if not path.is_file():
            continue
        for line in path.read_bytes().splitlines():
            if not line.strip() or line.startswith(b"#"):
                continue
            try:
                value = json.loads(line)
            except ValueError:
                frames.append(line)  # a control reply as pasted (a Python repr): garbage to us
                continue
            if isinstance(value, dict) and ("raw" in value or "frame" in value):
                value = value.get("frame") or value["raw"]
                if isinstance(value, str):
                    try:
                        value = json.loads(value)
                    except ValueError:
                        frames.append(value.encode())
                        continue
            if isinstance(value, dict) and "stream" not in value and "e" in value:
                value = _envelope(value)
                frames.append(json.dumps(value, separators=(",", ":")).encode())
            elif line.startswith(b'{"stream"') or not isinstance(value, dict):
                frames.append(line)
            else:
                frames.append(json.dumps(value, separators=(",", ":")).encode())
    return frames


def rewritten(frame: bytes) -> list[bytes]:
    """The same frame as other valid JSON: spaces and new lines, keys in reverse order, and
    with ``k.x`` flipped (a closed candle made in progress and the other way round)."""
    try:
        value = json.loads(frame)
    except ValueError:
        return []
    out = [json.dumps(value, indent=1).encode(), json.dumps(_reversed(value)).encode()]
    data = value.get("data") if isinstance(value, dict) else None
    kline = data.get("k") if isinstance(data, dict) else None
    if isinstance(kline, dict) and isinstance(kline.get("x"), bool):
        kline["x"] = not kline["x"]
        out.append(json.dumps(value, separators=(",", ":")).encode())
    return out


def _reversed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reversed(v) for k, v in reversed(value.items())}
    return value


def _decode(frame: bytes) -> tuple[StreamEnvelope | None, KlineGlance | None]:
    full: StreamEnvelope | None
    glance: KlineGlance | None
    try:
        full = combined_decoder.decode(frame)
    except msgspec.DecodeError:
        full = None
    try:
        glance = glance_decoder.decode(frame)
    except msgspec.DecodeError:
        glance = None
    return full, glance


def assert_glance_agrees(frame: bytes) -> None:
    full, glance = _decode(frame)
    if full is None:
        # Only a kline frame ill-typed where the glance does not look can pass it; the loop then
        # decodes it in full (closed) or has nothing to store (in progress).
        assert glance is None or b'"kline"' in frame, frame
        return
    assert glance is not None, frame
    assert glance.stream == full.stream
    assert glance.data.event_time == full.data.event_time
    assert glance.data.kline.open_time == full.data.kline.open_time
    assert glance.data.kline.closed is full.data.kline.closed


def test_the_captures_hold_closed_and_in_progress_klines_and_other_kinds(
    shared_data: Path,
) -> None:
    frames = real_frames(shared_data)
    decoded = [_decode(f) for f in frames]
    klines = [full for full, _ in decoded if full is not None]
    assert sum(k.data.kline.closed for k in klines) >= 7
    assert sum(not k.data.kline.closed for k in klines) >= 100
    assert sum(full is None for full, _ in decoded) >= 500  # aggTrade, bookTicker, depth, replies


def test_the_glance_agrees_with_the_full_decode_on_every_real_frame(shared_data: Path) -> None:
    for frame in real_frames(shared_data):
        assert_glance_agrees(frame)


def test_the_glance_agrees_on_every_real_frame_rewritten(shared_data: Path) -> None:
    for frame in real_frames(shared_data):
        for variant in rewritten(frame):
            assert_glance_agrees(variant)


def test_frames_of_other_kinds_and_replies_do_not_glance_as_klines(shared_data: Path) -> None:
    for frame in real_frames(shared_data):
        if b'"e":"kline"' not in frame and b'"e": "kline"' not in frame:
            with pytest.raises(msgspec.DecodeError):
                glance_decoder.decode(frame)


KLINE = {
    "stream": "btcusdt@kline_1m",
    "data": {
        "e": "kline",
        "E": 1672531260001,
        "s": "BTCUSDT",
        "k": {"t": 1672531200000, "T": 1672531259999, "s": "BTCUSDT", "i": "1m", "o": "1.0"}
        | {"c": "1.0", "h": "1.0", "l": "1.0", "v": "0", "n": 0, "x": True, "q": "0"}
        | {"V": "0", "Q": "0", "B": "0"},
    },
}


def _changed(path: tuple[str, ...], value: Any) -> bytes:
    frame = json.loads(json.dumps(KLINE))
    target = frame
    for key in path[:-1]:
        target = target[key]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(frame).encode()


@pytest.mark.parametrize(
    "frame",
    [
        _changed(("data", "k", "x"), "true"),
        _changed(("data", "k", "x"), 1),
        _changed(("data", "k", "x"), None),
        _changed(("data", "k", "t"), "1672531200000"),
        _changed(("data", "E"), None),
        _changed(("data", "e"), "trade"),
        _changed(("stream",), None),
        json.dumps(KLINE).encode()[:-2],
        json.dumps(KLINE["data"]).encode(),  # a raw event is not an envelope
    ],
    ids=["x-string", "x-int", "no-x", "t-string", "no-E", "not-kline", "no-stream", "cut", "raw"],
)
def test_malformed_klines_fail_the_glance_as_they_fail_the_full_decode(frame: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        combined_decoder.decode(frame)
    with pytest.raises(msgspec.DecodeError):
        glance_decoder.decode(frame)


def test_a_closed_frame_glances_closed() -> None:
    glance = glance_decoder.decode(json.dumps(KLINE).encode())
    assert (glance.stream, glance.data.event_time, glance.data.kline.closed) == (
        "btcusdt@kline_1m",
        1672531260001,
        True,
    )
