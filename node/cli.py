"""The ``ita`` command line: keys, init, genesis helpers, start, query, tx, indexer, devnet.

Conventions (README "Devnet and CLI")
- Queries and tx answers are JSON on stdout (one document, indented); diagnostics go to stderr.
- Exit codes: 0 success; 1 the node answered but said no (tx rejected at admission or failed
  in its block, block/tx not found); 2 bad usage or input (argparse errors, malformed decimal,
  bad key file, invalid genesis); 3 the node or indexer could not be reached or the RPC failed.
- Prices and sizes are decimal strings in the market's precision (``--price 65000.5 --size
  0.01``), converted exactly by ``sdk.tx.limit_order`` & co: lossy or off-grid input is
  refused before anything is signed. The market specs come from a genesis file: ``--genesis
  FILE``, else ``--home DIR`` (DIR/genesis.json), else ``$ITA_HOME/genesis.json``, else, when
  the node's chain id is the devnet's (``ita-devnet-1``), the bundled devnet markets. The chain
  id always comes from the node (``Status``) and must match the genesis used for the specs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from genesis.devnet import DEVNET_CHAIN_ID, DEVNET_MARKETS, devnet_config
from genesis.schema import (
    GenesisError,
    format_genesis_time,
    genesis_to_dict,
    load_genesis,
    loads_genesis_json,
    parse_genesis,
    write_genesis,
)
from node.config import ConfigError, NodeConfig, NodeHome, parse_config, parse_host_port, write_config
from proto.ita.v1 import tx_pb2
from sdk import tx as sdk_tx
from sdk.client import (
    NodeClient,
    NodeError,
    NodeUnavailable,
    NotFound,
    account_to_dict,
    block_to_dict,
    status_to_dict,
    submit_to_dict,
    tx_to_dict,
)
from sdk.keys import Key, KeyFileError, devnet_account_key, devnet_validator_key
from sdk.units import UnitsError, from_units
from stf.config import COLLATERAL_DECIMALS, ChainConfig, MarketSpec
from stf.signing import format_address, parse_address, tx_hash

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_UNAVAILABLE", "EXIT_USAGE", "CliError", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3

DEFAULT_NODE = "127.0.0.1:26657"
DEFAULT_VALIDATOR_POWER = 10


class CliError(Exception):
    """A failure reported as one line on stderr with an exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def _print_json(doc: object) -> None:
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    sys.stdout.flush()


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    raise CliError(message, code)


# ---------------------------------------------------------------------------- helpers


def _load_key(path: str) -> Key:
    try:
        return Key.load(path)
    except FileNotFoundError:
        _fail(f"key file {path} does not exist (create one with `ita keys new --out {path}`)")
    except (KeyFileError, OSError, ValueError) as exc:
        _fail(f"bad key file: {exc}")


def _parse_address(text: str) -> bytes:
    try:
        return parse_address(text)
    except ValueError as exc:
        _fail(str(exc))


def _parse_hash(text: str) -> bytes:
    body = text[2:] if text.startswith("0x") else text
    if len(body) != 64:
        _fail(f"a tx hash is 64 hex digits, got {text!r}")
    try:
        return bytes.fromhex(body)
    except ValueError:
        _fail(f"a tx hash is 64 hex digits, got {text!r}")


def _check_node_address(text: str) -> str:
    try:
        parse_host_port(text, "--node")
    except ConfigError as exc:
        _fail(str(exc))
    return text


def _client(args: argparse.Namespace) -> NodeClient:
    return NodeClient(_check_node_address(args.node), timeout=args.timeout)


def _load_genesis_file(path: Path) -> ChainConfig:
    try:
        return load_genesis(path)
    except FileNotFoundError:
        _fail(f"genesis file {path} does not exist")
    except OSError as exc:
        _fail(f"cannot read genesis file {path}: {exc}")
    except GenesisError as exc:
        _fail(f"invalid genesis {path}: {exc}")


def _devnet_markets_chain() -> ChainConfig:
    return devnet_config(validators=1, accounts=0)


