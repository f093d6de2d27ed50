"""Signature checks in worker processes, driven from the node's event loop.

Theory of operation
- Signature verification is CPU-bound and the GIL serializes threads, so ``VerifierPool``
  runs ``node.verify.verify_batch`` in worker *processes* (forkserver context where
  available, else spawn -- never fork, which would copy the node's threads and locks).
- Each worker owns one duplex pipe (a Unix socket pair). A request is a 5-byte header
  (request id, flags: urgent, ping) and one pickled list of raw txs; the reply is the id and
  the pickled list of ``Verified`` for it, in order. The owner keeps the jobs in flight per
  worker by id.
- Inside a worker a reader thread moves requests from the pipe into an inbox at once and the
  main thread verifies from it, urgent requests first (each lane FIFO), so replies can come
  out of send order. (ed25519 verification runs in C with the GIL released, so the reader
  gets its turns.)
- The owner side has no threads. ``verify_async`` queues batches (jobs); a request to a
  worker carries one job or several queued ones merged, up to ``batch_max`` txs. A request
  goes to the worker with the fewest requests in flight, at most ``MAX_IN_FLIGHT`` ordinary
  ones per worker, and only if it fits in the pool's ``pipe_room`` bytes with what that
  worker was already sent and has not answered: half the request direction's socket buffer,
  which the pool sizes at ``pipe_buffer`` bytes (the kernel may grant less; never below
  ``PIPE_ROOM_MIN``), so a send never blocks the event loop even if the worker read nothing.
  The rest wait in the pool's queue. Replies are read by an event-loop reader callback on
  each pipe (``loop.add_reader``), which also sends the next queued request.
- Coalescing. A worker that is busy takes another ordinary request only when a full one
  (``batch_max`` txs) is queued; smaller jobs wait for its reply and then leave together.
  A request costs ~150 us of owner CPU and ~100-160 us in the worker whatever its size
  (pickling, pipe and thread hand-offs, event-loop callbacks): bench/verify.py's
  ``verify_pool_small_jobs`` measured jobs of 9 txs at 14.9 us per tx of owner CPU and 87.8
  of worker CPU sent one request each, 5.5 and 68.9 merged, 3.2 and 71.1 for full jobs of
  256. Clients that submit a few txs per call make such jobs; the batched load
  of bench/node already came in ~65 txs per request. An idle worker still takes the first
  job at once, so a lone tx waits for nothing; a busy one is already working on what came
  before it.
- Why several batches per worker: the owner refills a worker only when its event loop runs,
  and the node's loop is busy for tens of ms executing a block. With one batch in flight
  (a 256-tx batch is ~44 KB, and the room was 64 KB) a lone validator's workers sat idle
  45% of the time (py-spy) while txs queued for them, and at 12,000 tx/s the queue then grew
  to ~10,000 txs. Four batches keep ~60 ms of work in each worker.
- This replaced a ``ProcessPoolExecutor``, whose feeder and result threads
  cost the owner ~200 us of CPU per batch (and GIL hand-offs with the consensus thread);
  here it is one pickle, one write, one read and one unpickle.
- Urgent batches (``urgent=True``: the txs of a proposal the node is about to execute) wait in
  a queue of their own that is served first; each queue is FIFO. An urgent batch is sent even
  to a worker that has ``MAX_IN_FLIGHT`` batches (room permitting), and the worker takes it
  before the ordinary ones it holds, so it waits for at most the batch being verified.
- ``verify_async_unless`` takes a skip test (on a key per tx; the node passes tx hashes)
  that runs when a batch leaves the queue: under load a batch can wait while the block
  holding its txs is decided and executed (which checks them inline), and the node then
  skips those instead of verifying them twice.
- A worker that dies (EOF on its pipe) breaks the pool: every job in flight or queued
  fails with ``VerifierUnavailable``, as do later calls; the owner decides what to do.
  A worker exits on EOF too, so it never outlives a node killed with ``kill -9``.
- ``verify`` (blocking) is for tools and tests and must not overlap ``verify_async`` use.
- Workers run ``nice`` (config ``mempool.verify_nice``, default 10) below the node, so that
  when the cores are busy the consensus/STF thread gets a core first; the workers make up
  for it when the node waits (votes, commit pause). Measured on 2 cores: no loss of
  throughput at saturation, and a lower p99 when the cores are contended (README).
"""

from __future__ import annotations

import asyncio
import atexit
import multiprocessing
import os
import pickle
import signal
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from node.verify import Verified, verify_batch

__all__ = ["MAX_IN_FLIGHT", "PIPE_BUFFER", "PIPE_ROOM_MIN", "VerifierPool", "VerifierUnavailable"]

