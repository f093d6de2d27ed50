"""A controllable TCP proxy (asyncio) to cut, stall and heal links between nodes.

Theory of operation
-------------------
A ``Route`` listens on one loopback port and forwards every accepted connection to one
target (``host:port``), byte for byte in both directions. Its ``mode`` decides what happens
to traffic, and can change at any time:

- ``pass``: forward.
- ``hold``: stop forwarding but keep the connections: the pumps wait before writing, so at
  most one read chunk per direction is buffered here and TCP back-pressure stalls the
  senders. Switching back to ``pass`` delivers everything in order (a long GC pause, a
  congested link).
- ``drop``: abort every open connection (RST) and close new ones as soon as they are
  accepted: the peers see a dead link and must reconnect (a partition they can notice).
- ``blackhole``: keep accepting and reading, never forward and never answer: the peers see a
  silent link (a partition they only notice through keepalive timeouts). Leaving
  ``blackhole`` aborts the connections it swallowed, so fresh ones are made.

A partition is a set of routes switched to ``drop`` (or ``blackhole``); healing switches them
back to ``pass``. ``ProxyServer`` runs routes on its own event loop in a background thread
(what the integration tests use: ``set_mode`` is thread-safe); ``python -m devnet.proxy``
runs routes as a process controlled over a line protocol on ``--control`` (``mode NAME|*
pass|hold|drop|blackhole``, ``status``; each answered with one JSON line).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

__all__ = ["MODES", "ProxyServer", "Route"]

MODES = ("pass", "hold", "drop", "blackhole")
CHUNK = 64 * 1024


def _split(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    return host, int(port)


class _Conn:
    def __init__(self, down_writer: asyncio.StreamWriter) -> None:
        self.down = down_writer
        self.up: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.swallowed = False

    def abort(self) -> None:
        for writer in (self.down, self.up):
            if writer is not None:
                transport = writer.transport
                if not transport.is_closing():
                    transport.abort()
        for task in self.tasks:
            task.cancel()


class Route:
    """listen -> target with a switchable mode; runs on the event loop that calls ``start``."""

    def __init__(self, name: str, listen: str, target: str, mode: str = "pass") -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.name = name
        self.listen = listen
        self.target = target
        self.mode = mode
        self.conns: set[_Conn] = set()
        self.accepted = 0
        self.bytes_forwarded = 0
        self._changed = asyncio.Event()  # set (and replaced) at every mode change
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        return _split(self.listen)[1]

    async def start(self) -> None:
        self._changed = asyncio.Event()
        host, port = _split(self.listen)
        self._server = await asyncio.start_server(self._accept, host, port, reuse_address=True)
        if port == 0:
            bound = self._server.sockets[0].getsockname()[1]
            self.listen = f"{host}:{bound}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.conns):
            conn.abort()
        self.conns.clear()
        if self._server is not None:
            await self._server.wait_closed()

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        previous, self.mode = self.mode, mode
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        if mode == "drop" or (previous == "blackhole" and mode != "blackhole"):
            for conn in list(self.conns):
                conn.abort()
            self.conns.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        conn = _Conn(writer)
        if self.mode == "drop":
            conn.abort()
            return
        self.conns.add(conn)
        try:
            if self.mode == "blackhole":
                conn.swallowed = True
                await self._swallow(reader)
                return
            host, port = _split(self.target)
            try:
                up_reader, up_writer = await asyncio.open_connection(host, port)
            except OSError:
                conn.abort()
                return
            conn.up = up_writer
            conn.tasks = [
                asyncio.create_task(self._pump(reader, up_writer, conn)),
                asyncio.create_task(self._pump(up_reader, writer, conn)),
            ]
            await asyncio.gather(*conn.tasks, return_exceptions=True)
        finally:
            self.conns.discard(conn)
            conn.abort()

    async def _swallow(self, reader: asyncio.StreamReader) -> None:
        while await reader.read(CHUNK):
            pass

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, conn: _Conn) -> None:
        try:
            while True:
                data = await src.read(CHUNK)
                if not data:
                    break
                while self.mode == "hold":
                    await self._changed.wait()
                if self.mode != "pass":
                    continue  # lost on the wire
                dst.write(data)
                self.bytes_forwarded += len(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            conn.abort()

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "listen": self.listen,
            "target": self.target,
            "mode": self.mode,
            "connections": len(self.conns),
            "accepted": self.accepted,
            "bytes_forwarded": self.bytes_forwarded,
        }


class ProxyServer:
    """Routes on a private event loop in a daemon thread; every method is thread-safe."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="devnet-proxy", daemon=True)
        self._thread.start()

    def _run(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=10)

    def add_route(self, name: str, target: str, listen: str = "127.0.0.1:0", mode: str = "pass") -> Route:
        """Start a route; with port 0 the bound address is in ``route.listen``."""
        if name in self.routes:
            raise ValueError(f"route {name!r} exists")

        async def create() -> Route:
            route = Route(name, listen, target, mode)
            await route.start()
            return route

        route: Route = self._run(create())
        self.routes[name] = route
        return route

    def set_mode(self, names: Sequence[str] | str, mode: str) -> None:
        selected = [names] if isinstance(names, str) else list(names)

        async def apply() -> None:
            for name in selected:
                self.routes[name].set_mode(mode)

        self._run(apply())

    def status(self) -> list[dict[str, Any]]:
        async def collect() -> list[dict[str, Any]]:
            return [route.status() for route in self.routes.values()]

        result: list[dict[str, Any]] = self._run(collect())
        return result

    def close(self) -> None:
        async def stop_all() -> None:
            for route in self.routes.values():
                await route.stop()

        try:
            self._run(stop_all())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            if not self._thread.is_alive():
                self._loop.close()


