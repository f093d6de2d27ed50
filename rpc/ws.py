"""WebSocket hub: subscriptions, encode-once fan-out, bounded per-client queues.

Theory of operation
- Everything runs on the indexer's one event loop. ``publish(updates)`` is synchronous:
  the service calls it right after the reducer applied a block and before it awaits
  anything, and a subscribe request builds its snapshot synchronously from the same
  state. So for every topic a client gets its snapshot (seq S) and then exactly the
  updates S+1, S+2, ... -- no gap, no duplicate -- by construction.
- Fan-out: an update is encoded once (orjson) per topic that has subscribers; the same
  bytes object is queued for every subscriber; nothing is encoded for unwatched topics.
- Each client has a bounded queue (messages and bytes) drained by its own writer task.
  A client whose queue would overflow is "slow": it receives nothing more of the current
  block; once the block is published, its queue is dropped and replaced by a fresh snapshot
  of each of its topics (``"resync": true``, seq continues from the current value), so it
  is consistent again. After ``max_resyncs`` resyncs it is closed with code 1008 and the
  reason ``slow consumer``. Memory per client is therefore bounded.
- Requests: subscribe, unsubscribe, ping (-> pong). Bad requests get a typed
  ``{"type":"error","code":...}`` and the connection stays; frames above
  ``max_message_bytes`` close it (1009), as does a request rate above the token bucket
  (1008 ``rate limit``). Connections above ``max_connections`` are refused with HTTP 429.
  Server heartbeats: a ``{"type":"heartbeat"}`` message every ``heartbeat_s`` and protocol
  pings (aiohttp ``heartbeat``) that close dead peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from rpc.metrics import IndexerMetrics
from rpc.reducer import ChannelUpdate, IndexerState
from rpc.topics import TopicError, parse_topic, snapshot

log = logging.getLogger("ita.indexer.ws")

CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_GOING_AWAY = 1001


@dataclass(frozen=True, slots=True)
class WsLimits:
    max_connections: int = 10_000
    max_subscriptions: int = 100  # per connection
    max_message_bytes: int = 4_096  # inbound frame
    queue_messages: int = 4_096  # per connection
    queue_bytes: int = 16 * 1024 * 1024  # per connection
    max_resyncs: int = 3  # per connection, then close as slow consumer
    heartbeat_s: float = 15.0
    ping_s: float = 30.0  # protocol-level ping interval (dead peer detection)
    ops_burst: int = 200  # token bucket of requests per connection
    ops_per_s: float = 50.0
    writer_limit: int = 64 * 1024  # bytes buffered in the transport before a send waits
    socket_send_buffer: int | None = None  # SO_SNDBUF per connection (None: the OS default)
    close_timeout_s: float = 2.0  # a closing peer that does not take the close frame is aborted


class Client:
    __slots__ = (
        "ws",
        "transport",
        "queue",
        "queued_bytes",
        "wake",
        "subs",
        "overflowed",
        "resyncs",
        "closing",
        "tokens",
        "refilled",
    )

    def __init__(self, ws: web.WebSocketResponse, burst: int, transport: asyncio.Transport | None) -> None:
        self.ws = ws
        self.transport = transport
        self.queue: deque[bytes] = deque()
        self.queued_bytes = 0
        self.wake = asyncio.Event()
        self.subs: dict[str, dict[str, Any]] = {}
        self.overflowed = False
        self.resyncs = 0
        self.closing = False
        self.tokens = float(burst)
        self.refilled = time.monotonic()

    def force(self, frame: bytes) -> None:
        self.queue.append(frame)
        self.queued_bytes += len(frame)
        self.wake.set()


class Hub:
    def __init__(
        self, limits: WsLimits, metrics: IndexerMetrics, get_state: Callable[[], IndexerState | None]
    ) -> None:
        self.limits = limits
        self.metrics = metrics
        self.get_state = get_state
        self.clients: dict[Client, None] = {}
        self.topics: dict[str, dict[Client, None]] = {}
        self.subscriptions = 0
        self._heartbeat: asyncio.Task[None] | None = None
        self.closed_reason: str | None = None

    # -- fan-out ----------------------------------------------------------------------------
    def push(self, client: Client, frame: bytes) -> bool:
        if client.closing:
            return True
        limits = self.limits
        if (
            len(client.queue) >= limits.queue_messages
            or client.queued_bytes + len(frame) > limits.queue_bytes
        ):
            client.overflowed = True
            return False
        client.force(frame)
        return True

    def publish(self, updates: list[ChannelUpdate]) -> None:
        """Queue each update for its topic's subscribers (synchronous; see module doc)."""
        slow: list[Client] = []
        topics = self.topics
        encoded = 0
        for update in updates:
            subscribers = topics.get(update.topic)
            if not subscribers:
                continue
            frame = orjson.dumps(update.materialize())
            encoded += 1
            for client in subscribers:
                if client.overflowed:
                    continue
                if not self.push(client, frame):
                    slow.append(client)
        if encoded:
            self.metrics.ws_encoded.inc(encoded)
        for client in slow:
            self.resync_or_close(client)

    def resync_or_close(self, client: Client) -> None:
        client.queue.clear()
        client.queued_bytes = 0
        client.overflowed = False
        if client.closing:
            return
        state = self.get_state()
        if client.resyncs >= self.limits.max_resyncs or state is None:
            self.metrics.slow_clients.labels("close").inc()
            self.close(client, CLOSE_POLICY, "slow consumer: send queue overflowed too often")
            return
        client.resyncs += 1
        self.metrics.slow_clients.labels("resync").inc()
        for topic, keys in client.subs.items():
            message = snapshot(state, topic, keys)
            message["resync"] = True
            client.force(orjson.dumps(message))

    def heartbeat(self) -> None:
        state = self.get_state()
        message: dict[str, Any] = {"type": "heartbeat", "time_ms": int(time.time() * 1000)}
        if state is not None:
            message["height"] = state.height
        frame = orjson.dumps(message)
        for client in list(self.clients):
            self.push(client, frame)
            client.overflowed = False  # a skipped heartbeat is harmless

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.limits.heartbeat_s)
            self.heartbeat()

    def start(self) -> None:
        if self._heartbeat is None:
            self._heartbeat = asyncio.create_task(self._heartbeat_loop(), name="ws-heartbeat")

    async def stop(self, code: int = CLOSE_GOING_AWAY, reason: str = "indexer shutting down") -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        self.closed_reason = reason
        for client in list(self.clients):
            self.close(client, code, reason)

    # -- requests ---------------------------------------------------------------------------
    def reply(self, client: Client, message: dict[str, Any]) -> None:
        if not self.push(client, orjson.dumps(message)):
            self.resync_or_close(client)

    def error(self, client: Client, code: str, message: str, request_id: Any = None) -> None:
        self.metrics.ws_errors.labels(code).inc()
        out: dict[str, Any] = {"type": "error", "code": code, "message": message}
        if request_id is not None:
            out["id"] = request_id
        self.reply(client, out)

    def take_token(self, client: Client) -> bool:
        now = time.monotonic()
        limits = self.limits
        client.tokens = min(
            float(limits.ops_burst), client.tokens + (now - client.refilled) * limits.ops_per_s
        )
        client.refilled = now
        if client.tokens < 1.0:
            return False
        client.tokens -= 1.0
        return True

    def handle_text(self, client: Client, data: str) -> None:
        if client.closing:
            return
        if not self.take_token(client):
            self.metrics.ws_errors.labels("rate_limited").inc()
            self.close(client, CLOSE_POLICY, "rate limit: too many requests")
            return
        try:
            request = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.error(client, "bad_json", "the message is not valid JSON")
            return
        if not isinstance(request, dict):
            self.error(client, "bad_request", 'a request is a JSON object with an "op"')
            return
        request_id = request.get("id")
        if not (request_id is None or isinstance(request_id, int | str) and len(str(request_id)) <= 64):
            request_id = None
        op = request.get("op")
        if op == "ping":
            pong: dict[str, Any] = {"type": "pong"}
            if request_id is not None:
                pong["id"] = request_id
            self.reply(client, pong)
        elif op in ("subscribe", "unsubscribe"):
            self.subscription(client, op, request, request_id)
        else:
            self.error(
                client,
                "unknown_op",
                f"unknown op {str(op)[:40]!r}; ops: subscribe, unsubscribe, ping",
                request_id,
            )

    def subscription(self, client: Client, op: str, request: dict[str, Any], request_id: Any) -> None:
        state = self.get_state()
        if state is None:
            self.error(
                client, "not_ready", "the indexer has not verified a state yet; retry shortly", request_id
            )
            return
        try:
            topic, keys = parse_topic(state, request)
        except TopicError as exc:
            self.error(client, exc.code, exc.message, request_id)
            return
        if op == "unsubscribe":
            if topic not in client.subs:
                self.error(client, "not_subscribed", f"not subscribed to {topic}", request_id)
                return
            self.remove(client, topic)
            ack: dict[str, Any] = {"type": "unsubscribed", "channel": request["channel"], **keys}
            if request_id is not None:
                ack["id"] = request_id
            self.reply(client, ack)
            return
        if topic in client.subs:
            self.error(client, "already_subscribed", f"already subscribed to {topic}", request_id)
            return
        if len(client.subs) >= self.limits.max_subscriptions:
            self.error(
                client,
                "too_many_subscriptions",
                f"at most {self.limits.max_subscriptions} subscriptions per connection",
                request_id,
            )
            return
        client.subs[topic] = keys
        self.topics.setdefault(topic, {})[client] = None
        self.subscriptions += 1
        self.metrics.ws_subscriptions.set(self.subscriptions)
        message = snapshot(state, topic, keys)
        if request_id is not None:
            message["id"] = request_id
        self.reply(client, message)

    def remove(self, client: Client, topic: str) -> None:
        del client.subs[topic]
        subscribers = self.topics.get(topic)
        if subscribers is not None:
            subscribers.pop(client, None)
            if not subscribers:
                del self.topics[topic]
        self.subscriptions -= 1
        self.metrics.ws_subscriptions.set(self.subscriptions)

    # -- connections ------------------------------------------------------------------------
    def close(self, client: Client, code: int, reason: str) -> None:
        if client.closing:
            return
        client.closing = True
        client.queue.clear()
        client.queued_bytes = 0
        client.wake.set()
        asyncio.get_running_loop().create_task(self._close(client, code, reason))

    async def _close(self, client: Client, code: int, reason: str) -> None:
        """Close politely; a peer that does not read (so the close frame cannot be flushed) is
        aborted after ``close_timeout_s``."""
        try:
            await asyncio.wait_for(
                client.ws.close(code=code, message=reason.encode()[:120]), self.limits.close_timeout_s
            )
        except (TimeoutError, ConnectionError, RuntimeError):
            if client.transport is not None:
                client.transport.abort()

    def disconnect(self, client: Client) -> None:
        for topic in list(client.subs):
            self.remove(client, topic)
        self.clients.pop(client, None)
        self.metrics.ws_connections.set(len(self.clients))

    async def pump(self, client: Client) -> None:
        ws = client.ws
        sent = self.metrics.ws_messages
        with contextlib.suppress(ConnectionError, RuntimeError, asyncio.CancelledError):
            while not client.closing:
                queue = client.queue
                while queue and not client.closing:
                    frame = queue.popleft()
                    client.queued_bytes -= len(frame)
                    await ws.send_frame(frame, WSMsgType.TEXT)
                    sent.inc()
                client.wake.clear()
                if not client.closing:
                    await client.wake.wait()

    async def serve(self, request: web.Request) -> web.StreamResponse:
        """aiohttp handler of GET /v1/ws."""
        limits = self.limits
        if self.closed_reason is not None:
            return _refuse(503, "unavailable", self.closed_reason)
        if len(self.clients) >= limits.max_connections:
            return _refuse(
                429, "too_many_connections", f"at most {limits.max_connections} WebSocket connections"
            )
        ws = web.WebSocketResponse(
            heartbeat=limits.ping_s,
            max_msg_size=limits.max_message_bytes,
            compress=False,
            autoping=True,
            writer_limit=limits.writer_limit,
        )
        if limits.socket_send_buffer is not None and request.transport is not None:
            sock = request.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, limits.socket_send_buffer)
        await ws.prepare(request)
        client = Client(ws, limits.ops_burst, request.transport)
        self.clients[client] = None
        self.metrics.ws_connections.set(len(self.clients))
        writer = asyncio.create_task(self.pump(client))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self.handle_text(client, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self.error(client, "binary_not_supported", "send requests as JSON text frames")
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            client.closing = True
            client.wake.set()
            self.disconnect(client)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            if not ws.closed:
                await ws.close()
        return ws


def _refuse(status: int, code: str, message: str) -> web.Response:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return web.Response(status=status, body=body, content_type="application/json")
