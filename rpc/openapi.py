"""The OpenAPI 3.0 document of the indexer's HTTP API, as data (served at /v1/openapi.json).

It is the reference for every route, parameter, response and error; the WebSocket protocol
is described in ``info.description`` and its message shapes in ``components.schemas``
(``Ws*``). Market path parameters enumerate the chain's markets. Tests validate live
responses against it (schemathesis).
"""

from __future__ import annotations

from typing import Any

from rpc.candles import INTERVALS
from stf.config import ChainConfig

DECIMAL = {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$", "description": "exact decimal string"}
UINT = {"type": "integer", "minimum": 0}
HEX32 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
ADDRESS = {"type": "string", "pattern": "^0x[0-9a-f]{40}$"}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


def obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
    }


def array(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


WS_DESCRIPTION = """\
WebSocket `/v1/ws` (JSON text frames). Requests: `{"op":"subscribe","channel":C,...}`,
`{"op":"unsubscribe","channel":C,...}`, `{"op":"ping"}` (-> `{"type":"pong"}`); an optional
`"id"` (string or integer) is echoed. Channels and their keys: `book` (market), `trades`
(market), `candles` (market, interval), `markets`, `blocks`, `account` (address).
A subscription starts with `{"type":"snapshot","seq":S,...}`; updates follow with
`"seq"` and `"prev_seq"` (= previous seq of the same topic; the first update after a
snapshot has `prev_seq` = the snapshot's seq). `seq` counts updates per topic; for `book`
it counts book updates per market and is shared with `GET /v1/markets/{market}/book`.
Book updates carry changed levels; size "0" deletes a level. `checksum` = CRC-32 (zlib,
unsigned) of the UTF-8 string of the top 25 levels interleaved
`bid_px:bid_sz:ask_px:ask_sz:...` (a missing side at an index skipped), prices and sizes
exactly as sent. Every update carries `height` and the block's `time_ms`. Errors:
`{"type":"error","code":...,"message":...}` with codes bad_json, bad_request, unknown_op,
unknown_channel, unknown_market, bad_interval, bad_address, already_subscribed,
not_subscribed, too_many_subscriptions, binary_not_supported, not_ready. A client whose
send queue overflows gets fresh snapshots (`"resync": true`) and after repeated overflows a
close (1008 "slow consumer"); frames above the size limit close with 1009; too many
requests close with 1008 "rate limit"; a full server answers the upgrade with HTTP 429.
Server heartbeats: `{"type":"heartbeat","height":H,"time_ms":T}` and protocol pings.
"""


def schemas() -> dict[str, Any]:
    level = {"type": "array", "items": DECIMAL, "minItems": 2, "maxItems": 2}
    tx_result: dict[str, Any] = {
        "type": "object",
        "properties": {
            "code": UINT,
            "status": {"type": "string"},
            "reason": {"type": "string"},
            "order_id": UINT,
            "items": array(ref("TxResult")),
        },
        "required": ["code", "status"],
    }
    market = obj(
        {
            "symbol": {"type": "string"},
            "market_id": UINT,
            "price_decimals": UINT,
            "size_decimals": UINT,
            "tick_size": DECIMAL,
            "lot_size": DECIMAL,
            "min_size": DECIMAL,
            "initial_margin_fraction": DECIMAL,
            "maintenance_margin_fraction": DECIMAL,
            "max_leverage": UINT,
            "maker_fee": DECIMAL,
            "taker_fee": DECIMAL,
            "funding_interval_ms": UINT,
            "funding_cap": DECIMAL,
            "interest_rate": DECIMAL,
            "price_band": DECIMAL,
            "halted": {"type": "boolean"},
            "oracle_price": DECIMAL,
            "mark_price": DECIMAL,
            "best_bid": nullable(DECIMAL),
            "best_ask": nullable(DECIMAL),
            "funding_rate": DECIMAL,
            "next_funding_ms": UINT,
            "open_interest": DECIMAL,
        }
    )
    trade = obj(
        {
            "trade_id": UINT,
            "market": {"type": "string"},
            "price": DECIMAL,
            "size": DECIMAL,
            "side": {"type": "string", "enum": ["buy", "sell"]},
            "height": UINT,
            "time_ms": UINT,
            "taker_order_id": UINT,
            "maker_order_id": UINT,
            "taker": ADDRESS,
            "maker": ADDRESS,
        }
    )
    candle = obj(
        {
            "start_ms": UINT,
            "end_ms": UINT,
            "open": DECIMAL,
            "high": DECIMAL,
            "low": DECIMAL,
            "close": DECIMAL,
            "volume": DECIMAL,
            "quote_volume": DECIMAL,
            "trades": UINT,
        }
    )
    order = obj(
        {
            "order_id": UINT,
            "market": {"type": "string"},
            "account": ADDRESS,
            "side": {"type": "string", "enum": ["buy", "sell"]},
            "price": DECIMAL,
            "size": DECIMAL,
            "remaining": DECIMAL,
            "filled": DECIMAL,
            "status": {"type": "string", "enum": ["open", "filled", "cancelled"]},
            "time_in_force": {"type": "string", "enum": ["gtc", "ioc", "post_only"]},
            "reduce_only": {"type": "boolean"},
            "client_order_id": {"type": "string"},
            "height": UINT,
            "reason": {"type": "string"},
        },
        [
            "order_id",
            "market",
            "account",
            "side",
            "price",
            "size",
            "remaining",
            "filled",
            "status",
            "time_in_force",
            "reduce_only",
            "client_order_id",
            "height",
        ],
    )
    fill = obj(
        {
            "trade_id": UINT,
            "order_id": UINT,
            "market": {"type": "string"},
            "side": {"type": "string", "enum": ["buy", "sell"]},
            "price": DECIMAL,
            "size": DECIMAL,
            "fee": DECIMAL,
            "liquidity": {"type": "string", "enum": ["taker", "maker"]},
            "height": UINT,
            "time_ms": UINT,
        }
    )
    position = obj(
        {
            "market": {"type": "string"},
            "size": DECIMAL,
            "entry_price": nullable(DECIMAL),
            "open_notional": DECIMAL,
            "unrealized_pnl": DECIMAL,
            "liquidation_price": nullable(DECIMAL),
        }
    )
    balance = {
        "collateral": DECIMAL,
        "equity": DECIMAL,
        "margin_used": DECIMAL,
        "maintenance": DECIMAL,
        "available": DECIMAL,
    }
    account = obj(
        {
            "height": UINT,
            "address": ADDRESS,
            "exists": {"type": "boolean"},
            **balance,
            "positions": array(ref("Position")),
        }
    )
    block = obj(
        {
            "height": UINT,
            "time_ms": UINT,
            "block_id": HEX32,
            "proposer": {"type": "string"},
            "last_block_id": {"type": "string", "pattern": "^([0-9a-f]{64})?$"},
            "app_hash": HEX32,
            "num_txs": UINT,
            "txs": array(obj({"hash": HEX32, "code": UINT, "status": {"type": "string"}})),
        }
    )
    tx = obj(
        {
            "hash": HEX32,
            "height": UINT,
            "index": UINT,
            "time_ms": UINT,
            "sender": nullable(ADDRESS),
            "action": nullable({"type": "string"}),
            "nonce": nullable(UINT),
            "result": ref("TxResult"),
        }
    )
    nxt = nullable(UINT)
    return {
        "Error": obj({"error": obj({"code": {"type": "string"}, "message": {"type": "string"}})}),
        "Level": level,
        "TxResult": tx_result,
        "Market": market,
        "MarketResponse": {"allOf": [ref("Market"), obj({"height": UINT})]},
        "MarketList": obj({"height": UINT, "markets": array(ref("Market"))}),
        "Book": obj(
            {
                "market": {"type": "string"},
                "height": UINT,
                "seq": UINT,
                "bids": array(ref("Level")),
                "asks": array(ref("Level")),
                "checksum": {"type": "integer", "minimum": 0, "maximum": 4294967295},
            }
        ),
        "Trade": trade,
        "TradeList": obj(
            {"market": {"type": "string"}, "height": UINT, "trades": array(ref("Trade")), "next": nxt}
        ),
        "Candle": candle,
        "CandleList": obj(
            {
                "market": {"type": "string"},
                "interval": {"type": "string", "enum": list(INTERVALS)},
                "height": UINT,
                "candles": array(ref("Candle")),
                "next": nxt,
            }
        ),
        "Funding": obj(
            {
                "height": UINT,
                "time_ms": UINT,
                "rate": DECIMAL,
                "index": {"type": "string", "pattern": "^-?[0-9]+$"},
            }
        ),
        "FundingList": obj(
            {"market": {"type": "string"}, "height": UINT, "funding": array(ref("Funding")), "next": nxt}
        ),
        "Position": position,
        "Account": account,
        "Order": order,
        "OrderList": obj({"address": ADDRESS, "height": UINT, "orders": array(ref("Order")), "next": nxt}),
        "OrderResponse": obj({"height": UINT, "order": ref("Order")}),
        "Fill": fill,
        "FillList": obj({"address": ADDRESS, "height": UINT, "fills": array(ref("Fill")), "next": nxt}),
        "Block": block,
        "Tx": tx,
        "SubmitTxRequest": obj(
            {"tx": {"type": "string", "format": "byte", "description": "base64 SignedTx"}}
        ),
        "SubmitTxResponse": obj(
            {
                "hash": HEX32,
                "accepted": {"type": "boolean"},
                "code": UINT,
                "status": {"type": "string"},
                "reason": {"type": "string"},
            }
        ),
        "Status": obj(
            {
                "chain_id": {"type": "string"},
                "ready": {"type": "boolean"},
                "height": nullable(UINT),
                "time_ms": nullable(UINT),
                "app_hash": nullable(HEX32),
                "block_id": nullable(HEX32),
                "halted": nullable({"type": "string"}),
                "node": obj(
                    {
                        "address": {"type": "string"},
                        "connected": {"type": "boolean"},
                        "height": nullable(UINT),
                        "lag_blocks": nullable(UINT),
                        "seconds_since_block": {"type": "number", "minimum": 0},
                        "last_error": {"type": "string"},
                        "reconnects": UINT,
                    }
                ),
                "ws": obj({"connections": UINT, "subscriptions": UINT}),
                "snapshot_height": nullable(UINT),
            }
        ),
        "Health": obj({"ok": {"type": "boolean"}, "reason": {"type": "string"}, "height": nullable(UINT)}),
        "WsBookSnapshot": obj(
            {
                "channel": {"type": "string", "enum": ["book"]},
                "market": {"type": "string"},
                "type": {"type": "string", "enum": ["snapshot"]},
                "height": UINT,
                "time_ms": UINT,
                "seq": UINT,
                "bids": array(ref("Level")),
                "asks": array(ref("Level")),
                "checksum": UINT,
            }
        ),
        "WsBookUpdate": obj(
            {
                "channel": {"type": "string", "enum": ["book"]},
                "market": {"type": "string"},
                "type": {"type": "string", "enum": ["update"]},
                "height": UINT,
                "time_ms": UINT,
                "seq": UINT,
                "prev_seq": UINT,
                "bids": array(ref("Level")),
                "asks": array(ref("Level")),
                "checksum": UINT,
            }
        ),
        "WsError": obj(
            {
                "type": {"type": "string", "enum": ["error"]},
                "code": {"type": "string"},
                "message": {"type": "string"},
            }
        ),
    }


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def responses(ok: str, *errors: int, description: str = "OK") -> dict[str, Any]:
    out: dict[str, Any] = {"200": {"description": description, **json_content(ref(ok))}}
    texts = {400: "Bad request", 404: "Not found", 413: "Too large", 503: "Not ready / node unavailable"}
    for status in errors:
        out[str(status)] = {"description": texts[status], **json_content(ref("Error"))}
    return out


def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def path(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def openapi_document(config: ChainConfig) -> dict[str, Any]:
    market = path("market", {"type": "string", "enum": [m.symbol for m in config.markets]})
    address = path("address", {"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$"})
    limit = query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "page size")
    cursor = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
    before = query("before", cursor, "exclusive cursor: the `next` of the previous page")

    def get(summary: str, params: list[dict[str, Any]], ok: str, *errors: int) -> dict[str, Any]:
        return {"get": {"summary": summary, "parameters": params, "responses": responses(ok, *errors)}}

    paths: dict[str, Any] = {
        "/v1/markets": get(
            "Every market: spec, oracle, mark, funding rate, open interest", [], "MarketList", 503
        ),
        "/v1/markets/{market}": get("One market", [market], "MarketResponse", 404, 503),
        "/v1/markets/{market}/book": get(
            "Order book snapshot (seq shared with the WebSocket book channel)",
            [
                market,
                query(
                    "depth",
                    {"type": "integer", "minimum": 1, "maximum": 10000},
                    "levels per side (default: all)",
                ),
            ],
            "Book",
            400,
            404,
            503,
        ),
        "/v1/markets/{market}/trades": get(
            "Trades, newest first", [market, limit, before], "TradeList", 400, 404, 503
        ),
        "/v1/markets/{market}/candles": get(
            "Candles, oldest first, the `limit` most recent before `end`",
            [
                market,
                query("interval", {"type": "string", "enum": list(INTERVALS), "default": "1m"}, "interval"),
                limit,
                query("end", cursor, "exclusive end (candle start, ms)"),
            ],
            "CandleList",
            400,
            404,
            503,
        ),
        "/v1/markets/{market}/funding": get(
            "Funding payments, newest first", [market, limit, before], "FundingList", 400, 404, 503
        ),
        "/v1/accounts/{address}": get(
            "Collateral, equity, margin, positions", [address], "Account", 400, 503
        ),
        "/v1/accounts/{address}/orders": get(
            "Open orders (status=open, from state) or every order (status=all, history), newest first",
            [
                address,
                query("status", {"type": "string", "enum": ["open", "all"], "default": "open"}, "which"),
                limit,
                before,
            ],
            "OrderList",
            400,
            503,
        ),
        "/v1/accounts/{address}/fills": get(
            "Fills, newest first", [address, limit, before], "FillList", 400, 503
        ),
        "/v1/orders/{order_id}": get(
            "One order's latest status",
            [path("order_id", {"type": "integer", "minimum": 0, "maximum": 2**63 - 1})],
            "OrderResponse",
            400,
            404,
            503,
        ),
        "/v1/blocks/{height}": get(
            "A block with its transactions' result codes",
            [path("height", {"type": "string", "pattern": "^(latest|[1-9][0-9]{0,18})$"})],
            "Block",
            400,
            404,
            503,
        ),
        "/v1/txs/{hash}": get(
            "A committed transaction and its result",
            [path("hash", {"type": "string", "pattern": "^(0x)?[0-9a-fA-F]{64}$"})],
            "Tx",
            400,
            404,
            503,
        ),
        "/v1/txs": {
            "post": {
                "summary": "Forward a signed transaction to the node; answers with its admission verdict",
                "parameters": [
                    {
                        "name": "traceparent",
                        "in": "header",
                        "required": False,
                        "description": (
                            "W3C trace context: with tracing on, the tx's spans (here, in the node, "
                            "and its tx.indexed here) continue this trace; ignored when malformed"
                        ),
                        "schema": {"type": "string"},
                    }
                ],
                "requestBody": {"required": True, **json_content(ref("SubmitTxRequest"))},
                "responses": responses("SubmitTxResponse", 400, 413, 503),
            }
        },
        "/v1/status": {"get": {"summary": "Indexer and node status, lag", "responses": responses("Status")}},
        "/healthz": {
            "get": {
                "summary": "200 when serving a verified state and following the node",
                "responses": {
                    "200": {"description": "healthy", **json_content(ref("Health"))},
                    "503": {
                        "description": "not ready, halted or not following",
                        **json_content(ref("Health")),
                    },
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (ita_indexer_*)",
                "responses": {
                    "200": {
                        "description": "text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/v1/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.0", **json_content({"type": "object"})}},
            }
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": f"ita indexer ({config.chain_id})", "version": "1", "description": WS_DESCRIPTION},
        "paths": paths,
        "components": {"schemas": schemas()},
    }
