"""A TCP proxy on 127.0.0.1 whose link can be cut: a database or exchange outage on demand."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import trio


class CuttableProxy:
    """Forwards 127.0.0.1:<port> to ``target``.

    ``cut()`` drops every link and refuses new ones (an outage the client sees at once);
    ``freeze()`` stops forwarding in both directions while every socket stays open, and new
    connections are accepted but never answered (a frozen network path: no RST, no FIN, the
    client finds out only by its own timeouts). ``restore()`` ends either.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.up = True
        self.frozen = False
        self._thawed = trio.Event()
        self._thawed.set()
        self._links: set[trio.CancelScope] = set()
        self.connections = 0

    def cut(self) -> None:
        self.up = False
        for link in self._links:
            link.cancel()

    def freeze(self) -> None:
        self.frozen = True
        self._thawed = trio.Event()

    def restore(self) -> None:
        self.up = True
        self.frozen = False
        self._thawed.set()
        # Links that froze stay dead, as after a real partition: the client's side gave up.
        for link in self._links:
            link.cancel()

    def url_for(self, url: str) -> str:
        """``url`` with its host and port replaced by the proxy's."""
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)
        auth = netloc[0] + "@" if len(netloc) == 2 else ""
        return urlunsplit(parts._replace(netloc=f"{auth}127.0.0.1:{self.port}"))

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        async with client:
            if not self.up:
                return
            if self.frozen:
                await self._thawed.wait()
                return
            self.connections += 1
            link = trio.CancelScope()
            self._links.add(link)
            try:
                with link:
                    server = await trio.open_tcp_stream(*self.target)
                    async with server, trio.open_nursery() as nursery:
                        nursery.start_soon(self._pipe, client, server, nursery.cancel_scope)
                        nursery.start_soon(self._pipe, server, client, nursery.cancel_scope)
            except OSError:
                return
            finally:
                self._links.discard(link)

    async def _pipe(
        self, source: trio.SocketStream, sink: trio.SocketStream, scope: trio.CancelScope
    ) -> None:
        try:
            while data := await source.receive_some(65536):
                if self.frozen:
                    await trio.sleep_forever()  # swallowed: the path is frozen
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()


class ThreadedProxy:
    """A ``CuttableProxy`` on its own Trio loop in a thread, for synchronous end-to-end tests."""

    def __init__(self, target_host: str, target_port: int) -> None:
        import threading

        self.proxy = CuttableProxy(target_host, target_port)
        self._token: trio.lowlevel.TrioToken | None = None
        self._ready = threading.Event()
        self._stop: trio.CancelScope | None = None
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as self._stop:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.proxy.run)
                self._ready.set()

    def __enter__(self) -> ThreadedProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            trio.from_thread.run_sync(self._stop.cancel, trio_token=self._token)
        self._thread.join(10)

    def url_for(self, url: str) -> str:
        return self.proxy.url_for(url)

    def cut(self) -> None:
        trio.from_thread.run_sync(self.proxy.cut, trio_token=self._token)

    def freeze(self) -> None:
        trio.from_thread.run_sync(self.proxy.freeze, trio_token=self._token)

    def restore(self) -> None:
        trio.from_thread.run_sync(self.proxy.restore, trio_token=self._token)
