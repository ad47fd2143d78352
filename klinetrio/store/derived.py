"""Derived-interval views ``candles_<interval>`` and the one query that reads any interval.

Each view aggregates the finest collected interval that divides its own (see
``klinetrio.core.derived``): first open, max high, min low, last close, summed volumes and trades,
and only whole buckets — a bucket lacking any source candle is left out, so neither the bucket in
progress nor one over a gap is ever shown as if complete.

On TimescaleDB the view is a continuous aggregate with real-time aggregation (materialized
buckets plus a live aggregate of what the refresh has not reached yet) and a refresh policy; on
plain PostgreSQL it is a plain view. A plain view cannot turn a condition on its bucket into a
range of source rows, so ``select_candles`` aggregates the source range itself there, with the
same SQL the view is made of: same rows, without scanning the whole series.

Views are marked with a comment naming their definition. At start ``ensure_views`` creates the
configured ones, recreates those whose definition changed (another source interval, TimescaleDB
gained) and drops the marked ones no longer configured; a view of the same name that klinetrio did
not make is left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from loguru import logger
from psycopg import sql

from klinetrio.core.derived import DerivedInterval, choose_source
from klinetrio.core.intervals import Interval
from klinetrio.core.models import Candle, StreamKey, ms_to_datetime

_MARK = "klinetrio derived v1"
REFRESH_EVERY = "1 hour"
# The candle columns of a derived view (the table's, less ``source``).
CANDLE_COLUMNS = (
    "market",
    "symbol",
    "interval",
    "time",
    "close_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trades",
    "taker_buy_volume",
    "taker_buy_quote_volume",
)
_SUMMED = ("volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume")

Conn = psycopg.Connection[tuple[object, ...]]


@dataclass(frozen=True, slots=True)
class ViewPlan:
    """One derived view as it should be: its interval, source and kind."""

    derived: DerivedInterval
    source: str
    continuous: bool

    @property
    def comment(self) -> str:
        kind = "continuous aggregate" if self.continuous else "view"
        return f"{_MARK}: {self.derived.name} from {self.source} ({kind})"

    @property
    def per_bucket(self) -> int:
        step = Interval(self.source).fixed_ms
        assert step is not None
        return self.derived.length_ms // step


def plan_views(
    derived: Sequence[str], collected: Sequence[str], *, continuous: bool
) -> list[ViewPlan]:
    plans = []
    for name in derived:
        interval = DerivedInterval.parse(name)
        plans.append(ViewPlan(interval, choose_source(interval, collected), continuous))
    return plans


def _interval_literal(ms: int) -> str:
    for unit_ms, unit in ((3_600_000, "hours"), (60_000, "minutes"), (1_000, "seconds")):
        if ms % unit_ms == 0:
            return f"{ms // unit_ms} {unit}"
    return f"{ms} milliseconds"


def _bucket(plan: ViewPlan) -> sql.Composable:
    width = sql.Literal(_interval_literal(plan.derived.length_ms))
    origin = sql.Literal(ms_to_datetime(plan.derived.origin_ms).isoformat())
    if plan.continuous:
        return sql.SQL("time_bucket(INTERVAL {}, time, origin => TIMESTAMPTZ {})").format(
            width, origin
        )
    return sql.SQL("date_bin(INTERVAL {}, time, TIMESTAMPTZ {})").format(width, origin)


def aggregate_sql(plan: ViewPlan, extra_where: sql.Composable | None = None) -> sql.Composed:
    """The SELECT that builds ``plan``'s buckets (optionally over a narrower set of source rows)."""
    bucket = _bucket(plan)
    if plan.continuous:
        first = sql.SQL("first(open, time)")
        last = sql.SQL("last(close, time)")
    else:
        first = sql.SQL("(array_agg(open ORDER BY time))[1]")
        last = sql.SQL("(array_agg(close ORDER BY time DESC))[1]")
    sums = sql.SQL(", ").join(
        sql.SQL("sum({0}) AS {0}").format(sql.Identifier(column)) for column in _SUMMED[:2]
    )
    taker = sql.SQL(", ").join(
        sql.SQL("sum({0}) AS {0}").format(sql.Identifier(column)) for column in _SUMMED[2:]
    )
    where = sql.SQL("interval = {}").format(sql.Literal(plan.source))
    if extra_where is not None:
        where = sql.SQL("{} AND {}").format(where, extra_where)
    return sql.SQL(
        "SELECT market, symbol, {name}::text AS interval, {bucket} AS time,"
        " max(close_time) AS close_time, {first} AS open, max(high) AS high, min(low) AS low,"
        " {last} AS close, {sums}, sum(trades)::bigint AS trades, {taker}"
        " FROM candles WHERE {where}"
        " GROUP BY market, symbol, {bucket}"
        " HAVING count(*) = {count}"
    ).format(
        name=sql.Literal(plan.derived.name),
        bucket=bucket,
        first=first,
        last=last,
        sums=sums,
        taker=taker,
        where=where,
        count=sql.Literal(plan.per_bucket),
    )


