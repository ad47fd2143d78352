"""Blocking calls off the Trio loop: every one in a worker thread that a cancellation abandons.

A call stuck on a dead peer (a frozen network path, a server that took our bytes and went
silent) must never hold up a stop, so no worker thread is waited for once its caller is
cancelled: it is abandoned, and its result, whenever it comes, is dropped. What such a thread
may still do must therefore be harmless to finish alone: every write klinetrio makes is
idempotent, and a connection is only ever used by the thread that holds its limiter.

- ``in_thread(fn, *args)``: one call, in any free worker thread.
- ``thread_offload(limiter)``: an ``Offload`` for one connection: its calls take turns through
  ``limiter``, which an abandoned thread keeps until it really ends, so the next call on the
  same connection waits for it (cancellably) instead of racing it.

Components that offload take an ``offload`` callable, so tests on Trio's autojump clock can run
the calls inline (the clock would run ahead while a thread works).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

T = TypeVar("T")
Offload = Callable[..., Awaitable[Any]]


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    return await trio.to_thread.run_sync(functools.partial(fn, *args), abandon_on_cancel=True)


def thread_offload(limiter: trio.CapacityLimiter) -> Offload:
    async def offload(fn: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(
            functools.partial(fn, *args), limiter=limiter, abandon_on_cancel=True
        )

    return offload


__all__ = ["Offload", "in_thread", "thread_offload"]
