"""A synchronous gRPC client for the node's ``Node`` service, and JSON views of its answers.

Theory of operation
-------------------
``NodeClient("127.0.0.1:26657")`` opens one insecure gRPC channel (loopback devnets; put TLS
in front for anything else) and exposes the ``Node`` RPCs as plain blocking methods:
``submit``/``submit_many`` (SignedTx bytes in, one ``SubmitTxResponse`` per tx out),
``status``, ``block``, ``tx``, ``account``, ``stream_blocks``, ``snapshot``, plus two
polling helpers, ``wait_for_height`` and ``wait_for_tx``. It is what the ``ita`` CLI, the
devnet load generator, the integration tests and the benchmark use.

Errors are typed: an unreachable node or an expired deadline raises ``NodeUnavailable``; any
other RPC failure raises ``NodeError`` with the gRPC status code and the server's details;
``NOT_FOUND`` answers of ``block``/``tx`` raise ``NotFound`` (``tx`` returns ``None`` when
asked with ``missing_ok=True``). A *rejected transaction* is not an error: it is an answer
with ``accepted = False`` and a code (see proto/ita/v1/node.proto).

The ``*_to_dict`` functions turn the protobuf answers into JSON-ready dicts: bytes as
lower-case hex (addresses as ``0x`` + 40 hex), enums by name, integers as JSON integers
(never strings), transactions decoded (sender, nonce, action) next to their hash.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from node.blocks import block_id
from proto.ita.v1 import block_pb2, node_pb2, tx_pb2
from stf.config import address_of
from stf.signing import format_address, tx_hash

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "NodeClient",
    "NodeError",
    "NodeUnavailable",
    "NotFound",
    "account_to_dict",
    "block_to_dict",
    "proto_to_dict",
    "status_to_dict",
    "submit_to_dict",
    "tx_to_dict",
    "signed_tx_to_dict",
]

DEFAULT_TIMEOUT_S = 10.0
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_SERVICE = "/ita.v1.Node/"


class NodeError(Exception):
    """An RPC to the node failed; ``code`` is the gRPC status code (None if there was no RPC)."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None, details: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.details = details


class NodeUnavailable(NodeError):
    """The node could not be reached (connection refused, DNS, deadline exceeded)."""


class NotFound(NodeError):
    """The node does not have what was asked for (block above its height, unknown tx)."""


def _check_address(address: str) -> str:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"node address must be HOST:PORT (e.g. 127.0.0.1:26657), got {address!r}")
    return address


def _identity(data: bytes) -> bytes:
    return data


class PendingSubmit:
    """A ``SubmitTxs`` call in flight (NodeClient.submit_many_async)."""

    def __init__(self, client: NodeClient, future: Any) -> None:
        self.client = client
        self._future = future

    def done(self) -> bool:
        return bool(self._future.done())

    def result(self) -> list[node_pb2.SubmitTxResponse]:
        try:
            answer = self._future.result()
        except grpc.RpcError as exc:
            raise self.client._error(exc, "SubmitTxs") from None
        return list(answer.responses)


