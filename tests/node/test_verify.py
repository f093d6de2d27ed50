from __future__ import annotations

import asyncio
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from unittest.mock import patch

import pytest
from prometheus_client.parser import text_string_to_metric_families

from node.app import Application, VerifiedTxs
from node.blockstore import BlockStore
from node.observability import NodeMetrics
from node.verifier_pool import MAX_IN_FLIGHT, VerifierPool, VerifierUnavailable
from node.verify import Verified, verify_batch, verify_tx
from proto.ita.v1 import tx_pb2
from stf.block import MAX_TX_BYTES, decode_tx
from stf.results import Code, TxResult
from stf.signing import signing_message, tx_hash, verify_signature
from tests.node.support import CHAIN_ID, account, chain, corrupt_signature, proposer, transfer_tx
from tests.processes import alive

REPO = Path(__file__).resolve().parents[2]


def signed(body: tx_pb2.TxBody, key_index: int = 0) -> bytes:
    body_bytes = body.SerializeToString()
    signature = account(key_index).sign(signing_message(body.chain_id, body_bytes))
    envelope = tx_pb2.SignedTx(body=body_bytes, public_key=account(key_index).public_key, signature=signature)
    return envelope.SerializeToString()


def test_a_good_tx() -> None:
    raw = transfer_tx(2, 5)
    v = verify_tx(raw, CHAIN_ID)
    assert v.ok and v.hash == tx_hash(raw) and v.size == len(raw)
    assert (v.sender, v.action) == (account(2).address, "transfer") and v.nonce > 0


@pytest.mark.parametrize(
    ("raw", "code", "reason"),
    [
        (corrupt_signature(transfer_tx(0, 1)), Code.BAD_SIGNATURE, "bad_signature"),
        (transfer_tx(0, 1, chain_id="other-chain"), Code.WRONG_CHAIN_ID, "other-chain"),
        (b"\xff\xff\xff", Code.MALFORMED_TX, "protobuf"),
        (b"\x00" * (MAX_TX_BYTES + 1), Code.TX_TOO_LARGE, "at most"),
        (signed(tx_pb2.TxBody(chain_id=CHAIN_ID, nonce=1)), Code.EMPTY_ACTION, "no action"),
    ],
)
def test_rejections_match_the_stf(raw: bytes, code: Code, reason: str) -> None:
    v = verify_tx(raw, CHAIN_ID)
    assert v.code == code and reason in v.reason and not v.ok
    stf = decode_tx(0, raw, CHAIN_ID, verify_signature)
    assert isinstance(stf, TxResult) and stf.code == code


def test_a_malformed_chain_id_is_a_rejection_not_a_crash() -> None:
    # stf.signing.signing_message raises ValueError for such chain ids; verify_tx must not get there.
    body = tx_pb2.TxBody(chain_id="", nonce=1, faucet=tx_pb2.Faucet(amount=1))
    envelope = tx_pb2.SignedTx(body=body.SerializeToString(), public_key=b"k" * 32, signature=b"s" * 64)
    raw = envelope.SerializeToString()
    assert verify_tx(raw, CHAIN_ID).code == Code.WRONG_CHAIN_ID
    assert verify_batch([raw, transfer_tx(0, 1)], CHAIN_ID)[1].ok


def test_verified_pickles() -> None:
    raw = transfer_tx(1, 1)
    v = verify_tx(raw, CHAIN_ID)
    assert v.ok and v.hash == tx_hash(raw)  # the hash is what node.app.VerifiedTxs remembers
    assert pickle.loads(pickle.dumps(v)) == v
    rejected = verify_tx(corrupt_signature(transfer_tx(1, 2)), CHAIN_ID)
    assert pickle.loads(pickle.dumps(rejected)) == rejected


