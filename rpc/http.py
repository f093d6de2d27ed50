"""The indexer's HTTP API (aiohttp + orjson): DESIGN.md's endpoints, errors as JSON.

Every handler reads the reducer's state and the history store synchronously on the event
loop, so a response reflects exactly one height (the ``height`` field). Bad input is a 4xx
``{"error": {"code", "message"}}``; routes that do not exist and wrong methods get the same
envelope; an unexpected exception is logged and answered with a bare 500 envelope (no stack
trace ever leaves the process). ``rpc/openapi.py`` documents every route and error.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Mapping
from typing import Any, NoReturn, Protocol

import orjson
from aiohttp import web

from rpc.candles import INTERVALS
from rpc.history import History
from rpc.metrics import CONTENT_TYPE_LATEST, IndexerMetrics
from rpc.openapi import openapi_document
from rpc.reducer import IndexerState
from rpc.source import SourceUnavailable, SubmitVerdict
from rpc.topics import book_snapshot
from rpc.views import account_view, market_view, open_orders_view
from rpc.ws import Hub
from stf.block import MAX_TX_BYTES
from stf.config import ChainConfig

log = logging.getLogger("ita.indexer.http")

MAX_LIMIT = 1_000
DEFAULT_LIMIT = 100
MAX_DEPTH = 10_000
MAX_BODY_BYTES = 256 * 1024
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_HASH = re.compile(r"(0x)?[0-9a-fA-F]{64}")
_UINT = re.compile(r"[0-9]{1,19}")
METRICS_KEY = web.AppKey("metrics", IndexerMetrics)


class Backend(Protocol):
    """What the HTTP app needs from the running indexer (rpc.service.Indexer)."""

    config: ChainConfig
    history: History
    metrics: IndexerMetrics
    hub: Hub

    @property
    def state(self) -> IndexerState | None: ...

    def status(self) -> dict[str, Any]: ...

    def healthy(self) -> tuple[bool, str]: ...

    async def submit_tx(self, tx: bytes, trace: Mapping[str, str] | None = None) -> SubmitVerdict: ...


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def error_response(status: int, code: str, message: str) -> web.Response:
    return json_response({"error": {"code": code, "message": message}}, status)


def fail(status: int, code: str, message: str) -> NoReturn:
    raise ApiError(status, code, message)


# -- parameters --------------------------------------------------------------------------------


def query_int(request: web.Request, name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    if _UINT.fullmatch(raw) is None or not low <= int(raw) <= high:
        fail(400, "bad_parameter", f"{name} must be an integer in {low}..{high}")
    return int(raw)


def limit_param(request: web.Request) -> int:
    value = query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    assert value is not None
    return value


def address_param(request: web.Request) -> bytes:
    text = request.match_info["address"]
    if _ADDRESS.fullmatch(text) is None:
        fail(400, "bad_address", "an address is 0x followed by 40 hex digits")
    return bytes.fromhex(text[2:])


class Api:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.config = backend.config

    def state(self) -> IndexerState:
        state = self.backend.state
        if state is None:
            fail(503, "not_ready", "the indexer has not verified a state yet")
        return state

    def market_id(self, request: web.Request) -> int:
        symbol = request.match_info["market"]
        spec = self.config.market_by_symbol.get(symbol)
        if spec is None:
            fail(404, "unknown_market", f"unknown market {symbol[:40]!r}")
        return spec.market_id

    # -- markets ------------------------------------------------------------------------------
    async def markets(self, request: web.Request) -> web.Response:
        state = self.state()
        views = [market_view(m, state.open_interest[m.spec.market_id]) for m in state.stf.markets]
        return json_response({"height": state.height, "markets": views})

    async def market(self, request: web.Request) -> web.Response:
        market_id = self.market_id(request)
        state = self.state()
        view = market_view(state.stf.markets[market_id], state.open_interest[market_id])
        return json_response({"height": state.height, **view})

    async def book(self, request: web.Request) -> web.Response:
        market_id = self.market_id(request)
        depth = query_int(request, "depth", None, 1, MAX_DEPTH)
        state = self.state()
        return json_response(book_snapshot(state, self.config.markets[market_id].symbol, depth))

    async def trades(self, request: web.Request) -> web.Response:
        market_id = self.market_id(request)
        limit = limit_param(request)
        before = query_int(request, "before", None, 0, 2**63 - 1)
        state = self.state()
        items = self.backend.history.trades(market_id, limit, before)
        nxt = items[-1]["trade_id"] if len(items) == limit else None
        return json_response(
            {
                "market": self.config.markets[market_id].symbol,
                "height": state.height,
                "trades": items,
                "next": nxt,
            }
        )

    async def candles(self, request: web.Request) -> web.Response:
        market_id = self.market_id(request)
        interval = request.query.get("interval", "1m")
        if interval not in INTERVALS:
            fail(400, "bad_interval", f"interval must be one of {', '.join(INTERVALS)}")
        limit = limit_param(request)
        end = query_int(request, "end", None, 0, 2**63 - 1)
        state = self.state()
        items = self.backend.history.candles(market_id, interval, limit, end)
        nxt = items[0]["start_ms"] if len(items) == limit else None
        body = {"market": self.config.markets[market_id].symbol, "interval": interval, "height": state.height}
        return json_response({**body, "candles": items, "next": nxt})

    async def funding(self, request: web.Request) -> web.Response:
        market_id = self.market_id(request)
        limit = limit_param(request)
        before = query_int(request, "before", None, 0, 2**63 - 1)
        state = self.state()
        items = self.backend.history.funding(market_id, limit, before)
        nxt = items[-1]["height"] if len(items) >= limit else None
        market = state.stf.markets[market_id]
        body = {"market": market.spec.symbol, "height": state.height}
        return json_response({**body, "funding": items[:limit], "next": nxt})

    # -- accounts -----------------------------------------------------------------------------
    async def account(self, request: web.Request) -> web.Response:
        address = address_param(request)
        state = self.state()
        return json_response(account_view(state.stf, address))

    async def orders(self, request: web.Request) -> web.Response:
        address = address_param(request)
        status = request.query.get("status", "open")
        if status not in ("open", "all"):
            fail(400, "bad_parameter", "status must be open or all")
        limit = limit_param(request)
        before = query_int(request, "before", None, 0, 2**63 - 1)
        state = self.state()
        body: dict[str, Any] = {"address": "0x" + address.hex(), "height": state.height}
        if status == "open":
            account = state.stf.accounts.get(address)
            items = open_orders_view(state.stf, account, state.height) if account is not None else []
            items.sort(key=lambda o: o["order_id"], reverse=True)
            if before is not None:
                items = [o for o in items if o["order_id"] < before]
            items = items[:limit]
        else:
            items = self.backend.history.orders(address, limit, before)
        nxt = items[-1]["order_id"] if len(items) == limit else None
        return json_response({**body, "orders": items, "next": nxt})

    async def fills(self, request: web.Request) -> web.Response:
        address = address_param(request)
        limit = limit_param(request)
        before = query_int(request, "before", None, 0, 2**63 - 1)
        state = self.state()
        items = self.backend.history.fills(address, limit, before)
        nxt = items[-1]["trade_id"] if len(items) == limit else None
        return json_response(
            {"address": "0x" + address.hex(), "height": state.height, "fills": items, "next": nxt}
        )

    async def order(self, request: web.Request) -> web.Response:
        raw = request.match_info["order_id"]
        if _UINT.fullmatch(raw) is None or int(raw) >= 2**64:
            fail(400, "bad_parameter", "order_id must be an unsigned integer")
        state = self.state()
        record = self.backend.history.order(int(raw))
        if record is None:
            fail(404, "order_not_found", f"no order {raw}")
        return json_response({"height": state.height, "order": record})

    # -- chain --------------------------------------------------------------------------------
    async def block(self, request: web.Request) -> web.Response:
        raw = request.match_info["height"]
        state = self.state()
        if raw == "latest":
            height = state.height
        elif _UINT.fullmatch(raw) is not None and int(raw) >= 1:
            height = int(raw)
        else:
            fail(400, "bad_parameter", 'height must be a positive integer or "latest"')
        record = self.backend.history.block(height) if 1 <= height <= state.height else None
        if record is None:
            fail(404, "block_not_found", f"no indexed block at height {height}")
        return json_response(record)

    async def tx(self, request: web.Request) -> web.Response:
        raw = request.match_info["hash"]
        if _HASH.fullmatch(raw) is None:
            fail(400, "bad_hash", "a tx hash is 64 hex digits")
        self.state()
        record = self.backend.history.tx(bytes.fromhex(raw.removeprefix("0x")))
        if record is None:
            fail(404, "tx_not_found", "no committed transaction with this hash has been indexed")
        return json_response(record)

    async def submit(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            fail(400, "bad_json", "the body is not valid JSON")
        if not isinstance(body, dict) or not isinstance(body.get("tx"), str):
            fail(400, "bad_request", 'expected {"tx": "<base64 SignedTx>"}')
        try:
            tx = base64.b64decode(body["tx"], validate=True)
        except (binascii.Error, ValueError):
            fail(400, "bad_tx", "tx must be standard base64")
        if not tx:
            fail(400, "bad_tx", "tx is empty")
        if len(tx) > MAX_TX_BYTES:
            fail(413, "tx_too_large", f"a transaction is at most {MAX_TX_BYTES} bytes")
        try:
            trace = {k: request.headers[k] for k in ("traceparent", "tracestate") if k in request.headers}
            verdict = await self.backend.submit_tx(tx, trace)
        except SourceUnavailable as exc:
            fail(503, "node_unavailable", str(exc))
        return json_response(
            {
                "hash": verdict.hash.hex(),
                "accepted": verdict.accepted,
                "code": verdict.code,
                "status": verdict.status,
                "reason": verdict.reason,
            }
        )

    async def status(self, request: web.Request) -> web.Response:
        return json_response(self.backend.status())

    async def healthz(self, request: web.Request) -> web.Response:
        ok, reason = self.backend.healthy()
        state = self.backend.state
        body = {"ok": ok, "reason": reason, "height": state.height if state is not None else None}
        return json_response(body, 200 if ok else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.backend.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def openapi(self, request: web.Request) -> web.Response:
        return json_response(openapi_document(self.config))


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    metrics = request.app[METRICS_KEY]
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    try:
        response: web.StreamResponse = await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
            exc.status, "http_error"
        )
        response = error_response(exc.status, code, exc.reason)
    except Exception:  # noqa: BLE001 - the last line of defence: log it, never leak a trace
        log.exception("unhandled error serving %s %s", request.method, request.path)
        response = error_response(500, "internal", "internal error")
    metrics.http_requests.labels(route, str(response.status)).inc()
    return response


def make_app(backend: Backend) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_BODY_BYTES)
    app[METRICS_KEY] = backend.metrics
    api = Api(backend)
    r = app.router
    r.add_get("/v1/markets", api.markets)
    r.add_get("/v1/markets/{market}", api.market)
    r.add_get("/v1/markets/{market}/book", api.book)
    r.add_get("/v1/markets/{market}/trades", api.trades)
    r.add_get("/v1/markets/{market}/candles", api.candles)
    r.add_get("/v1/markets/{market}/funding", api.funding)
    r.add_get("/v1/accounts/{address}", api.account)
    r.add_get("/v1/accounts/{address}/orders", api.orders)
    r.add_get("/v1/accounts/{address}/fills", api.fills)
    r.add_get("/v1/orders/{order_id}", api.order)
    r.add_get("/v1/blocks/{height}", api.block)
    r.add_get("/v1/txs/{hash}", api.tx)
    r.add_post("/v1/txs", api.submit)
    r.add_get("/v1/status", api.status)
    r.add_get("/v1/openapi.json", api.openapi)
    r.add_get("/v1/ws", backend.hub.serve)
    r.add_get("/healthz", api.healthz)
    r.add_get("/metrics", api.metrics)
    return app
