"""The fast path against wsproto: the same server byte stream, cut at every offset, must give
the same messages, in the same order, with pings, a fragmented message, binary data and a close
in between — and wsproto must see only whole frames.

The reference is wsproto itself reading the whole stream as a client; the byte stream is made
by wsproto as a server (unmasked, as servers send).
"""

from __future__ import annotations

import random

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    Request,
    TextMessage,
)

from klinetrio.net.frames import FrameSplitter

Event = tuple[str, bytes]


def connected_pair() -> tuple[WSConnection, WSConnection]:
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="example", target="/stream")))
    assert any(isinstance(e, Request) for e in server.events())
    client.receive_data(server.send(AcceptConnection()))
    assert any(isinstance(e, AcceptConnection) for e in client.events())
    return client, server


def server_stream(big: int = 70_000) -> bytes:
    """What Binance might send: text frames of every length class (``big`` bytes: past 65,535
    the length takes 64 bits), pings, a fragmented text message with a ping in the middle,
    binary, a pong, and a close."""
    _, server = connected_pair()
    out = b""
    out += server.send(TextMessage('{"stream":"a","data":{"k":1}}'))
    out += server.send(TextMessage("x" * 125))
    out += server.send(TextMessage("y" * 126))
    out += server.send(Ping(b"p1"))
    out += server.send(TextMessage("z" * big))
    out += server.send(TextMessage("frag-1 ", message_finished=False))
    out += server.send(Ping(b"p2"))
    out += server.send(TextMessage("frag-2 ✓", message_finished=False))
    out += server.send(TextMessage(" frag-3", message_finished=True))
    out += server.send(TextMessage("ünïcödé"))
    out += server.send(BytesMessage(b"\x00\x01\x02"))
    out += server.send(Pong(b"p0"))
    out += server.send(TextMessage("last"))
    out += server.send(CloseConnection(code=1001, reason="going away"))
    return out


def reference(stream: bytes) -> list[Event]:
    client, _ = connected_pair()
    client.receive_data(stream)
    return _events(client)


def _events(client: WSConnection, parts: list[bytes] | None = None) -> list[Event]:
    """wsproto's events as (kind, bytes); ``parts`` carries a fragmented message across calls."""
    out: list[Event] = []
    parts = [] if parts is None else parts
    for event in client.events():
        if isinstance(event, TextMessage | BytesMessage):
            data = event.data.encode() if isinstance(event, TextMessage) else bytes(event.data)
            parts.append(data)
            if event.message_finished:
                out.append(("message", b"".join(parts)))
                parts.clear()
        elif isinstance(event, Ping):
            out.append(("ping", bytes(event.payload)))
        elif isinstance(event, Pong):
            out.append(("pong", bytes(event.payload)))
        elif isinstance(event, CloseConnection):
            out.append(("close", f"{event.code} {event.reason}".encode()))
    return out


def fast_path(chunks: list[bytes]) -> tuple[list[Event], list[bytes]]:
    """What WebSocketClient does with each read: the splitter first, whole frames to wsproto.
    Returns the events and every frame wsproto was given."""
    client, _ = connected_pair()
    splitter = FrameSplitter(max_payload=1 << 20)
    out: list[Event] = []
    given: list[bytes] = []
    parts: list[bytes] = []
    for chunk in chunks:
        split = splitter.feed(chunk)
        taken = 0
        for before, frame in split.others:
            out += [("message", t) for t in split.texts[taken:before]]
            taken = before
            given.append(frame)
            client.receive_data(frame)
            out += _events(client, parts)
        out += [("message", t) for t in split.texts[taken:]]
    assert splitter.pending == 0
    return out, given


STREAM = server_stream()
EXPECTED = reference(STREAM)
SMALL = server_stream(big=300)  # every frame kind, short enough to cut everywhere, thrice
SMALL_EXPECTED = reference(SMALL)


def test_the_reference_has_what_the_stream_was_made_of() -> None:
    kinds = [kind for kind, _ in EXPECTED]
    assert kinds.count("message") == 8
    assert ("message", "frag-1 frag-2 ✓ frag-3".encode()) in EXPECTED
    assert EXPECTED[-1] == ("close", b"1001 going away")


def test_the_whole_stream_at_once() -> None:
    assert fast_path([STREAM])[0] == EXPECTED


def test_cut_in_two_at_every_offset() -> None:
    for cut in range(len(SMALL) + 1):
        assert fast_path([SMALL[:cut], SMALL[cut:]])[0] == SMALL_EXPECTED, cut
    # The 64-bit length frame: every cut around its header and its end, and every 97th byte.
    big_at = STREAM.index(b"z" * 16) - 10
    big_end = big_at + 10 + 70_000
    cuts = {*range(big_at - 4, big_at + 14), *range(big_end - 4, big_end + 4)}
    for cut in sorted(cuts | set(range(0, len(STREAM), 97))):
        assert fast_path([STREAM[:cut], STREAM[cut:]])[0] == EXPECTED, cut


def test_every_small_offset_and_random_cuttings() -> None:
    # Every pair of cuts close together (headers of every size cut in every way), then random
    # chunkings of the whole stream, a byte at a time included.
    for a in range(len(SMALL)):
        for b in (a + 1, a + 2, a + 5, a + 130):
            chunks = [SMALL[:a], SMALL[a:b], SMALL[b:]]
            assert fast_path(chunks)[0] == SMALL_EXPECTED, (a, b)
    rng = random.Random(5)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(STREAM)), rng.randrange(1, 40)))
        chunks = [STREAM[i:j] for i, j in zip([0, *cuts], [*cuts, len(STREAM)], strict=True)]
        assert fast_path(chunks)[0] == EXPECTED
    assert fast_path([STREAM[i : i + 1] for i in range(len(STREAM))])[0] == EXPECTED


def test_wsproto_sees_only_whole_non_simple_frames() -> None:
    _, given = fast_path([STREAM[i : i + 3] for i in range(0, len(STREAM), 3)])
    opcodes = [frame[0] & 0x0F for frame in given]
    # The fragments (text, continuation, continuation), the pings, the binary frame, the pong
    # and the close; never a simple text frame.
    assert opcodes == [0x9, 0x1, 0x9, 0x0, 0x0, 0x2, 0xA, 0x8]


def test_a_masked_frame_goes_to_wsproto_which_fails_it() -> None:
    client, _ = connected_pair()
    # A client's frame is masked: a server must never send one.
    mask = b"\x01\x02\x03\x04"
    masked_bytes = b"\x81\x85" + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(b"hello"))
    split = FrameSplitter(1 << 20).feed(masked_bytes)
    assert split.texts == []
    assert [frame for _, frame in split.others] == [masked_bytes]
    client.receive_data(masked_bytes)
    assert any(isinstance(e, CloseConnection) and e.code == 1002 for e in client.events())


def test_a_frame_over_the_limit_is_refused_before_it_is_read() -> None:
    splitter = FrameSplitter(max_payload=100)
    split = splitter.feed(b"\x81\x7e\x01\x00" + b"a" * 10)  # announces 256 bytes
    assert splitter.too_big
    assert split.texts == []