def test_finalize_verifies_only_the_txs_not_known_to_verify(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "db", CHAIN_ID)
    app = Application(chain(), store)
    good_known, good_new = transfer_tx(0, 1), transfer_tx(1, 2, to=2)
    forged = corrupt_signature(transfer_tx(2, 3))
    app.verified.remember(tx_hash(good_known))
    time_ms = chain().genesis_time_ms + 1_000
    raw = app.prepare_proposal(1, time_ms, proposer(), [good_known, good_new, forged])
    app.process_proposal(1, raw, time_ms)
    checked: list[bytes] = []

    def counting_verify(public_key: bytes, signature: bytes, message: bytes) -> None:
        checked.append(signature)
        verify_signature(public_key, signature, message)

    with patch("node.app.verify_signature", counting_verify):
        finalized = app.finalize_block(raw)
    assert [r.code for r in finalized.result.results] == [Code.OK, Code.OK, Code.BAD_SIGNATURE]
    assert len(checked) == 2  # the known tx was not verified again
    assert finalized.verified_inline == 2  # what ita_block_txs_verified_inline counts
    store.close()


def test_the_accepted_proposal_lists_its_txs_not_known_to_verify(tmp_path: Path) -> None:
    # what the engine sends to its verifier workers while the votes go round (Engine._preverify)
    store = BlockStore(tmp_path / "db", CHAIN_ID)
    app = Application(chain(), store)
    assert app.unverified_proposal_txs() == []  # no proposal accepted yet
    known, unseen = transfer_tx(0, 1), transfer_tx(1, 2, to=2)
    app.verified.remember(tx_hash(known))
    time_ms = chain().genesis_time_ms + 1_000
    raw = app.prepare_proposal(1, time_ms, proposer(), [known, unseen])
    app.process_proposal(1, raw, time_ms)
    assert app.unverified_proposal_txs() == [unseen]
    app.verified.remember(tx_hash(unseen))  # a worker's verdict arrived
    assert app.unverified_proposal_txs() == []
    finalized = app.finalize_block(raw)
    assert finalized.verified_inline == 0
    store.close()


def test_verified_txs_forget_the_oldest_beyond_capacity() -> None:
    verified = VerifiedTxs(capacity=2)
    for digest in (b"a", b"b", b"c"):
        verified.remember(digest)
    assert verified.flags([b"a", b"b", b"c"]) == [False, True, True] and len(verified) == 2


@pytest.fixture(scope="module")
def pool() -> Iterator[VerifierPool]:
    with VerifierPool(CHAIN_ID, workers=2, batch_max=16) as p:
        p.warm_up()
        yield p


def test_worker_pool_flags_the_one_bad_signature(pool: VerifierPool) -> None:
    txs = [transfer_tx(i % 4, 1000 + i) for i in range(50)]
    txs[17] = corrupt_signature(txs[17])
    results = pool.verify(txs)
    assert [r.hash for r in results] == [tx_hash(t) for t in txs]  # order preserved across batches
    assert [i for i, r in enumerate(results) if not r.ok] == [17]
    assert results[17].code == Code.BAD_SIGNATURE
    assert results == verify_batch(txs, CHAIN_ID)


def test_worker_pool_async(pool: VerifierPool) -> None:
    txs = [transfer_tx(0, 2000 + i) for i in range(20)] + [b"junk"]
    results = asyncio.run(pool.verify_async(txs))
    assert [r.ok for r in results] == [True] * 20 + [False]
    assert pool.verify([]) == []


def test_worker_cpu_is_exported_per_worker_while_the_workers_live() -> None:
    metrics = NodeMetrics()
    with VerifierPool(CHAIN_ID, workers=2) as p:
        metrics.watch_verify_workers(p.worker_pids)
        assert "ita_verify_worker_cpu_seconds_total{" not in metrics.exposition().decode()  # not started
        p.warm_up()
        assert p.verify([transfer_tx(0, 3000 + i) for i in range(40)])[0].ok
        pids = p.worker_pids()
        assert len(pids) == 2 and os.getpid() not in pids
        families = {f.name: f for f in text_string_to_metric_families(metrics.exposition().decode())}
        samples = {s.labels["worker"]: s.value for s in families["ita_verify_worker_cpu_seconds"].samples}
        assert set(samples) == {"0", "1"} and all(v >= 0 for v in samples.values())
        assert sum(samples.values()) > 0  # 40 signature checks plus the workers' start-up
    families = {f.name: f for f in text_string_to_metric_families(metrics.exposition().decode())}
    assert families["ita_verify_worker_cpu_seconds"].samples == []  # gone with the workers


