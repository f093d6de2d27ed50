"""The core package (consensus/*.py, not the simulator) stays deterministic and I/O-free.

Checked on the syntax tree: no imports of clocks, randomness, asyncio, sockets, threads or
files; no float literals or float(); no hash(); no sets (their iteration order depends on
PYTHONHASHSEED for str/bytes).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "consensus"
FORBIDDEN_MODULES = {"random", "time", "datetime", "asyncio", "socket", "threading", "os", "io", "secrets",
                     "multiprocessing", "subprocess", "selectors"}
FORBIDDEN_CALLS = {"hash", "float", "set", "frozenset", "open", "print", "input"}


def core_files() -> list[Path]:
    return sorted(p for p in CORE.glob("*.py"))


def violations(path: Path) -> list[str]:
    found: list[str] = []
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                    found.append(f"{where} imports {alias.name}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FORBIDDEN_MODULES:
            found.append(f"{where} imports from {node.module}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, float):
            found.append(f"{where} float literal")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in FORBIDDEN_CALLS:
                found.append(f"{where} calls {node.func.id}()")
        elif isinstance(node, ast.Set | ast.SetComp):
            found.append(f"{where} set display")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            found.append(f"{where} true division")
    return found


def test_there_are_core_files() -> None:
    assert {"core.py", "voteset.py", "proposer.py", "messages.py"} <= {p.name for p in core_files()}


@pytest.mark.parametrize("path", core_files(), ids=lambda p: p.name)
def test_core_module_is_pure(path: Path) -> None:
    assert violations(path) == []


def test_checker_catches_violations(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nx = {1, 2}\ny = hash(b'a') / 2.0\n")
    found = violations(bad)
    assert len(found) == 5, found