def resolve_chain(genesis: str | None, home: str | None, node_chain_id: str | None) -> ChainConfig:
    """The chain whose market specs the CLI uses (module docstring: --genesis, --home, $ITA_HOME, devnet)."""
    source: Path | None = None
    if genesis:
        source = Path(genesis)
    elif home:
        source = NodeHome(Path(home)).genesis_file
    elif os.environ.get("ITA_HOME"):
        source = NodeHome(Path(os.environ["ITA_HOME"])).genesis_file
    if source is not None:
        chain = _load_genesis_file(source)
    elif node_chain_id in (None, DEVNET_CHAIN_ID):
        chain = _devnet_markets_chain()
    else:
        _fail(
            f"the node runs chain {node_chain_id!r}: pass --genesis FILE or --home DIR so the CLI "
            "knows its markets' precision"
        )
    if node_chain_id is not None and chain.chain_id != node_chain_id:
        _fail(f"the genesis is for chain {chain.chain_id!r} but the node runs {node_chain_id!r}")
    return chain


def _market_spec(chain: ChainConfig, symbol: str) -> MarketSpec:
    spec = chain.market_by_symbol.get(symbol)
    if spec is None:
        known = ", ".join(m.symbol for m in chain.markets)
        _fail(f"unknown market {symbol!r}; this chain has {known}")
    return spec


def _http_get_json(base: str, path: str, timeout: float) -> Any:
    url = base.rstrip("/") + path
    if not url.startswith(("http://", "https://")):
        _fail(f"--indexer must be an http(s):// URL, got {base!r}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (scheme checked above)
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read())
            message = body.get("error", {}).get("message", "") if isinstance(body, dict) else ""
        except (ValueError, AttributeError):
            message = ""
        code = EXIT_FAILED if exc.code == 404 else EXIT_UNAVAILABLE if exc.code >= 500 else EXIT_USAGE
        _fail(f"indexer {url}: HTTP {exc.code}: {message or exc.reason}", code)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        _fail(f"cannot reach the indexer at {base}: {reason}", EXIT_UNAVAILABLE)
    except ValueError as exc:
        _fail(f"indexer {url} did not answer JSON: {exc}", EXIT_UNAVAILABLE)


# ---------------------------------------------------------------------------- keys


def cmd_keys_new(args: argparse.Namespace) -> int:
    if args.devnet_account is not None and args.devnet_validator is not None:
        _fail("--devnet-account and --devnet-validator are exclusive")
    if args.devnet_account is not None:
        key = devnet_account_key(args.devnet_account)
    elif args.devnet_validator is not None:
        key = devnet_validator_key(args.devnet_validator)
    else:
        key = Key.generate()
    out = Path(args.out)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, mode=0o700)
    try:
        key.save(out, overwrite=args.force)
    except KeyFileError as exc:
        _fail(str(exc))
    _print_json({"file": str(out), "address": key.address_hex, "public_key": key.public_key.hex()})
    return EXIT_OK


def cmd_keys_show(args: argparse.Namespace) -> int:
    key = _load_key(args.file)
    _print_json({"file": args.file, "address": key.address_hex, "public_key": key.public_key.hex()})
    return EXIT_OK


# ---------------------------------------------------------------------------- init / genesis


def single_validator_genesis(chain_id: str, key: Key, moniker: str, time_ms: int) -> ChainConfig:
    """A genesis with ``key`` as the only validator, the devnet markets, no accounts, faucet on."""
    doc: dict[str, object] = {
        "chain_id": chain_id,
        "genesis_time": format_genesis_time(time_ms),
        "faucet_enabled": True,
        "faucet_max_per_account": "100000",
        "insurance_fund": "1000000",
        "validators": [
            {"name": moniker, "public_key": key.public_key.hex(), "power": DEFAULT_VALIDATOR_POWER}
        ],
        "markets": [dict(m) for m in DEVNET_MARKETS],
        "accounts": [],
    }
    return parse_genesis(doc)


