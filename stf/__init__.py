"""The state transition function. This file only chooses which build of it runs.

Theory of operation
- stf/*.py is the one source. `make fast` (bench/build_fast.py) compiles every other module of
  this package with mypyc into build/fast/stf/ (one extension module per source, beside a copy of
  the exact source it was compiled from) plus mypyc's shared library in build/fast/.
- `ITA_STF` picks the build when the package is first imported: `pure` runs stf/*.py; `compiled`
  runs build/fast/stf and fails loudly if that build is missing or stale; `auto` (the default)
  runs the compiled build when it is fresh (every copy equals its source here and has its
  extension module) and the pure one otherwise. A fresh build is the same code, so both give the
  same results and app hashes (tests/test_stf_compiled.py runs the STF tests on both).
- Choosing the compiled build points this package's `__path__` at build/fast/stf, so every
  `stf.*` submodule comes from there and the two builds never mix in one process. `BUILD` says
  which one runs ("pure" or "compiled"); `BUILD_NOTE` says why.
"""

from __future__ import annotations

import os
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

PURE_DIR = Path(__file__).resolve().parent
FAST_ROOT = PURE_DIR.parent / "build" / "fast"
NOT_COMPILED = ("__init__.py",)  # this chooser stays Python in both builds


def compiled_sources() -> list[Path]:
    """The stf sources mypyc compiles."""
    return sorted(p for p in PURE_DIR.glob("*.py") if p.name not in NOT_COMPILED)


def stale_reason(out: Path = FAST_ROOT) -> str:
    """Why `out` is not a fresh compiled build of stf/ ("" when it is fresh)."""
    for source in compiled_sources():
        copy = out / "stf" / source.name
        if not copy.exists() or copy.read_bytes() != source.read_bytes():
            return f"{copy} is missing or differs from {source}"
        if not any((copy.parent / (source.stem + suffix)).exists() for suffix in EXTENSION_SUFFIXES):
            return f"no extension module for {source.name} built for this Python in {copy.parent}"
    return ""


def _choose() -> tuple[str, str]:
    wanted = os.environ.get("ITA_STF", "auto")
    if wanted not in ("auto", "pure", "compiled"):
        raise ImportError(f"ITA_STF={wanted!r}: expected auto, pure or compiled")
    if wanted == "pure":
        return "pure", "ITA_STF=pure"
    reason = stale_reason()
    if reason:
        if wanted == "compiled":
            raise ImportError(f"ITA_STF=compiled but there is no fresh build ({reason}): run `make fast`")
        return "pure", f"no fresh compiled build: {reason}"
    if str(FAST_ROOT) not in sys.path:
        sys.path.append(str(FAST_ROOT))  # mypyc's shared library is a top-level module there
    global __path__
    __path__ = [str(FAST_ROOT / "stf")]
    return "compiled", f"ITA_STF={wanted}: fresh build in {FAST_ROOT}"


BUILD, BUILD_NOTE = _choose()