class NodeClient:
    """Blocking client of one node's ``Node`` gRPC service. Use as a context manager or ``close()``."""

    def __init__(self, address: str, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.address = _check_address(address)
        self.timeout = timeout
        self._channel = grpc.insecure_channel(
            address,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.enable_http_proxy", 0),
            ],
        )
        pb = node_pb2
        self._submit = self._unary("SubmitTx", pb.SubmitTxRequest, pb.SubmitTxResponse)
        self._submit_many = self._unary("SubmitTxs", pb.SubmitTxsRequest, pb.SubmitTxsResponse)
        self._status = self._unary("Status", pb.StatusRequest, pb.StatusResponse)
        self._get_block = self._channel.unary_unary(
            _SERVICE + "GetBlock",
            request_serializer=pb.GetBlockRequest.SerializeToString,
            response_deserializer=_identity,
        )
        self._get_tx = self._unary("GetTx", pb.GetTxRequest, pb.GetTxResponse)
        self._get_account = self._unary("GetAccount", pb.GetAccountRequest, pb.GetAccountResponse)
        self._get_snapshot = self._channel.unary_stream(
            _SERVICE + "GetSnapshot",
            request_serializer=pb.GetSnapshotRequest.SerializeToString,
            response_deserializer=pb.SnapshotChunk.FromString,
        )
        self._stream_blocks = self._channel.unary_stream(
            _SERVICE + "StreamBlocks",
            request_serializer=pb.StreamBlocksRequest.SerializeToString,
            response_deserializer=_identity,
        )

    def _unary(self, method: str, request: Any, response: Any) -> Any:
        return self._channel.unary_unary(
            _SERVICE + method,
            request_serializer=request.SerializeToString,
            response_deserializer=response.FromString,
        )

    # ------------------------------------------------------------------ plumbing

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _error(self, exc: grpc.RpcError, what: str) -> NodeError:
        code = exc.code() if hasattr(exc, "code") else None
        details = (exc.details() if hasattr(exc, "details") else "") or ""
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return NodeUnavailable(
                f"cannot reach the node at {self.address} ({what}): {details or code}", code, details
            )
        if code == grpc.StatusCode.NOT_FOUND:
            return NotFound(f"{what}: not found: {details}", code, details)
        name = code.name if code is not None else "UNKNOWN"
        return NodeError(f"{what} failed at {self.address}: {name}: {details}", code, details)

    def _call(self, rpc: Any, request: Message, what: str, timeout: float | None = None) -> Any:
        try:
            return rpc(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as exc:
            raise self._error(exc, what) from None

    # ------------------------------------------------------------------ RPCs

    def submit(self, tx: bytes) -> node_pb2.SubmitTxResponse:
        """Submit one serialized SignedTx; the answer says accepted or why not."""
        return self._call(self._submit, node_pb2.SubmitTxRequest(tx=tx), "SubmitTx")

    def submit_many_async(self, txs: Sequence[bytes]) -> PendingSubmit:
        """Send a batch without waiting for the answer (open-loop load): ``.result()`` blocks for
        the per-tx responses or raises NodeError like ``submit_many``."""
        future = self._submit_many.future(node_pb2.SubmitTxsRequest(txs=list(txs)), timeout=self.timeout)
        return PendingSubmit(self, future)

    def submit_many(self, txs: Sequence[bytes]) -> list[node_pb2.SubmitTxResponse]:
        """Submit a batch (one request); one response per tx, in order."""
        answer = self._call(self._submit_many, node_pb2.SubmitTxsRequest(txs=list(txs)), "SubmitTxs")
        return list(answer.responses)

    def status(self, timeout: float | None = None) -> node_pb2.StatusResponse:
        return self._call(self._status, node_pb2.StatusRequest(), "Status", timeout)

    def block_bytes(self, height: int = 0) -> bytes:
        """The stored CommittedBlock bytes at ``height`` (0 = latest)."""
        what = f"GetBlock({height})" if height else "GetBlock(latest)"
        return self._call(self._get_block, node_pb2.GetBlockRequest(height=height), what)

    def block(self, height: int = 0) -> block_pb2.CommittedBlock:
        return block_pb2.CommittedBlock.FromString(self.block_bytes(height))

    def tx(self, hash_: bytes, *, missing_ok: bool = False) -> node_pb2.GetTxResponse | None:
        try:
            return self._call(self._get_tx, node_pb2.GetTxRequest(hash=hash_), f"GetTx({hash_.hex()})")
        except NotFound:
            if missing_ok:
                return None
            raise

    def account(self, address: bytes) -> node_pb2.GetAccountResponse:
        request = node_pb2.GetAccountRequest(address=address)
        return self._call(self._get_account, request, "GetAccount")

    def snapshot(self, height: int = 0, timeout: float | None = None) -> tuple[int, bytes, bytes]:
        """(height, snapshot bytes, app hash) of the snapshot at ``height`` (0 = latest)."""
        request = node_pb2.GetSnapshotRequest(height=height)
        try:
            chunks = list(self._get_snapshot(request, timeout=self.timeout if timeout is None else timeout))
        except grpc.RpcError as exc:
            raise self._error(exc, f"GetSnapshot({height})") from None
        if not chunks:
            raise NodeError(f"GetSnapshot({height}): the node sent no chunks")
        return chunks[0].height, b"".join(c.data for c in chunks), chunks[0].app_hash

    def stream_blocks(
        self, from_height: int = 1, timeout: float | None = None
    ) -> Iterator[block_pb2.CommittedBlock]:
        """Committed blocks from ``from_height`` on, live after catch-up (``timeout``: whole stream)."""
        call = self._stream_blocks(node_pb2.StreamBlocksRequest(from_height=from_height), timeout=timeout)
        try:
            for raw in call:
                yield block_pb2.CommittedBlock.FromString(raw)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED:
                return
            raise self._error(exc, f"StreamBlocks({from_height})") from None
        finally:
            call.cancel()

    # ------------------------------------------------------------------ polling helpers

    def wait_for_height(self, height: int, timeout: float = 60.0, poll: float = 0.1) -> int:
        """Poll Status until the node's committed height is >= ``height``; return that height."""
        deadline = time.monotonic() + timeout
        last: NodeError | None = None
        while time.monotonic() < deadline:
            try:
                current = self.status(timeout=min(self.timeout, 2.0)).height
            except NodeError as exc:
                last = exc
            else:
                if current >= height:
                    return current
            time.sleep(poll)
        hint = f" (last error: {last})" if last is not None else ""
        raise TimeoutError(f"{self.address} did not reach height {height} within {timeout:.0f} s{hint}")

    def wait_for_tx(self, hash_: bytes, timeout: float = 30.0, poll: float = 0.1) -> node_pb2.GetTxResponse:
        """Poll GetTx until the tx is committed; TimeoutError if it is still pending (or unknown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.tx(hash_, missing_ok=True)
            if found is not None and not found.pending:
                return found
            time.sleep(poll)
        raise TimeoutError(f"tx {hash_.hex()} not committed within {timeout:.0f} s")


# ---------------------------------------------------------------------------- JSON views


def _scalar(field: Any, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_BYTES:
        return bytes(value).hex()
    if field.type == FieldDescriptor.TYPE_ENUM:
        enum_value = field.enum_type.values_by_number.get(value)
        return enum_value.name if enum_value is not None else value
    if isinstance(value, Message):
        return proto_to_dict(value)
    return value


def proto_to_dict(message: Message) -> dict[str, Any]:
    """Every field (defaults included; of a oneof only the set member) with bytes as hex."""
    out: dict[str, Any] = {}
    field: Any
    for field in message.DESCRIPTOR.fields:
        oneof = field.containing_oneof
        if oneof is not None and message.WhichOneof(oneof.name) != field.name:
            continue
        value = getattr(message, field.name)
        if field.is_repeated:
            out[field.name] = [_scalar(field, v) for v in value]
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            out[field.name] = proto_to_dict(value) if message.HasField(field.name) else None
        else:
            out[field.name] = _scalar(field, value)
    return out


def _hex_address(raw: bytes) -> str:
    return format_address(raw) if len(raw) == 20 else raw.hex()


def signed_tx_to_dict(raw: bytes) -> dict[str, Any]:
    """A SignedTx decoded for humans: hash, sender, nonce, chain id and the action."""
    out: dict[str, Any] = {"hash": tx_hash(raw).hex(), "size": len(raw)}
    try:
        signed = tx_pb2.SignedTx.FromString(raw)
        body = tx_pb2.TxBody.FromString(signed.body)
    except DecodeError as exc:
        out["error"] = f"undecodable SignedTx: {exc}"
        return out
    out["sender"] = format_address(address_of(signed.public_key)) if len(signed.public_key) == 32 else None
    out["public_key"] = signed.public_key.hex()
    out["chain_id"] = body.chain_id
    out["nonce"] = body.nonce
    action = body.WhichOneof("action")
    out["action"] = action
    if action is not None:
        detail = proto_to_dict(getattr(body, action))
        if action == "transfer":
            detail["to"] = _hex_address(getattr(body, action).to)
        out[action] = detail
    return out


def status_to_dict(status: node_pb2.StatusResponse) -> dict[str, Any]:
    out = proto_to_dict(status)
    out["validator_address"] = _hex_address(status.validator_address) if status.validator_address else ""
    return out


def block_to_dict(committed: block_pb2.CommittedBlock, *, txs: bool = True) -> dict[str, Any]:
    """Header, block id, app hash, and (with ``txs``) every tx decoded with its result."""
    header = committed.block.header
    out: dict[str, Any] = {
        "height": header.height,
        "block_id": block_id(committed.block).hex(),
        "app_hash": committed.app_hash.hex(),
        "header": proto_to_dict(header),
        "num_txs": len(committed.block.txs),
        "certificate_bytes": len(committed.certificate),
    }
    out["header"]["proposer"] = _hex_address(header.proposer)
    if txs:
        out["txs"] = [
            {**signed_tx_to_dict(raw), "result": proto_to_dict(result)}
            for raw, result in zip(committed.block.txs, committed.results, strict=False)
        ]
    return out


def tx_to_dict(found: node_pb2.GetTxResponse) -> dict[str, Any]:
    out: dict[str, Any] = {"hash": found.hash.hex(), "pending": found.pending}
    if not found.pending:
        out["height"] = found.height
        out["index"] = found.index
        out["result"] = proto_to_dict(found.result)
    out["tx"] = signed_tx_to_dict(found.tx) if found.tx else None
    return out


def account_to_dict(account: node_pb2.GetAccountResponse) -> dict[str, Any]:
    out = proto_to_dict(account)
    out["address"] = _hex_address(account.address)
    return out


def submit_to_dict(answer: node_pb2.SubmitTxResponse) -> dict[str, Any]:
    return proto_to_dict(answer)
