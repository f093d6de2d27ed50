"""The STF tests again, against the mypyc build of stf/ (build/fast, made by `make fast`).

`make test` builds it first (bench/build_fast.py; rebuilt only when stf/ changes), so both the
pure and the compiled STF are tested on every run. Without a fresh build (plain `pytest`), these
tests are skipped with a reason rather than testing stale extension modules.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stf import stale_reason

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.skipif(bool(stale_reason()), reason="no fresh mypyc build in build/fast: run `make fast`"),
    pytest.mark.skipif(os.environ.get("ITA_COMPILED_RUN") == "1", reason="already inside the compiled run"),
]

# Runs the given Python code with ITA_STF=compiled (stf/__init__.py then loads every stf module
# from build/fast) after checking that each module really is an extension module.
PRELUDE = """
import pkgutil, sys
import stf
assert stf.BUILD == "compiled", stf.BUILD_NOTE
for info in pkgutil.iter_modules(stf.__path__):
    module = __import__("stf." + info.name, fromlist=["_"])
    assert module.__file__.endswith(".so"), module.__file__
"""


def run_compiled(code: str, timeout: int) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ITA_COMPILED_RUN="1", ITA_STF="compiled")
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + code],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )


@pytest.mark.timeout(600)
def test_stf_tests_pass_against_the_compiled_build() -> None:
    tests = sorted(str(p) for p in (ROOT / "tests").glob("test_stf_*.py") if p.name != Path(__file__).name)
    args = ["-q", "-m", "not slow", "-p", "no:cacheprovider", *tests]
    proc = run_compiled(f"import pytest; sys.exit(pytest.main({args!r}))", timeout=590)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout


@pytest.mark.timeout(300)
def test_compiled_and_pure_builds_give_the_same_app_hashes() -> None:
    code = "from tests.test_stf_determinism import replay_hash; print(replay_hash())"
    compiled = run_compiled(code, timeout=290)
    assert compiled.returncode == 0, compiled.stderr
    from tests.test_stf_determinism import replay_hash

    assert compiled.stdout.strip() == replay_hash()
