"""stf/__init__.py: which STF build a process runs (ITA_STF=auto|pure|compiled)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import stf

ROOT = Path(__file__).resolve().parent.parent


def run(env_value: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ITA_STF=env_value)
    code = "import stf, stf.block; print(stf.BUILD, stf.block.__file__)"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)


def test_this_test_process_runs_the_build_its_environment_names() -> None:
    """pure under plain pytest (tests/conftest.py); compiled inside tests/test_stf_compiled.py's run."""
    from stf import block

    assert stf.BUILD == os.environ["ITA_STF"]
    assert block.__file__ is not None
    assert block.__file__.endswith(".py" if stf.BUILD == "pure" else ".so")


def test_pure_is_honoured_and_unknown_values_are_refused() -> None:
    pure = run("pure")
    assert pure.returncode == 0, pure.stderr
    assert pure.stdout.startswith("pure ") and pure.stdout.strip().endswith("stf/block.py")
    bogus = run("fastest")
    assert bogus.returncode != 0
    assert "ITA_STF='fastest': expected auto, pure or compiled" in bogus.stderr


def test_a_missing_or_stale_build_is_reported(tmp_path: Path) -> None:
    assert "is missing or differs" in stf.stale_reason(tmp_path)
    copy = tmp_path / "stf"
    copy.mkdir()
    for source in stf.compiled_sources():
        (copy / source.name).write_bytes(source.read_bytes())
    assert "no extension module" in stf.stale_reason(tmp_path)  # sources copied, nothing compiled
    (copy / "actions.py").write_bytes(b"# edited after the build\n")
    assert "actions.py is missing or differs" in stf.stale_reason(tmp_path)


def test_auto_matches_the_freshness_of_build_fast() -> None:
    auto = run("auto")
    assert auto.returncode == 0, auto.stderr
    expected = "compiled" if not stf.stale_reason() else "pure"
    assert auto.stdout.split()[0] == expected
    compiled = run("compiled")
    if expected == "compiled":
        assert compiled.returncode == 0 and compiled.stdout.strip().endswith(".so")
    else:
        assert compiled.returncode != 0 and "run `make fast`" in compiled.stderr