def test_closed_pool_is_unavailable() -> None:
    p = VerifierPool(CHAIN_ID, workers=1)
    p.close()
    with pytest.raises(VerifierUnavailable, match="closed"):
        p.verify([transfer_tx(0, 1)])
    with pytest.raises(ValueError):
        VerifierPool(CHAIN_ID, workers=0)


def test_verify_tx_is_total() -> None:
    assert all(isinstance(v, Verified) for v in verify_batch([b"", b"\x0a\x00", b"\x12\x01"], CHAIN_ID))


def test_workers_run_at_the_configured_niceness() -> None:
    with VerifierPool(CHAIN_ID, workers=1, nice=3) as nicer:
        assert nicer.niceness() == [os.nice(0) + 3]
        assert nicer.verify([transfer_tx(0, 9)])[0].ok
    with pytest.raises(ValueError):
        VerifierPool(CHAIN_ID, nice=20)


def test_a_dead_worker_fails_its_batches_and_breaks_the_pool() -> None:
    p = VerifierPool(CHAIN_ID, workers=1)
    try:
        p.warm_up()
        assert not p.broken
        p._workers[0].process.kill()
        p._workers[0].process.join(timeout=10)

        async def submit() -> None:
            await p.verify_async([transfer_tx(0, 1)])

        with pytest.raises(VerifierUnavailable, match="died"):
            asyncio.run(submit())
        assert p.broken
        with pytest.raises(VerifierUnavailable, match="died"):
            p.verify([transfer_tx(0, 2)])
    finally:
        p.close()
    assert p.broken  # closing a broken pool keeps the reason


def test_a_ctrl_c_to_the_process_group_does_not_kill_the_workers() -> None:
    """A terminal's Ctrl-C (or ``kill -INT -PGID``) reaches every process of the group at once:
    the workers ignore it (and SIGTERM) and keep answering; the node decides when they stop."""
    with VerifierPool(CHAIN_ID, workers=2) as p:
        p.warm_up()
        for worker in p._workers:
            os.kill(worker.process.pid, signal.SIGINT)
            os.kill(worker.process.pid, signal.SIGTERM)
        time.sleep(0.3)  # a worker that took them would be dead by now
        assert all(worker.process.is_alive() for worker in p._workers)
        assert [v.ok for v in p.verify([transfer_tx(0, 21), transfer_tx(1, 22, to=2)])] == [True, True]
        assert not p.broken
    assert all(not worker.process.is_alive() for worker in p._workers)  # closed: gone


def owner_script(tmp_path: Path, then: str) -> Path:
    """A script that starts a 2-worker pool, prints the workers' pids, then runs ``then``."""
    script = tmp_path / "owner.py"
    script.write_text(
        "import sys, time\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from node.verifier_pool import VerifierPool\n"
        "if __name__ == '__main__':\n"
        f"    pool = VerifierPool({CHAIN_ID!r}, workers=2)\n"
        "    pool.warm_up()\n"
        "    print(' '.join(str(w.process.pid) for w in pool._workers), flush=True)\n"
        f"    {then}\n"
    )
    return script


def assert_all_exit(pids: list[int], within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in pids)


def test_workers_exit_when_their_owner_is_killed(tmp_path: Path) -> None:
    """kill -9 of the node must not leave verifier processes behind: they read EOF and exit."""
    script = owner_script(tmp_path, "time.sleep(60)")
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)  # noqa: S603
    try:
        assert owner.stdout is not None
        pids = [int(x) for x in owner.stdout.readline().split()]
        assert len(pids) == 2 and all(alive(pid) for pid in pids)
    finally:
        owner.kill()
        owner.wait()
    assert_all_exit(pids, within_s=20)


