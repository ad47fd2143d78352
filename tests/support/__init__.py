"""Helpers shared by the test suite (importable as ``support`` from any test)."""

from __future__ import annotations

from collections.abc import Callable

import trio


async def eventually(predicate: Callable[[], bool], *, poll: float = 0.01) -> None:
    """Wait until ``predicate()`` holds, polling; callers bound it with ``trio.fail_after``.

    For state that has no event to wait on (counters in ``statistics()``).
    """
    while True:
        if predicate():
            return
        await trio.sleep(poll)
