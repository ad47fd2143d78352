"""A relay client for end-to-end tests: the plain ``websockets`` library, as a Binance client
would use it, on a thread of its own."""

from __future__ import annotations

import json
import threading
from typing import Any

from websockets.sync.client import connect

from support.processes import wait_until


class RelayClient:
    """A ``websockets`` client on a thread of its own, recording every message."""

    def __init__(self, url: str, subscribe: list[str] | None = None) -> None:
        self.url = url
        self.subscribe = subscribe
        self.messages: list[str] = []
        self.replies: dict[int, Any] = {}
        self.closed: Any = None
        self._ws: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with connect(self.url, max_queue=None) as ws:
            self._ws = ws
            if self.subscribe:
                ws.send(json.dumps({"method": "SUBSCRIBE", "params": self.subscribe, "id": 1}))
            try:
                for message in ws:
                    text = message if isinstance(message, str) else message.decode()
                    body = json.loads(text)
                    if "id" in body and ("result" in body or "error" in body):
                        self.replies[body["id"]] = body
                    else:
                        self.messages.append(text)
            except Exception as exc:
                self.closed = exc

    def send(self, body: dict[str, Any]) -> None:
        wait_until(lambda: self._ws is not None, timeout=10, what="the relay connection")
        self._ws.send(json.dumps(body))

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()
        self._thread.join(10)