MAX_IN_FLIGHT = 4  # ordinary batches per worker: one being verified, the rest waiting in it
PIPE_BUFFER = 1024 * 1024  # socket buffer asked for the request direction of each pipe
PIPE_ROOM_MIN = 64 * 1024  # a pipe is trusted with at least this many unanswered bytes
_REQUEST = struct.Struct(">IB")  # request id, flags
_REPLY = struct.Struct(">I")  # request id
_URGENT = 1
_PING = 2
_CLOSED = "the verifier pool is closed"
_PROTOCOL = pickle.HIGHEST_PROTOCOL


class VerifierUnavailable(RuntimeError):
    """The worker pool is broken or closed."""


class _Inbox:
    """A worker's requests read from the pipe and not yet answered: urgent ones first."""

    def __init__(self) -> None:
        self._lanes: tuple[deque[tuple[int, int, memoryview]], ...] = (deque(), deque())  # urgent, ordinary
        self._ready = threading.Condition()
        self._closed = False

    def put(self, request_id: int, flags: int, body: memoryview) -> None:
        with self._ready:
            self._lanes[0 if flags & _URGENT else 1].append((request_id, flags, body))
            self._ready.notify()

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify()

    def take(self) -> tuple[int, int, memoryview] | None:
        """The next request (urgent first, each lane in arrival order); None once closed."""
        with self._ready:
            while True:
                if self._closed:
                    return None
                for lane in self._lanes:
                    if lane:
                        return lane.popleft()
                self._ready.wait()


def _read_requests(conn: Connection, inbox: _Inbox) -> None:
    """A worker's reader thread: every request into the inbox as soon as it arrives."""
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            inbox.close()
            return
        request_id, flags = _REQUEST.unpack_from(data)
        inbox.put(request_id, flags, memoryview(data)[_REQUEST.size :])


def _serve(conn: Connection, chain_id: str, nice: int) -> None:
    """A worker's whole life: answer requests until the owner's end closes.

    It ignores SIGINT and SIGTERM: it lives and dies with its owner. A Ctrl-C reaches the whole
    process group at once, and a worker that died of it would look to a node that is shutting
    down cleanly like a crashed pool (an error, in-flight txs refused, a new pool spawned on the
    way out). The owner closes its end when it stops, and the OS closes it when the owner dies:
    either way the worker reads EOF and exits."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if nice > 0:
        os.nice(nice)
    inbox = _Inbox()
    threading.Thread(target=_read_requests, args=(conn, inbox), name="ita-verify-reader", daemon=True).start()
    while True:
        request = inbox.take()
        if request is None:  # EOF: the owner closed its end or died
            return
        request_id, flags, body = request
        if flags & _PING:
            reply: Any = os.nice(0)
        else:
            reply = verify_batch(pickle.loads(body), chain_id)  # noqa: S301 (our own owner)
        try:
            conn.send_bytes(_REPLY.pack(request_id) + pickle.dumps(reply, _PROTOCOL))
        except (BrokenPipeError, OSError):
            return


def _size_buffer(conn: Connection, wanted: int) -> int:
    """Ask for a send buffer of ``wanted`` bytes on ``conn``'s socket; what it can take unread."""
    sock = socket.fromfd(conn.fileno(), socket.AF_UNIX, socket.SOCK_STREAM)  # a dup: closed below
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, wanted)
        # Linux reports twice the granted size (the other half is for its bookkeeping); the
        # granted size is what the socket holds without blocking the writer, with margin.
        return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)) // 2
    finally:
        sock.close()


def _context() -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


@dataclass(slots=True)
class _Job:
    txs: list[bytes]
    future: asyncio.Future[list[Verified | None]]
    keys: list[bytes] | None  # what `skip` is asked about, one per tx
    skip: Callable[[bytes], bool] | None
    size: int  # bytes of txs: what the pipe must hold
    sent: list[int] | None = None  # indices of `txs` in its request, when some were skipped
    queued_at: float = field(default_factory=time.perf_counter)  # for ``on_batch``


@dataclass(slots=True)
class _Request:
    """One request in flight: the jobs merged into it and how many txs each put in."""

    jobs: list[_Job]
    counts: list[int]
    size: int  # bytes of the jobs' txs

    @property
    def txs(self) -> int:
        return sum(self.counts)


@dataclass(slots=True)
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    room: int  # unanswered request bytes its pipe is trusted with
    in_flight: dict[int, _Request] = field(default_factory=dict)  # by request id
    loop: asyncio.AbstractEventLoop | None = None  # where its reader is registered

    def unanswered_bytes(self) -> int:
        return sum(r.size for r in self.in_flight.values())