def test_an_owner_that_exits_without_closing_its_pool_still_exits(tmp_path: Path) -> None:
    """The workers ignore SIGTERM, so multiprocessing's exit hook (terminate, then join without a
    timeout) alone would wait for them forever; the pool's own exit hook closes it first."""
    script = owner_script(tmp_path, "raise RuntimeError('the owner fails without closing its pool')")
    owner = subprocess.run(  # noqa: S603
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30
    )
    assert owner.returncode == 1 and "the owner fails" in owner.stderr
    pids = [int(x) for x in owner.stdout.split()]
    assert len(pids) == 2
    assert_all_exit(pids, within_s=10)


def test_big_batches_go_one_at_a_time_and_keep_their_order() -> None:
    """Batches over the pipe's room are only sent to an idle worker (a busy one could leave the
    owner blocked on a full pipe); order and verdicts are unaffected."""
    from node.verifier_pool import PIPE_ROOM_MIN

    junk = [bytes([0x0A]) + bytes([i]) * 60_000 for i in range(12)]
    good = [transfer_tx(1, 3000 + i) for i in range(12)]
    txs = [t for pair in zip(junk, good, strict=True) for t in pair]
    with VerifierPool(CHAIN_ID, workers=1, batch_max=4, pipe_buffer=PIPE_ROOM_MIN) as big:
        big.warm_up()
        assert big.pipe_room < 2 * 60_000  # each batch (two junk txs) exceeds the room

        async def scenario() -> tuple[list[Verified], int]:
            pending = asyncio.ensure_future(big.verify_async(txs))
            await asyncio.sleep(0)
            sent = big.backlog()[1]
            return await pending, sent

        results, first_sent = asyncio.run(scenario())
    assert first_sent == 4  # one batch in flight, the other five wait for it
    assert [r.hash for r in results] == [tx_hash(t) for t in txs]
    assert [r.ok for r in results] == [False, True] * 12


def test_pipe_room_follows_the_socket_buffer() -> None:
    """The room is half what the kernel reports for the request socket's buffer (it reports twice
    what it grants), never below PIPE_ROOM_MIN: a send of that much never blocks."""
    from node.verifier_pool import PIPE_BUFFER, PIPE_ROOM_MIN

    with VerifierPool(CHAIN_ID, workers=2) as pool:
        assert pool.pipe_room == 0  # not started
        pool.warm_up()
        assert PIPE_ROOM_MIN <= pool.pipe_room <= PIPE_BUFFER
        assert pool.verify([transfer_tx(0, 11)])[0].ok


def test_batches_skip_what_became_known_while_they_waited() -> None:
    """The skip test runs when a batch leaves the queue, not when it is submitted: txs that
    became known meanwhile (committed by a block, in the node) come back as None, unchecked."""
    txs = [transfer_tx(2, 4000 + i) for i in range(12)]
    known: set[bytes] = set()
    checked: list[bytes] = []

    def skip(key: bytes) -> bool:  # keyed by the raw tx itself here
        checked.append(key)
        return key in known

    async def scenario() -> list[Verified | None]:
        with VerifierPool(CHAIN_ID, workers=1, batch_max=2) as p:
            pending = asyncio.ensure_future(p.verify_async_unless(txs, txs, skip))
            await asyncio.sleep(0)  # the first MAX_IN_FLIGHT (4) batches are sent at once
            known.update(txs[8:])  # a block with the last four is committed while the rest wait
            return await pending

    assert MAX_IN_FLIGHT == 4
    results = asyncio.run(scenario())
    assert [r is not None and r.ok for r in results] == [True] * 8 + [False] * 4
    assert results[8:] == [None] * 4
    assert sorted(checked) == sorted(txs)  # each tx tested once, when its batch left the queue


