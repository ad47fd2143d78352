"""The fast path of the WebSocket client: final, unmasked text frames straight from the bytes.

Nearly every frame Binance sends is one final text frame, unmasked (RFC 6455 forbids a server
to mask), with no extension bits: a 2-, 4- or 10-byte header and the payload. Parsing those
here, with a slice of the receive buffer and no per-frame objects, costs about a microsecond;
wsproto's general parser costs about fourteen. Everything else — control frames (ping, pong,
close), fragments and their continuations, binary frames, anything masked or with RSV bits —
is cut out whole and handed to wsproto, which therefore only ever sees complete frames and
keeps no partial state of its own: the protocol stays complete, and wsproto stays the judge of
anything unusual (a masked frame or reserved bits make it fail the connection, as they must).

While a fragmented message is being received, every data frame goes to wsproto (a new data
frame cannot start before the message ends; control frames may come in between and go there
too, as always). Pure: bytes in, frames out, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

_FIN = 0x80
_RSV = 0x70
_OPCODE = 0x0F
_MASK = 0x80
_LENGTH = 0x7F
_TEXT = 0x1
_CONTINUATION = 0x0
_BINARY = 0x2
_FINAL_TEXT = _FIN | _TEXT


@dataclass(slots=True)
class Split:
    """What one ``feed`` found: the payloads of simple text frames, in order, each with its
    position among the whole frames handed to wsproto (``others``), so the caller can keep
    the order of messages across both paths."""

    texts: list[bytes]
    others: list[tuple[int, bytes]]  # (number of texts before it, the frame's bytes)


class FrameSplitter:
    """Cuts a server's byte stream into frames; see the module docstring.

    ``too_big`` is set (and nothing more is parsed) when a frame announces a payload over
    ``max_payload``: the caller closes with 1009.
    """

    def __init__(self, max_payload: int) -> None:
        self._buffer = b""
        self._max = max_payload
        self._fragmented = False
        self.too_big = False

    @property
    def pending(self) -> int:
        """Bytes of a frame not complete yet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> Split:
        buffer = self._buffer + data if self._buffer else data
        texts: list[bytes] = []
        others: list[tuple[int, bytes]] = []
        if self.too_big:
            return Split(texts, others)
        pos = 0
        end = len(buffer)
        max_payload = self._max
        fragmented = self._fragmented
        while end - pos >= 2:
            b0 = buffer[pos]
            b1 = buffer[pos + 1]
            length = b1 & _LENGTH
            header = 2
            if length == 126:  # Binance's kline frames (126..65535 bytes) all come this way
                if end - pos < 4:
                    break
                length = buffer[pos + 2] << 8 | buffer[pos + 3]
                header = 4
            elif length == 127:
                if end - pos < 10:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 10], "big")
                header = 10
            if b1 & _MASK:
                header += 4
            if length > max_payload:
                self.too_big = True
                break
            stop = pos + header + length
            if stop > end:
                break
            if b0 == _FINAL_TEXT and not b1 & _MASK and not fragmented:
                texts.append(buffer[pos + header : stop])
            else:
                opcode = b0 & _OPCODE
                if opcode in (_TEXT, _BINARY):
                    fragmented = not b0 & _FIN
                elif opcode == _CONTINUATION and b0 & _FIN:
                    fragmented = False
                others.append((len(texts), buffer[pos:stop]))
            pos = stop
        self._fragmented = fragmented
        self._buffer = buffer[pos:] if pos < end else b""
        return Split(texts, others)


__all__ = ["FrameSplitter", "Split"]