def cmd_init(args: argparse.Namespace) -> int:
    home = NodeHome(Path(args.home))
    if home.config_file.exists() or home.validator_key_file.exists():
        _fail(f"{home.root} is already initialized (config.toml or keys exist); refusing to overwrite")
    try:  # the same checks load_config will apply at start
        config = parse_config(
            {
                "moniker": args.moniker,
                "grpc": {"listen": args.grpc_listen},
                "metrics": {"listen": args.metrics_listen},
            }
        )
    except ConfigError as exc:
        _fail(f"bad option: {exc}")
    if args.devnet_validator is not None:
        key = devnet_validator_key(args.devnet_validator)
    else:
        key = Key.generate()
    if args.genesis:
        chain = _load_genesis_file(Path(args.genesis))
        if args.chain_id and chain.chain_id != args.chain_id:
            _fail(f"--chain-id {args.chain_id!r} differs from the genesis file's {chain.chain_id!r}")
    else:
        if not args.chain_id:
            _fail("--chain-id is required unless --genesis FILE is given")
        try:
            chain = single_validator_genesis(args.chain_id, key, args.moniker, int(time.time()) * 1000)
        except GenesisError as exc:
            _fail(f"cannot build a genesis: {exc}")
    home.ensure_dirs()
    key.save(home.validator_key_file)
    Key.generate().save(home.node_key_file)
    write_genesis(home.genesis_file, chain)
    write_config(home.config_file, config)
    is_validator = any(v.public_key == key.public_key for v in chain.validators)
    _print_json(
        {
            "home": str(home.root),
            "chain_id": chain.chain_id,
            "moniker": args.moniker,
            "validator_address": key.address_hex,
            "validator_public_key": key.public_key.hex(),
            "in_genesis_validators": is_validator,
            "grpc_listen": config.grpc_listen,
            "metrics_listen": config.metrics_listen,
        }
    )
    if not is_validator:
        print(
            f"note: this node's key is not a validator of {args.genesis}; add it with "
            f"`ita genesis add-validator --home {home.root} --key {home.validator_key_file}`",
            file=sys.stderr,
        )
    return EXIT_OK


def _genesis_path(args: argparse.Namespace) -> Path:
    if args.file:
        return Path(args.file)
    if args.home:
        return NodeHome(Path(args.home)).genesis_file
    _fail("pass --file GENESIS.json or --home DIR")


def _edit_genesis(path: Path, edit: Callable[[dict[str, Any]], None]) -> ChainConfig:
    try:
        doc = loads_genesis_json(path.read_bytes())
    except FileNotFoundError:
        _fail(f"genesis file {path} does not exist")
    except GenesisError as exc:
        _fail(f"invalid genesis {path}: {exc}")
    edit(doc)
    try:
        chain = parse_genesis(doc)
    except GenesisError as exc:
        _fail(f"the edited genesis would be invalid: {exc}")
    write_genesis(path, chain)
    return chain


def cmd_genesis_show(args: argparse.Namespace) -> int:
    chain = _load_genesis_file(_genesis_path(args))
    _print_json(genesis_to_dict(chain))
    return EXIT_OK


def cmd_genesis_add_validator(args: argparse.Namespace) -> int:
    if (args.key is None) == (args.public_key is None):
        _fail("pass exactly one of --key FILE or --public-key HEX")
    public_hex = _load_key(args.key).public_key.hex() if args.key else args.public_key.lower()

    def edit(doc: dict[str, Any]) -> None:
        validators = doc.get("validators")
        if not isinstance(validators, list):
            _fail("genesis has no validators array")
        validators.append({"name": args.name, "public_key": public_hex, "power": args.power})

    chain = _edit_genesis(_genesis_path(args), edit)
    _print_json(
        {
            "validators": [
                {"name": v.name, "public_key": v.public_key.hex(), "power": v.power} for v in chain.validators
            ]
        }
    )
    return EXIT_OK


def cmd_genesis_add_account(args: argparse.Namespace) -> int:
    address = format_address(_parse_address(args.address))

    def edit(doc: dict[str, Any]) -> None:
        accounts = doc.get("accounts")
        if not isinstance(accounts, list):
            _fail("genesis has no accounts array")
        accounts.append({"address": address, "balance": args.balance})

    chain = _edit_genesis(_genesis_path(args), edit)
    _print_json({"accounts": len(chain.accounts), "added": address, "balance": args.balance})
    return EXIT_OK