class VerifierPool:
    """Batches of txs verified in ``workers`` processes (see the module doc)."""

    def __init__(
        self,
        chain_id: str,
        workers: int = 2,
        batch_max: int = 256,
        nice: int = 0,
        pipe_buffer: int = PIPE_BUFFER,
        on_batch: Callable[[int, float], None] | None = None,
        on_request: Callable[[int], None] | None = None,
    ) -> None:
        if workers < 1 or batch_max < 1:
            raise ValueError("workers and batch_max must be >= 1")
        if not 0 <= nice <= 19:
            raise ValueError("nice must be 0..19")
        self.chain_id = chain_id
        self.workers = workers
        self.batch_max = batch_max
        self.nice = nice
        self.pipe_buffer = pipe_buffer
        self.on_batch = on_batch  # (txs checked, seconds from queued to verdict) per async batch
        self.on_request = on_request  # (txs) per request sent to a worker by the async path
        self.requests_sent = 0  # requests the async path sent (txs verified / this: coalescing)
        self._workers: list[_Worker] = []
        self._next_id = 0
        self._queue: deque[_Job] = deque()
        self._urgent: deque[_Job] = deque()  # served before _queue
        self._queued_txs = 0  # txs of the jobs in _queue (a full request waits?)
        self._failure: str | None = None  # set once: closed or broken

    # ------------------------------------------------------------------ lifecycle

    def _started(self) -> list[_Worker]:
        if self._failure is not None:
            raise VerifierUnavailable(self._failure)
        if not self._workers:
            ctx = _context()
            for i in range(self.workers):
                parent, child = ctx.Pipe(duplex=True)
                room = max(PIPE_ROOM_MIN, _size_buffer(parent, self.pipe_buffer))
                process = ctx.Process(  # type: ignore[attr-defined]
                    target=_serve, args=(child, self.chain_id, self.nice), name=f"ita-verify-{i}", daemon=True
                )
                process.start()
                child.close()
                self._workers.append(_Worker(process, parent, room))
            # The workers ignore SIGTERM (see _serve), so multiprocessing's own exit hook, which
            # terminates daemon children and then joins them without a timeout, would wait for
            # them forever if the owner exited without closing the pool (an unhandled error, say).
            # This hook runs before it (atexit is last-in, first-out) and closes the pool first.
            atexit.register(self.close)
        return self._workers

    def worker_pids(self) -> list[int]:
        """The pids of the started worker processes (none before the first batch or warm-up)."""
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    @property
    def pipe_room(self) -> int:
        """Unanswered request bytes each worker's pipe is trusted with (0 before the start)."""
        return min((w.room for w in self._workers), default=0)

    def _request(self, flags: int, payload: bytes) -> tuple[int, bytes]:
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF
        return self._next_id, _REQUEST.pack(self._next_id, flags) + payload

    @staticmethod
    def _reply(worker: _Worker, request_id: int) -> Any:
        """Blocking use: the unpickled reply to ``worker``'s one outstanding request."""
        data = worker.conn.recv_bytes()
        (answered,) = _REPLY.unpack_from(data)
        if answered != request_id:
            raise OSError(f"a verifier worker answered request {answered}, not {request_id}")
        return pickle.loads(memoryview(data)[_REPLY.size :])  # noqa: S301 (our own worker)

    @property
    def broken(self) -> bool:
        """A worker died (as opposed to the pool being closed)."""
        return self._failure is not None and self._failure != _CLOSED

    def warm_up(self) -> None:
        """Start every worker now (blocking) rather than on the first batch."""
        self.niceness()

    def niceness(self) -> list[int]:
        """Each worker's nice value (blocking; also proves every worker answers)."""
        workers = self._started()
        self._require_idle(workers)
        try:
            ids = []
            for worker in workers:
                request_id, request = self._request(_PING, b"")
                worker.conn.send_bytes(request)
                ids.append(request_id)
            return [self._reply(worker, i) for worker, i in zip(workers, ids, strict=True)]
        except (EOFError, OSError) as exc:
            raise self._died(exc) from exc

    def close(self) -> None:
        atexit.unregister(self.close)
        if self._failure is None:
            self._failure = _CLOSED
        self._fail_all(self._failure)
        for worker in self._workers:
            self._unwatch(worker)
            worker.conn.close()  # the worker reads EOF and exits
        for worker in self._workers:
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=5)
        self._workers = []

    def __enter__(self) -> VerifierPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ blocking use

    def verify(self, txs: Sequence[bytes]) -> list[Verified]:
        """Blocking: results in the order of ``txs`` (tools and tests; not during async use)."""
        workers = self._started()
        self._require_idle(workers)
        batches = self._payloads(txs)
        out: list[Verified] = []
        try:
            for first in range(0, len(batches), len(workers)):
                group = batches[first : first + len(workers)]
                sent = []
                for worker, payload in zip(workers, group, strict=False):
                    request_id, request = self._request(0, payload)
                    worker.conn.send_bytes(request)
                    sent.append((worker, request_id))
                for worker, request_id in sent:
                    out.extend(self._reply(worker, request_id))
        except (EOFError, OSError) as exc:
            raise self._died(exc) from exc
        return out

    # ------------------------------------------------------------------ asyncio use

    def backlog(self) -> tuple[int, int]:
        """(txs queued for the workers, txs in flight in them): what admission waits behind."""
        queued = sum(len(job.txs) for job in self._urgent) + self._queued_txs
        in_flight = sum(request.txs for worker in self._workers for request in worker.in_flight.values())
        return queued, in_flight

    async def verify_async(self, txs: Sequence[bytes]) -> list[Verified]:
        """For the asyncio node: results in the order of ``txs``; never blocks the loop on a
        worker (only on writing a batch into a pipe that has room for it)."""
        results = await self.verify_async_unless(txs, None, None)
        return [v for v in results if v is not None]

    async def verify_async_unless(
        self,
        txs: Sequence[bytes],
        keys: Sequence[bytes] | None,
        skip: Callable[[bytes], bool] | None,
        urgent: bool = False,
    ) -> list[Verified | None]:
        """``verify_async``, except that a tx for which ``skip(key)`` (its entry in ``keys``, e.g.
        its hash) is true when its batch leaves the queue for a worker is not checked (None in
        its place). Under load a batch can wait in the queue while the block holding its txs is
        decided and executed (which checks them itself): the node skips what is already
        committed instead of paying twice. ``urgent`` batches go ahead of every queued ordinary one."""
        workers = self._started()
        loop = asyncio.get_running_loop()
        futures = []
        for start in range(0, len(txs), self.batch_max):
            chunk = list(txs[start : start + self.batch_max])
            chunk_keys = list(keys[start : start + self.batch_max]) if keys is not None and skip else None
            future: asyncio.Future[list[Verified | None]] = loop.create_future()
            size = sum(map(len, chunk)) + 8 * len(chunk)
            job_skip = skip if chunk_keys is not None else None
            (self._urgent if urgent else self._queue).append(_Job(chunk, future, chunk_keys, job_skip, size))
            if not urgent:
                self._queued_txs += len(chunk)
            futures.append(future)
        self._dispatch(workers, loop)
        batches = await asyncio.gather(*futures)
        return [v for batch in batches for v in batch]

    def _payloads(self, txs: Sequence[bytes]) -> list[bytes]:
        return [
            pickle.dumps(list(txs[i : i + self.batch_max]), _PROTOCOL)
            for i in range(0, len(txs), self.batch_max)
        ]

    def _dispatch(self, workers: list[_Worker], loop: asyncio.AbstractEventLoop) -> None:
        while (self._urgent or self._queue) and self._failure is None:
            urgent = bool(self._urgent)
            queue = self._urgent if urgent else self._queue
            if queue[0].future.cancelled():
                self._pop(queue)
                continue
            worker = min(workers, key=lambda w: len(w.in_flight))
            if worker.in_flight and not urgent and (
                len(worker.in_flight) >= MAX_IN_FLIGHT or self._queued_txs < self.batch_max
            ):
                return  # busy: what is queued waits for a reply (or a full request) and leaves merged
            room = worker.room - worker.unanswered_bytes()
            if worker.in_flight and queue[0].size > room:
                return  # a busy worker takes another request only if its pipe can hold it
            request, txs = self._take(queue, room, must_fit=bool(worker.in_flight))
            if request is None:
                continue  # nothing left to check in what was taken (or the next job waits for room)
            if worker.loop is not loop:  # first use, or a new event loop (asyncio.run per call)
                self._unwatch(worker)
                loop.add_reader(worker.conn.fileno(), self._on_reply, worker)
                worker.loop = loop
            request_id, data = self._request(_URGENT if urgent else 0, pickle.dumps(txs, _PROTOCOL))
            try:
                worker.conn.send_bytes(data)
            except OSError as exc:
                queue.extendleft(reversed(request.jobs))
                if queue is self._queue:
                    self._queued_txs += sum(len(job.txs) for job in request.jobs)
                self._died(exc)
                return
            worker.in_flight[request_id] = request
            self.requests_sent += 1
            if self.on_request is not None:
                self.on_request(len(txs))

    def _pop(self, queue: deque[_Job]) -> _Job:
        job = queue.popleft()
        if queue is self._queue:
            self._queued_txs -= len(job.txs)
        return job

    def _take(self, queue: deque[_Job], room: int, must_fit: bool) -> tuple[_Request | None, list[bytes]]:
        """Merge jobs from the head of ``queue`` into one request: the first (within ``room``
        bytes if ``must_fit``: the worker holds unanswered requests), then more while the request
        stays within ``batch_max`` txs and ``room`` bytes. Jobs whose txs were all skipped are
        answered here and take no place. None: no job went in."""
        jobs: list[_Job] = []
        counts: list[int] = []
        txs: list[bytes] = []
        size = 0
        while queue:
            job = queue[0]
            if job.future.cancelled():
                self._pop(queue)
                continue
            if (jobs or must_fit) and size + job.size > room:
                break
            if jobs and len(txs) + len(job.txs) > self.batch_max:
                break
            self._pop(queue)
            sent = self._prepare(job)
            if not sent:
                continue
            jobs.append(job)
            counts.append(len(sent))
            txs.extend(sent)
            size += job.size
        if not jobs:
            return None, txs
        return _Request(jobs, counts, size), txs

    def _on_reply(self, worker: _Worker) -> None:
        try:
            reply = worker.conn.recv_bytes()
        except (EOFError, OSError) as exc:
            self._died(exc)
            return
        (request_id,) = _REPLY.unpack_from(reply)
        request = worker.in_flight.pop(request_id, None)
        if request is None:
            self._break("a verifier worker answered a request it was not sent")
            return
        results: list[Verified] = pickle.loads(memoryview(reply)[_REPLY.size :])  # noqa: S301 (our worker)
        if len(results) != request.txs:
            self._break(f"a verifier worker answered {len(results)} txs for {request.txs}")
            return
        answered: list[tuple[int, float]] = []
        start = 0
        for job, count in zip(request.jobs, request.counts, strict=True):
            part = results[start : start + count]
            start += count
            if job.future.done():
                continue
            if job.sent is None:
                job.future.set_result(list(part))
            else:
                out: list[Verified | None] = [None] * len(job.txs)
                for i, v in zip(job.sent, part, strict=True):
                    out[i] = v
                job.future.set_result(out)
            answered.append((count, job.queued_at))
        if worker.loop is not None:
            self._dispatch(self._workers, worker.loop)
        if self.on_batch is not None:  # last: a failing observer stalls nothing
            now = time.perf_counter()
            for count, queued_at in answered:
                self.on_batch(count, now - queued_at)

    @staticmethod
    def _prepare(job: _Job) -> list[bytes]:
        """The job's txs that its skip test keeps (all of them without one); when none is left
        the job is answered here (every verdict None) and the list is empty."""
        txs = job.txs
        if job.skip is not None and job.keys is not None:
            skip = job.skip
            sent = [i for i, key in enumerate(job.keys) if not skip(key)]
            if len(sent) < len(txs):
                if not sent:
                    job.future.set_result([None] * len(txs))
                    return []
                job.sent = sent
                return [txs[i] for i in sent]
        return txs

    # ------------------------------------------------------------------ failure

    def _require_idle(self, workers: list[_Worker]) -> None:
        if self._queue or self._urgent or any(w.in_flight for w in workers):
            raise RuntimeError("blocking use of the verifier pool while async batches are in flight")

    def _unwatch(self, worker: _Worker) -> None:
        if worker.loop is not None:
            if not worker.loop.is_closed():
                worker.loop.remove_reader(worker.conn.fileno())
            worker.loop = None

    def _died(self, exc: BaseException) -> VerifierUnavailable:
        """A worker's pipe failed: break the pool; the error for callers that raise."""
        reason = f"a verifier worker died: {exc!r}"
        self._break(reason)
        return VerifierUnavailable(reason)

    def _break(self, reason: str) -> None:
        if self._failure is None:
            self._failure = reason
        for worker in self._workers:
            self._unwatch(worker)
        self._fail_all(self._failure)

    def _fail_all(self, reason: str) -> None:
        jobs = [*self._urgent, *self._queue]
        self._urgent.clear()
        self._queue.clear()
        self._queued_txs = 0
        for worker in self._workers:
            for request in worker.in_flight.values():
                jobs.extend(request.jobs)
            worker.in_flight.clear()
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(VerifierUnavailable(reason))
