"""What an observed kline frame costs on its way to Redis, step by step, in isolation.

24,000 distinct in-progress frames (1,500 symbols x 16 intervals, shuffled, so nothing is warm
that would not be under load) through each step the ``relay`` scenario's serve pays for them:
the hot loop's glance, the full decode, an ``Observed``, the Redis payload, and the RESP request
of a batch (``RequestBuilder``; cold: the first batch of each series, warm: every one after).
Best of ``--rounds``; µs per frame. ``python bench/observed_path.py [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from klinetrio.binance import wire
from klinetrio.core.intervals import INTERVALS
from klinetrio.fanout import Observed
from klinetrio.outputs import redis

TEMPLATE = (
    '{{"stream":"{stream}","data":{{"e":"kline","E":{e},"s":"{s}","k":{{"t":1672515780000,'
    '"T":1672515839999,"s":"{s}","i":"{i}","f":100,"L":200,"o":"{o:.8f}","c":"{c:.8f}",'
    '"h":"16543.01000000","l":"16540.12000000","v":"{v:.8f}","n":101,"x":false,'
    '"q":"679895.08231660","V":"20.01238000","Q":"331042.79393170","B":"0"}}}}}}'
)


def frames(rng: random.Random) -> list[bytes]:
    out = []
    for n in range(1_500):
        s = f"SYM{n:04d}USDT"
        for i in INTERVALS:
            out.append(
                TEMPLATE.format(
                    stream=f"{s.lower()}@kline_{i}", e=1672515782136 + n, s=s, i=i,
                    o=rng.random() * 1e4, c=rng.random() * 1e4, v=rng.random() * 100,
                ).encode()
            )  # fmt: skip
    rng.shuffle(out)
    return out


def best(rounds: int, count: int, step: Callable[[], object]) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return min(times) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    data = frames(random.Random(7))
    glance = wire.glance_decoder.decode
    full = wire.combined_decoder.decode
    events = [full(f).data for f in data]
    decoded = [Observed("spot", "s", f, e) for f, e in zip(data, events, strict=True)]
    undecoded = [Observed("spot", "s", f, None) for f in data]

    def request(
        items: list[Observed], names: dict[tuple[str, str, str], tuple[bytes, bytes]]
    ) -> None:
        for start in range(0, len(items), redis.BATCH):
            builder = redis.RequestBuilder(names)
            builder.add(items[start : start + redis.BATCH])
            builder.finish()

    n = len(data)
    print(f"{n:,} distinct in-progress kline frames, best of {rounds}, µs a frame:")
    print(
        f"  glance (hot loop)            {best(rounds, n, lambda: [glance(f) for f in data]):.2f}"
    )
    print(f"  full decode                  {best(rounds, n, lambda: [full(f) for f in data]):.2f}")
    obs = best(rounds, n, lambda: [Observed("spot", "s", f, None) for f in data])
    print(f"  Observed                     {obs:.2f}")
    payload = best(rounds, n, lambda: [redis.kline_payload("spot", e) for e in events])
    print(f"  Redis payload                {payload:.2f}")
    print(f"  RESP request, cold names     {best(1, n, lambda: request(decoded, {})):.2f}")
    names: dict[tuple[str, str, str], tuple[bytes, bytes]] = {}
    request(decoded, names)
    print(f"  RESP request, warm (decoded) {best(rounds, n, lambda: request(decoded, names)):.2f}")
    lazy = best(rounds, n, lambda: request(undecoded, names))
    print(f"  RESP request, warm, decoding {lazy:.2f} (what the publisher pays per frame now)")


if __name__ == "__main__":
    main()