def cmd_genesis_devnet(args: argparse.Namespace) -> int:
    from devnet.network import devnet_chain  # noqa: PLC0415 (devnet is optional for other commands)

    chain = devnet_chain(args.validators, args.accounts, int(time.time()) * 1000)
    write_genesis(args.out, chain)
    _print_json(
        {
            "file": args.out,
            "chain_id": chain.chain_id,
            "validators": len(chain.validators),
            "accounts": len(chain.accounts),
            "genesis_time": format_genesis_time(chain.genesis_time_ms),
        }
    )
    return EXIT_OK


# ---------------------------------------------------------------------------- start / indexer


def cmd_start(args: argparse.Namespace) -> int:
    home = NodeHome(Path(args.home))
    for needed in (home.config_file, home.genesis_file):
        if not needed.exists():
            _fail(f"{needed} does not exist: create the home with `ita init --home {home.root} ...`")
    from node.main import run_node  # noqa: PLC0415 (heavy imports only when starting a node)

    try:
        return run_node(home.root)
    except (ConfigError, GenesisError, KeyFileError) as exc:
        _fail(f"cannot start: {exc}")


def cmd_indexer(args: argparse.Namespace) -> int:
    try:
        from rpc.service import main as indexer_main  # noqa: PLC0415
    except ImportError as exc:
        _fail(f"the indexer is not available in this build: {exc}", EXIT_FAILED)
    result = indexer_main(list(args.rest))  # --node, --home, --listen, --otlp-endpoint, ...
    return int(result or 0)


# ---------------------------------------------------------------------------- query


def cmd_query_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print_json(status_to_dict(client.status()))
    return EXIT_OK


def cmd_query_block(args: argparse.Namespace) -> int:
    if args.height < 0:
        _fail("HEIGHT must be >= 0 (0 = latest)")
    with _client(args) as client:
        _print_json(block_to_dict(client.block(args.height), txs=not args.no_txs))
    return EXIT_OK


def cmd_query_tx(args: argparse.Namespace) -> int:
    hash_ = _parse_hash(args.hash)
    with _client(args) as client:
        found = client.tx(hash_)
        assert found is not None
        _print_json(tx_to_dict(found))
    return EXIT_OK


def cmd_query_account(args: argparse.Namespace) -> int:
    address = _parse_address(args.address)
    if args.indexer:
        _print_json(_http_get_json(args.indexer, f"/v1/accounts/{format_address(address)}", args.timeout))
        return EXIT_OK
    with _client(args) as client:
        account = account_to_dict(client.account(address))
        try:
            chain: ChainConfig | None = resolve_chain(args.genesis, args.home, client.status().chain_id)
        except CliError:
            chain = None  # integers only: the markets' precision is unknown here
    if chain is not None:
        add_decimals(account, chain)
    _print_json(account)
    return EXIT_OK


def add_decimals(account: dict[str, Any], chain: ChainConfig) -> None:
    """Decimal strings next to the integer units of an account view (``*_decimal``, ``collateral_usd``)."""
    account["collateral_usd"] = from_units(int(account["collateral"]), COLLATERAL_DECIMALS)
    for order in account.get("orders", []):
        spec = chain.market_by_symbol.get(order["market"])
        if spec is not None:
            order["price_decimal"] = from_units(int(order["price"]), spec.price_decimals)
            order["size_decimal"] = from_units(int(order["size"]), spec.size_decimals)
    for position in account.get("positions", []):
        spec = chain.market_by_symbol.get(position["market"])
        if spec is not None:
            position["size_decimal"] = from_units(int(position["size"]), spec.size_decimals)


def _indexer_url(args: argparse.Namespace) -> str:
    url: str | None = args.indexer or os.environ.get("ITA_INDEXER")
    if not url:
        _fail("this query needs the indexer: pass --indexer http://HOST:PORT (or set ITA_INDEXER)")
    return url


def cmd_query_book(args: argparse.Namespace) -> int:
    market = urllib.parse.quote(args.market, safe="")
    _print_json(
        _http_get_json(_indexer_url(args), f"/v1/markets/{market}/book?depth={args.depth}", args.timeout)
    )
    return EXIT_OK


