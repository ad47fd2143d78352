"""The HTTP side of the REST client (``binance.rest``): the ``httpx`` client it is handed, and
how one of Binance's answers is read.

``make_http_client`` builds that client. The helpers turn an answer into what the REST client
acts on: a decoded body (or ``ExchangeError``), a header as an integer, how long a 418 ban lasts
and until when (``Retry-After``, the body's ``IP banned until ...`` and the ``Date`` header), and
the domain error an answer stands for. No Trio and no weight accounting here: waiting, retrying
and the shared budget stay in ``binance.rest``.
"""

from __future__ import annotations

import importlib.metadata
import ssl
from collections.abc import Sequence
from email.utils import parsedate_to_datetime
from typing import TypeVar

import httpx
import msgspec

from klinetrio.binance.wire import api_error_decoder
from klinetrio.core.models import datetime_to_ms, format_ms
from klinetrio.core.weights import DEFAULT_BAN_WAIT, parse_banned_until_ms, parse_retry_after
from klinetrio.errors import ExchangeError, UnknownSymbol

_UNKNOWN_SYMBOL_CODE = -1121

_T = TypeVar("_T")


def make_http_client(
    *,
    ssl_context: ssl.SSLContext | bool = True,
    connect_timeout: float = 10.0,
    read_timeout: float = 30.0,
    max_connections: int = 10,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` fit for ``binance.rest.RestClient`` (use it as ``async with``).

    The timeouts bound each attempt; a stalled exchange then becomes ``ExchangeUnavailable``
    and is retried, instead of hanging a task. Pass the process's ``ssl_context`` (see
    ``net.tls``) from async code: with ``True`` httpx builds one itself, blocking for a while.
    """
    try:
        version = importlib.metadata.version("klinetrio")
    except importlib.metadata.PackageNotFoundError:
        version = "0"
    return httpx.AsyncClient(
        timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        headers={"User-Agent": f"klinetrio/{version}", "Accept": "application/json"},
        follow_redirects=False,
        verify=ssl_context,
    )


def decode_body(decoder: msgspec.json.Decoder[_T], body: bytes, path: str) -> _T:
    try:
        return decoder.decode(body)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise ExchangeError(f"malformed response from {path}: {exc}") from exc


def header_int(response: httpx.Response, name: str) -> int | None:
    value = response.headers.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def ban_duration(response: httpx.Response) -> tuple[float, str]:
    """How long a 418 ban lasts, in seconds, and until when, for people to read.

    ``Retry-After`` gives the length; the body names the moment (``IP banned until
    1660090423228``), which the ``Date`` header relates to the length when the former is
    missing.
    """
    until_ms = _ban_until_ms(response)
    server_ms = _date_header_ms(response)
    wait = parse_retry_after(response.headers.get("Retry-After"))
    if wait is None and until_ms is not None and server_ms is not None:
        wait = max(0.0, (until_ms - server_ms) / 1000)
    if wait is None:
        wait = DEFAULT_BAN_WAIT
    if until_ms is None and server_ms is not None:
        until_ms = server_ms + round(wait * 1000)
    return wait, format_ms(until_ms) if until_ms is not None else "an unknown time"


def _ban_until_ms(response: httpx.Response) -> int | None:
    try:
        error = api_error_decoder.decode(response.content)
    except msgspec.DecodeError:
        return None
    return parse_banned_until_ms(error.msg)


def _date_header_ms(response: httpx.Response) -> int | None:
    value = response.headers.get("Date")
    if value is None:
        return None
    try:
        return datetime_to_ms(parsedate_to_datetime(value))
    except (TypeError, ValueError):
        return None


def api_error(response: httpx.Response, path: str, symbols: Sequence[str]) -> ExchangeError:
    try:
        error = api_error_decoder.decode(response.content)
    except msgspec.DecodeError:
        text = response.text[:200].strip() or response.reason_phrase
        return ExchangeError(f"{path} answered HTTP {response.status_code}: {text}")
    if error.code == _UNKNOWN_SYMBOL_CODE:
        if len(symbols) == 1:
            return UnknownSymbol(f"unknown symbol {symbols[0]}")
        return UnknownSymbol(f"unknown symbol among {', '.join(symbols) or 'the request'}")
    return ExchangeError(
        f"{path} answered HTTP {response.status_code}: {error.msg} (code {error.code})"
    )