# ---------------------------------------------------------------------------- process mode


async def _control(
    routes: dict[str, Route], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    while line := await reader.readline():
        words = line.decode(errors="replace").split()
        try:
            if words[:1] == ["status"]:
                answer: dict[str, Any] = {"ok": True, "routes": [r.status() for r in routes.values()]}
            elif len(words) == 3 and words[0] == "mode":
                chosen = list(routes.values()) if words[1] == "*" else [routes[words[1]]]
                for route in chosen:
                    route.set_mode(words[2])
                answer = {"ok": True, "mode": words[2], "routes": [r.name for r in chosen]}
            else:
                answer = {"ok": False, "error": "commands: 'status' | 'mode NAME|* pass|hold|drop|blackhole'"}
        except (KeyError, ValueError) as exc:
            answer = {"ok": False, "error": str(exc)}
        writer.write((json.dumps(answer) + "\n").encode())
        await writer.drain()
    writer.close()


async def _serve(specs: list[tuple[str, str, str]], control: str) -> None:
    routes: dict[str, Route] = {}
    for name, listen, target in specs:
        route = Route(name, listen, target)
        await route.start()
        routes[name] = route
    host, port = _split(control)
    server = await asyncio.start_server(lambda r, w: _control(routes, r, w), host, port)
    print(json.dumps({"control": control, "routes": [r.status() for r in routes.values()]}), flush=True)
    async with server:
        await server.serve_forever()


def _parse_route(text: str) -> tuple[str, str, str]:
    name, eq, rest = text.partition("=")
    listen, arrow, target = rest.partition("->")
    if not eq or not arrow:
        raise argparse.ArgumentTypeError(f"route must be NAME=LISTEN->TARGET, got {text!r}")
    _split(listen)
    _split(target)
    return name, listen, target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devnet.proxy", description="controllable TCP proxy")
    parser.add_argument(
        "--route",
        action="append",
        type=_parse_route,
        required=True,
        help="NAME=LISTEN_HOST:PORT->TARGET_HOST:PORT (repeatable)",
    )
    parser.add_argument("--control", required=True, help="HOST:PORT of the line-protocol control socket")
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        asyncio.run(_serve(args.route, args.control))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