def cmd_query_trades(args: argparse.Namespace) -> int:
    market = urllib.parse.quote(args.market, safe="")
    _print_json(_http_get_json(_indexer_url(args), f"/v1/markets/{market}/trades", args.timeout))
    return EXIT_OK


def cmd_query_markets(args: argparse.Namespace) -> int:
    _print_json(_http_get_json(_indexer_url(args), "/v1/markets", args.timeout))
    return EXIT_OK


# ---------------------------------------------------------------------------- tx


def _build_order(args: argparse.Namespace, chain: ChainConfig) -> tx_pb2.PlaceOrder:
    spec = _market_spec(chain, args.market)
    if args.type == "market":
        if args.tif is not None:
            _fail("a market order takes no --tif (it is IOC by definition)")
        return sdk_tx.market_order(
            spec,
            side=args.side,
            size=args.size,
            worst_price=args.price,
            reduce_only=args.reduce_only,
            client_order_id=args.client_order_id,
        )
    return sdk_tx.limit_order(
        spec,
        side=args.side,
        price=args.price,
        size=args.size,
        tif=args.tif or "gtc",
        reduce_only=args.reduce_only,
        client_order_id=args.client_order_id,
    )


def _build_action(args: argparse.Namespace, chain: ChainConfig) -> sdk_tx.Action:
    kind = args.tx_command
    if kind == "order":
        return _build_order(args, chain)
    if kind == "cancel":
        _market_spec(chain, args.market)
        if (args.order_id is None) == (args.client_order_id is None):
            _fail("cancel needs exactly one of --order-id or --client-order-id")
        return sdk_tx.cancel_order(args.market, order_id=args.order_id, client_order_id=args.client_order_id)
    if kind == "cancel-all":
        if args.market:
            _market_spec(chain, args.market)
        return sdk_tx.cancel_all(args.market or "")
    if kind == "transfer":
        return sdk_tx.transfer(_parse_address(args.to), sdk_tx.usd(args.amount))
    if kind == "faucet":
        return sdk_tx.faucet(sdk_tx.usd(args.amount))
    _fail(f"unknown tx command {kind!r}")


def cmd_tx(args: argparse.Namespace) -> int:
    key = _load_key(args.key)
    with _client(args) as client:
        chain_id = client.status().chain_id
        chain = resolve_chain(args.genesis, args.home, chain_id)
        try:
            action = _build_action(args, chain)
        except (sdk_tx.TxBuildError, UnitsError) as exc:
            _fail(str(exc))
        raw = sdk_tx.Signer(key, chain_id).sign(action)
        answer = client.submit(raw)
        out: dict[str, Any] = {"sender": key.address_hex, **submit_to_dict(answer)}
        out["hash"] = tx_hash(raw).hex()
        if not answer.accepted:
            _print_json(out)
            return EXIT_FAILED
        if args.wait:
            try:
                found = client.wait_for_tx(tx_hash(raw), timeout=args.wait_timeout)
            except TimeoutError as exc:
                _print_json(out)
                _fail(str(exc), EXIT_FAILED)
            committed = tx_to_dict(found)
            out.update(
                {"height": committed["height"], "index": committed["index"], "result": committed["result"]}
            )
            _print_json(out)
            return EXIT_OK if found.result.code == 0 else EXIT_FAILED
        _print_json(out)
    return EXIT_OK


# ---------------------------------------------------------------------------- devnet


def cmd_devnet(args: argparse.Namespace) -> int:
    from devnet import orchestrate  # noqa: PLC0415

    return orchestrate.run_command(args)


# ---------------------------------------------------------------------------- parser