def test_a_partly_skipped_batch_keeps_each_verdict_in_its_tx_s_place() -> None:
    """Skipped txs inside a batch leave holes (None) and every checked tx gets its own verdict:
    the worker sees only the unskipped ones, and the answers are spread back in order."""
    txs = [transfer_tx(1, 6000 + i) for i in range(7)]
    txs[4] = corrupt_signature(txs[4])
    known = {txs[0], txs[3], txs[6]}

    async def scenario() -> list[Verified | None]:
        with VerifierPool(CHAIN_ID, workers=1, batch_max=8) as p:
            return await p.verify_async_unless(txs, txs, known.__contains__)

    results = asyncio.run(scenario())
    assert [r is None for r in results] == [True, False, False, True, False, False, True]
    for raw, verdict in zip(txs, results, strict=True):
        if verdict is not None:
            assert verdict.hash == tx_hash(raw)
            assert verdict.ok == (raw is not txs[4])
    assert results[4] is not None and results[4].code == Code.BAD_SIGNATURE


def test_each_answered_batch_is_reported_with_its_size_and_wait() -> None:
    """``on_batch`` (the node's ita_tx_verify_latency_seconds) hears of every batch a worker
    answered: the txs it checked and the seconds since it was queued; a batch whose txs were
    all skipped never reached a worker and is not reported."""
    reports: list[tuple[int, float]] = []
    txs = [transfer_tx(3, 5000 + i) for i in range(5)]
    skipped = [transfer_tx(3, 5100 + i) for i in range(2)]

    async def scenario() -> None:
        def report(txs_checked: int, seconds: float) -> None:
            reports.append((txs_checked, seconds))

        with VerifierPool(CHAIN_ID, workers=1, batch_max=2, on_batch=report) as p:
            started = time.perf_counter()
            await p.verify_async(txs)
            assert await p.verify_async_unless(skipped, skipped, lambda key: True) == [None, None]
            elapsed = time.perf_counter() - started
            assert sorted(n for n, _ in reports) == [1, 2, 2]
            assert all(0 < seconds <= elapsed for _, seconds in reports), (reports, elapsed)

    asyncio.run(scenario())


def test_a_failing_batch_observer_stalls_nothing() -> None:
    """``on_batch`` runs after the batch is answered and the next one sent: if it raises (a
    bug in a metrics hook), the loop logs it and verification carries on."""
    txs = [transfer_tx(3, 5200 + i) for i in range(6)]

    def broken(txs_checked: int, seconds: float) -> None:
        raise RuntimeError("observer bug")

    async def scenario() -> list[Verified]:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: None)
        with VerifierPool(CHAIN_ID, workers=1, batch_max=2, on_batch=broken) as p:
            return await asyncio.wait_for(p.verify_async(txs), 30)  # a hang guard

    assert [r.ok for r in asyncio.run(scenario())] == [True] * 6


def test_urgent_batches_leave_the_queue_first() -> None:
    """A proposal's txs (urgent) go to a worker ahead of every queued ordinary batch, even one
    that holds MAX_IN_FLIGHT ordinary batches; the batches already sent keep their place, and
    each queue stays in order."""
    ordinary = [transfer_tx(2, 5000 + i) for i in range(16)]
    urgent = [transfer_tx(3, 6000 + i) for i in range(4)]
    dispatched: list[bytes] = []

    def record(key: bytes) -> bool:  # the skip test runs as a batch leaves the queue
        dispatched.append(key)
        return False

    async def scenario() -> tuple[list[Verified | None], list[Verified | None]]:
        with VerifierPool(CHAIN_ID, workers=1, batch_max=2) as p:
            first = asyncio.ensure_future(p.verify_async_unless(ordinary, ordinary, record))
            await asyncio.sleep(0)  # four batches sent (MAX_IN_FLIGHT), four wait
            second = asyncio.ensure_future(p.verify_async_unless(urgent, urgent, record, urgent=True))
            return await first, await second

    plain, pressing = asyncio.run(scenario())
    assert [r is not None and r.ok for r in plain + pressing] == [True] * 20
    assert dispatched == ordinary[:8] + urgent + ordinary[8:]