def existing_views(conn: Conn) -> dict[str, str]:
    """klinetrio's derived views in the current schema: name → the comment that marks it."""
    rows = conn.execute(
        "SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c"
        " WHERE c.relkind IN ('v', 'm') AND c.relnamespace = current_schema()::regnamespace"
        " AND c.relname LIKE 'candles\\_%%' AND obj_description(c.oid, 'pg_class') LIKE %s",
        (_MARK + "%",),
    ).fetchall()
    return {str(name): str(comment) for name, comment in rows}


def _is_continuous(conn: Conn, view: str) -> bool:
    if not conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone():
        return False
    row = conn.execute(
        "SELECT 1 FROM timescaledb_information.continuous_aggregates WHERE view_name = %s"
        " AND view_schema = current_schema()",
        (view,),
    ).fetchone()
    return row is not None


def _drop(conn: Conn, view: str) -> None:
    kind = sql.SQL("MATERIALIZED VIEW" if _is_continuous(conn, view) else "VIEW")
    conn.execute(sql.SQL("DROP {} IF EXISTS {}").format(kind, sql.Identifier(view)))


def ensure_views(conn: Conn, plans: Sequence[ViewPlan]) -> list[str]:
    """Make the derived views match ``plans``; returns what it did, one phrase per change.

    Runs in the caller's transaction (continuous aggregates are created ``WITH NO DATA``, which
    a transaction allows; the refresh policy fills them in the background).
    """
    done: list[str] = []
    have = existing_views(conn)
    wanted = {plan.derived.view: plan for plan in plans}
    for view, comment in have.items():
        plan = wanted.get(view)
        if plan is None or plan.comment != comment:
            _drop(conn, view)
            if plan is None:
                done.append(f"dropped {view}")
    for view, plan in wanted.items():
        if have.get(view) == plan.comment:
            continue
        name = sql.Identifier(view)
        if conn.execute("SELECT to_regclass(%s)", (f'"{view}"',)).fetchone() not in (None, (None,)):
            logger.warning(
                "{view} exists and was not made by klinetrio: derived interval {name} skipped",
                view=view,
                name=plan.derived.name,
            )
            continue
        if plan.continuous:
            conn.execute(
                sql.SQL(
                    "CREATE MATERIALIZED VIEW {} WITH (timescaledb.continuous,"
                    " timescaledb.materialized_only = false) AS {} WITH NO DATA"
                ).format(name, aggregate_sql(plan))
            )
            conn.execute(
                "SELECT add_continuous_aggregate_policy(%s, start_offset => NULL,"
                " end_offset => %s::interval, schedule_interval => %s::interval)",
                (view, _interval_literal(plan.derived.length_ms), REFRESH_EVERY),
            )
        else:
            conn.execute(sql.SQL("CREATE VIEW {} AS {}").format(name, aggregate_sql(plan)))
        conn.execute(sql.SQL("COMMENT ON VIEW {} IS {}").format(name, sql.Literal(plan.comment)))
        done.append(f"{'recreated' if view in have else 'created'} {plan.comment.split(': ')[1]}")
    return done


def _plan_of(conn: Conn, interval: str) -> ViewPlan | None:
    """The plan of the derived view of ``interval``, read back from its marking comment."""
    view = f"candles_{interval}"
    comment = existing_views(conn).get(view)
    if comment is None:
        return None
    body = comment.removeprefix(_MARK + ": ")
    name, _, rest = body.partition(" from ")
    source, _, kind = rest.partition(" (")
    return ViewPlan(DerivedInterval.parse(name), source, kind.startswith("continuous"))