def _add_node(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--node",
        default=os.environ.get("ITA_NODE", DEFAULT_NODE),
        help=f"HOST:PORT of the node's gRPC (default $ITA_NODE or {DEFAULT_NODE})",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per RPC (default 10)")


def _add_specs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--genesis", help="genesis file with the market specs (see `ita tx --help`)")
    p.add_argument("--home", help="node home whose genesis.json has the market specs")


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _keys_parser(sub: Any) -> None:
    keys = sub.add_parser("keys", help="create and inspect ed25519 key files").add_subparsers(
        dest="keys_command", required=True
    )
    new = keys.add_parser("new", help="write a new key file (mode 0600)")
    new.add_argument("--out", required=True, help="key file to create")
    new.add_argument("--force", action="store_true", help="replace an existing file")
    new.add_argument(
        "--devnet-account",
        type=_non_negative,
        metavar="I",
        help="write the PUBLIC devnet account key #I instead of a fresh key",
    )
    new.add_argument(
        "--devnet-validator",
        type=_non_negative,
        metavar="I",
        help="write the PUBLIC devnet validator key #I instead of a fresh key",
    )
    new.set_defaults(func=cmd_keys_new)
    show = keys.add_parser("show", help="print a key file's address and public key (never the seed)")
    show.add_argument("file")
    show.set_defaults(func=cmd_keys_show)


def _init_genesis_parsers(sub: Any) -> None:
    init = sub.add_parser("init", help="create a node home: config.toml, keys, genesis.json")
    init.add_argument("--home", required=True)
    init.add_argument("--chain-id", default="", help="required unless --genesis is given")
    init.add_argument("--moniker", required=True)
    init.add_argument("--genesis", help="use this genesis file instead of a new single-validator one")
    init.add_argument("--grpc-listen", default=NodeConfig().grpc_listen)
    init.add_argument("--metrics-listen", default=NodeConfig().metrics_listen, help="empty disables metrics")
    init.add_argument(
        "--devnet-validator",
        type=_non_negative,
        metavar="I",
        help="use the PUBLIC devnet validator key #I (local devnets only)",
    )
    init.set_defaults(func=cmd_init)

    gen = sub.add_parser("genesis", help="genesis file helpers").add_subparsers(
        dest="genesis_command", required=True
    )
    for name, helptext, func in (
        ("show", "validate a genesis and print it in canonical form", cmd_genesis_show),
        ("add-validator", "append a validator (key file or public key)", cmd_genesis_add_validator),
        ("add-account", "append a funded account", cmd_genesis_add_account),
    ):
        p = gen.add_parser(name, help=helptext)
        p.add_argument("--file", help="the genesis file")
        p.add_argument("--home", help="node home: edits/reads HOME/genesis.json")
        p.set_defaults(func=func)
        if name == "add-validator":
            p.add_argument("--key", help="validator key file")
            p.add_argument("--public-key", help="64 hex digits")
            p.add_argument("--power", type=int, default=DEFAULT_VALIDATOR_POWER)
            p.add_argument("--name", default="")
        elif name == "add-account":
            p.add_argument("address", help="0x + 40 hex digits")
            p.add_argument("balance", help='USD as a decimal string, e.g. "1000000"')
    dev = gen.add_parser(
        "devnet", help="write the devnet genesis (genesis/devnet.json markets) with time = now"
    )
    dev.add_argument("--out", required=True)
    dev.add_argument("--validators", type=int, default=4)
    dev.add_argument("--accounts", type=int, default=50)
    dev.set_defaults(func=cmd_genesis_devnet)


def _query_parsers(sub: Any) -> None:
    query = sub.add_parser("query", help="read from a node (gRPC) or the indexer (HTTP); JSON on stdout")
    qs = query.add_subparsers(dest="query_command", required=True)
    status = qs.add_parser("status", help="height, last block hash, app hash, peers")
    _add_node(status)
    status.set_defaults(func=cmd_query_status)
    block = qs.add_parser("block", help="a committed block with its txs and results")
    block.add_argument("height", type=_non_negative, nargs="?", default=0, help="0 or omitted: latest")
    block.add_argument("--no-txs", action="store_true", help="header, ids and hashes only")
    _add_node(block)
    block.set_defaults(func=cmd_query_block)
    tx = qs.add_parser("tx", help="a tx by hash: pending or its height and result")
    tx.add_argument("hash")
    _add_node(tx)
    tx.set_defaults(func=cmd_query_tx)
    account = qs.add_parser("account", help="collateral, nonces, open orders, positions")
    account.add_argument("address")
    account.add_argument("--indexer", help="ask the indexer (http://HOST:PORT) instead of the node")
    _add_node(account)
    _add_specs(account)
    account.set_defaults(func=cmd_query_account)
    for name, func, helptext in (
        ("book", cmd_query_book, "order book of a market (indexer)"),
        ("trades", cmd_query_trades, "recent trades of a market (indexer)"),
    ):
        p = qs.add_parser(name, help=helptext)
        p.add_argument("market")
        p.add_argument("--indexer", help="http://HOST:PORT (default $ITA_INDEXER)")
        p.add_argument("--timeout", type=float, default=10.0)
        if name == "book":
            p.add_argument("--depth", type=int, default=20)
        p.set_defaults(func=func)
    markets = qs.add_parser("markets", help="market specs, oracle and mark prices (indexer)")
    markets.add_argument("--indexer")
    markets.add_argument("--timeout", type=float, default=10.0)
    markets.set_defaults(func=cmd_query_markets)


def _tx_parsers(sub: Any) -> None:
    tx = sub.add_parser(
        "tx",
        help="sign and submit a transaction",
        description="Market specs: --genesis FILE, else --home DIR, else $ITA_HOME, else the bundled "
        "devnet markets when the node runs ita-devnet-1. The chain id comes from the node.",
    )
    ts = tx.add_subparsers(dest="tx_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--key", required=True, help="key file of the signing account")
        _add_node(p)
        _add_specs(p)
        p.add_argument("--wait", action="store_true", help="wait until committed and print the result")
        p.add_argument("--wait-timeout", type=float, default=30.0)
        p.set_defaults(func=cmd_tx)

    order = ts.add_parser("order", help="place a limit or market order")
    order.add_argument("--market", required=True)
    order.add_argument("--side", required=True, choices=("buy", "sell"))
    order.add_argument("--size", required=True, help='decimal string, e.g. "0.01"')
    order.add_argument("--price", required=True, help="limit price, or the worst price of a market order")
    order.add_argument("--type", choices=("limit", "market"), default="limit")
    order.add_argument("--tif", choices=("gtc", "ioc", "post_only"), default=None, help="limit orders (gtc)")
    order.add_argument("--reduce-only", action="store_true")
    order.add_argument("--client-order-id", default="")
    common(order)
    cancel = ts.add_parser("cancel", help="cancel one order")
    cancel.add_argument("--market", required=True)
    cancel.add_argument("--order-id", type=_non_negative)
    cancel.add_argument("--client-order-id")
    common(cancel)
    cancel_all = ts.add_parser("cancel-all", help="cancel all open orders (of one market with --market)")
    cancel_all.add_argument("--market", default="")
    common(cancel_all)
    transfer = ts.add_parser("transfer", help="send USD collateral to another account")
    transfer.add_argument("--to", required=True, help="0x + 40 hex digits")
    transfer.add_argument("--amount", required=True, help='USD, e.g. "250.5"')
    common(transfer)
    faucet = ts.add_parser("faucet", help="devnet faucet: credit USD to the signer (if genesis enables it)")
    faucet.add_argument("--amount", required=True, help='USD, e.g. "1000"')
    common(faucet)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ita", description="ita: a BFT perpetual-futures exchange chain")
    sub = parser.add_subparsers(dest="command", required=True)
    _keys_parser(sub)
    _init_genesis_parsers(sub)
    start = sub.add_parser("start", help="run a validator from its home until SIGINT/SIGTERM")
    start.add_argument("--home", required=True)
    start.set_defaults(func=cmd_start)
    _query_parsers(sub)
    _tx_parsers(sub)
    # every option (and --help) goes to the indexer's own parser (rpc.service.parse_args)
    indexer = sub.add_parser(
        "indexer",
        help="run the indexer (HTTP + WebSocket) next to a node; options: `ita indexer --help`",
        add_help=False,
    )
    indexer.set_defaults(func=cmd_indexer, passthrough=True)
    from devnet.orchestrate import add_devnet_parser  # noqa: PLC0415

    add_devnet_parser(sub, cmd_devnet)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(list(argv) if argv is not None else None)
    if getattr(args, "passthrough", False):
        args.rest = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"ita: error: {exc}", file=sys.stderr)
        return exc.code
    except NotFound as exc:
        print(f"ita: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except NodeUnavailable as exc:
        print(f"ita: error: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except NodeError as exc:
        print(f"ita: error: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