def test_a_worker_takes_urgent_requests_before_the_ordinary_ones_it_holds() -> None:
    """The worker's inbox: urgent requests first, each lane in arrival order; closed means done
    (the owner is gone: nothing left is answered)."""
    from node.verifier_pool import _URGENT, _Inbox

    inbox = _Inbox()
    for request_id, flags in [(1, 0), (2, 0), (3, _URGENT), (4, 0), (5, _URGENT)]:
        inbox.put(request_id, flags, memoryview(b""))
    taken = [inbox.take() for _ in range(3)]
    assert [t[0] for t in taken if t is not None] == [3, 5, 1]
    inbox.close()
    assert inbox.take() is None


def test_replies_are_matched_by_request_id() -> None:
    """Urgent batches overtake ordinary ones inside a worker, so replies can come out of order:
    each still answers its own batch (verdicts by tx hash), urgent or not."""
    ordinary = [transfer_tx(2, 8000 + i) for i in range(40)]
    urgent = [corrupt_signature(transfer_tx(3, 9000 + i)) for i in range(6)]

    async def scenario() -> tuple[list[Verified], list[Verified]]:
        with VerifierPool(CHAIN_ID, workers=1, batch_max=4) as p:
            first = asyncio.ensure_future(p.verify_async(ordinary))
            await asyncio.sleep(0)
            second = asyncio.ensure_future(p.verify_async_unless(urgent, None, None, urgent=True))
            plain = await first
            pressing = [v for v in await second if v is not None]
            return plain, pressing

    plain, pressing = asyncio.run(scenario())
    assert [v.hash for v in plain] == [tx_hash(t) for t in ordinary] and all(v.ok for v in plain)
    assert [v.hash for v in pressing] == [tx_hash(t) for t in urgent] and not any(v.ok for v in pressing)


def test_backlog_counts_queued_and_in_flight_txs() -> None:
    """VerifierPool.backlog (the ita_verify_backlog_txs gauge): txs waiting for a worker and txs
    sent to one, until their answers arrive."""
    txs = [transfer_tx(2, 7000 + i) for i in range(10)]

    async def scenario() -> tuple[tuple[int, int], tuple[int, int]]:
        with VerifierPool(CHAIN_ID, workers=1, batch_max=2) as p:
            pending = asyncio.ensure_future(p.verify_async(txs))
            await asyncio.sleep(0)  # four batches of two sent (MAX_IN_FLIGHT), one batch waits
            during = p.backlog()
            await pending
            return during, p.backlog()

    during, after = asyncio.run(scenario())
    assert during == (2, 8)
    assert after == (0, 0)


def test_small_batches_queued_behind_a_busy_worker_leave_merged() -> None:
    """Coalescing: while a worker holds a request, smaller jobs wait and then go as one request
    (up to batch_max txs); each job still gets exactly its own verdicts, in order, and a job
    whose txs the skip test drops takes no place in the merged request."""
    first = [transfer_tx(3, 8000 + i) for i in range(3)]
    smalls = [[transfer_tx(3, 8100 + 10 * j + i) for i in range(j % 3 + 1)] for j in range(10)]
    bad = corrupt_signature(transfer_tx(3, 8999))
    smalls[4] = [smalls[4][0], bad]
    known = set(smalls[7])
    sizes: list[int] = []

    async def scenario() -> tuple[list[Verified], list[list[Verified | None]], int]:
        with VerifierPool(CHAIN_ID, workers=1, batch_max=64, on_request=sizes.append) as p:
            busy = asyncio.ensure_future(p.verify_async(first))
            await asyncio.sleep(0)  # the idle worker takes the first job at once
            assert p.requests_sent == 1
            later = [
                asyncio.ensure_future(p.verify_async_unless(txs, txs, lambda key: key in known))
                for txs in smalls
            ]
            await asyncio.sleep(0)
            assert p.requests_sent == 1  # busy: the small jobs wait for its reply
            answers = await asyncio.gather(*later)
            return await busy, answers, p.requests_sent

    head, answers, requests = asyncio.run(scenario())
    assert [v.ok for v in head] == [True] * 3
    for j, (txs, got) in enumerate(zip(smalls, answers, strict=True)):
        if j == 7:
            assert got == [None] * len(txs)  # skipped: known by the time it left the queue
            continue
        assert [v.hash for v in got if v is not None] == [tx_hash(tx) for tx in txs]
        assert [v.ok for v in got if v is not None] == ([True, False] if j == 4 else [True] * len(txs))
    merged = sum(len(txs) for j, txs in enumerate(smalls) if j != 7)
    assert requests == 2 and sizes == [3, merged]