def select_candles(
    conn: Conn,
    key: StreamKey,
    start_ms: int | None = None,
    end_ms: int | None = None,
    *,
    limit: int | None = None,
    descending: bool = False,
) -> tuple[sql.Composed, tuple[object, ...]]:
    """A query, with its parameters, for the candles of ``key`` opening in ``[start_ms, end_ms)``
    — from ``candles`` for a collected interval, from its derived view otherwise — as rows of
    text and exact integers: the columns of ``CANDLE_COLUMNS`` and ``source`` (``derived`` for a
    view), with ``time`` in ms since the epoch, ``close_time`` in µs, numbers as their exact
    decimal text and trades as an integer."""
    plan = _plan_of(conn, key.interval)
    conditions = [sql.SQL("market = %s AND symbol = %s AND interval = %s")]
    params: list[object] = [key.market, key.symbol, key.interval]
    if start_ms is not None:
        conditions.append(sql.SQL("time >= %s"))
        params.append(ms_to_datetime(start_ms))
    if end_ms is not None:
        conditions.append(sql.SQL("time < %s"))
        params.append(ms_to_datetime(end_ms))
    where = sql.SQL(" AND ").join(conditions)
    if plan is None:
        relation: sql.Composable = sql.Identifier("candles")
    elif plan.continuous:
        relation = sql.Identifier(plan.derived.view)
    else:
        # Source rows of whole buckets only: from the bucket of start_ms to that of end_ms.
        raw = [sql.SQL("market = %s AND symbol = %s")]
        raw_params: list[object] = [key.market, key.symbol]
        if start_ms is not None:
            raw.append(sql.SQL("time >= %s"))
            raw_params.append(ms_to_datetime(plan.derived.floor(start_ms)))
        if end_ms is not None:
            raw.append(sql.SQL("time < %s"))
            raw_params.append(ms_to_datetime(plan.derived.ceil(end_ms)))
        relation = sql.SQL("({}) AS derived").format(
            aggregate_sql(plan, sql.SQL(" AND ").join(raw))
        )
        params = raw_params + params
    numbers = sql.SQL(", ").join(
        sql.SQL("{}::text").format(sql.Identifier(c))
        for c in ("open", "high", "low", "close", "volume", "quote_volume")
    )
    query = sql.SQL(
        "SELECT market, symbol, interval, (extract(epoch FROM time) * 1000)::bigint,"
        " (extract(epoch FROM close_time) * 1000000)::bigint, {numbers}, trades,"
        " taker_buy_volume::text, taker_buy_quote_volume::text, {source}"
        " FROM {relation} WHERE {where} ORDER BY time {order}"
    ).format(
        source=sql.SQL("source" if plan is None else "'derived'::text"),
        numbers=numbers,
        relation=relation,
        where=where,
        order=sql.SQL("DESC" if descending else "ASC"),
    )
    if limit is not None:
        query = sql.SQL("{} LIMIT {}").format(query, sql.Literal(int(limit)))
    return query, tuple(params)


def row_to_candle(row: Sequence[object]) -> Candle:
    """A row of ``select_candles`` as a ``Candle``."""
    market, symbol, interval, t, close_us, o, h, lo, c, v, qv, n, tbv, tbqv, source = row
    return Candle(
        str(symbol),
        str(interval),
        int(t),  # type: ignore[call-overload]
        int(close_us),  # type: ignore[call-overload]
        str(o),
        str(h),
        str(lo),
        str(c),
        str(v),
        str(qv),
        int(n),  # type: ignore[call-overload]
        str(tbv),
        str(tbqv),
        str(source),
        str(market),
    )


def read_candles(
    conn: Conn,
    key: StreamKey,
    start_ms: int | None = None,
    end_ms: int | None = None,
    *,
    limit: int | None = None,
    descending: bool = False,
) -> list[Candle]:
    """The candles of ``key`` in ``[start_ms, end_ms)``, oldest first (newest first with
    ``descending``): stored ones, or a derived view's buckets (with source ``"derived"``).
    What the HTTP API serves for any interval, collected or derived."""
    query, params = select_candles(conn, key, start_ms, end_ms, limit=limit, descending=descending)
    return [row_to_candle(row) for row in conn.execute(query, params).fetchall()]