def test_a_full_request_goes_to_a_busy_worker_without_waiting() -> None:
    """Coalescing never holds back a full request: jobs of batch_max txs go at once to a worker
    with room (up to MAX_IN_FLIGHT), as a lone validator's large client batches need."""
    txs = [transfer_tx(3, 9000 + i) for i in range(12)]

    async def scenario() -> tuple[int, list[Verified]]:
        with VerifierPool(CHAIN_ID, workers=1, batch_max=4) as p:
            pending = asyncio.ensure_future(p.verify_async(txs))
            await asyncio.sleep(0)
            sent = p.requests_sent
            return sent, await pending

    sent, results = asyncio.run(scenario())
    assert sent == 3
    assert [v.hash for v in results] == [tx_hash(tx) for tx in txs]


def test_a_busy_worker_gets_no_request_beyond_its_pipe_room_behind_a_skipped_job() -> None:
    """Merging checks the pipe's room for the first job it puts in, when the worker holds
    unanswered requests: a job at the head of the queue whose txs are all skipped (answered
    without a check) does not let a full request that does not fit slip through behind it (a
    send into a full pipe would block the event loop)."""
    from node.verifier_pool import PIPE_ROOM_MIN

    first = [transfer_tx(1, 6000 + i) for i in range(256)]  # ~15 ms of checks: the worker is busy
    known_tx = transfer_tx(1, 5000)
    known: set[bytes] = set()
    with VerifierPool(CHAIN_ID, workers=1, batch_max=256, pipe_buffer=PIPE_ROOM_MIN) as pool:
        pool.warm_up()
        room = pool.pipe_room
        first_size = sum(map(len, first)) + 8 * len(first)
        junk_len = (room - first_size + 4_096) // 256 - 8  # 256 of them overflow what is left
        assert first_size + 256 * (junk_len + 8) > room >= 256 * (junk_len + 8)
        junk = [bytes([0x0A]) + bytes([i]) * (junk_len - 1) for i in range(256)]

        async def scenario() -> tuple[int, list[Verified], list[Verified | None], list[Verified]]:
            busy = asyncio.ensure_future(pool.verify_async(first))
            await asyncio.sleep(0)
            skip = known.__contains__
            skipped = asyncio.ensure_future(pool.verify_async_unless([known_tx], [known_tx], skip))
            await asyncio.sleep(0)  # queued: the worker is busy and it is not a full request
            known.add(known_tx)  # committed meanwhile: skipped when it leaves the queue
            later = asyncio.ensure_future(pool.verify_async(junk))  # full, but over the room left
            await asyncio.sleep(0)
            sent = pool.requests_sent
            return sent, await busy, await skipped, await later

        sent, a, none, b = asyncio.run(scenario())
    assert sent == 1  # the full request waited for the first answer
    assert none == [None]
    assert [v.ok for v in a] == [True] * 256
    assert [v.hash for v in b] == [tx_hash(t) for t in junk]
