"""Compile stf/ with mypyc into build/fast/ (`make fast`); the pure-Python stf/ stays as it is.

The compiled tree is build/fast/stf/: one extension module per stf module but stf/__init__.py
(plus mypyc's shared library in build/fast/) next to a copy of the exact sources it was compiled
from. stf/__init__.py picks the build at import (`ITA_STF=auto|pure|compiled`, default auto: the
compiled one when fresh); `is_fresh()` tells whether the copy still equals stf/.

Nothing here is needed at run time: without the build every process runs the pure STF.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from stf import compiled_sources, stale_reason  # noqa: E402  (only the chooser: no stf module loads)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "fast"
WORK = ROOT / "build" / "fast-work"  # generated C and object files


def sources() -> list[Path]:
    return compiled_sources()


def is_fresh(out: Path = OUT) -> bool:
    """True when build/fast holds a compiled module for, and the same source as, every stf module."""
    return not stale_reason(out)


def build() -> None:
    from mypyc.build import mypycify
    from setuptools import setup

    shutil.rmtree(OUT, ignore_errors=True)
    shutil.rmtree(WORK, ignore_errors=True)
    (OUT / "stf").mkdir(parents=True)
    paths = [str(p.relative_to(ROOT)) for p in sources()]
    started = time.perf_counter()
    setup(
        name="ita-stf-fast",
        ext_modules=mypycify(paths, opt_level="3", target_dir=str(WORK / "c")),
        script_args=["-q", "build_ext", "--build-lib", str(OUT), "--build-temp", str(WORK / "obj")],
    )
    for source in sources():  # the copy records what was compiled (see is_fresh)
        shutil.copy2(source, OUT / "stf" / source.name)
    shutil.copy2(ROOT / "stf" / "README.md", OUT / "stf" / "README.md")
    shutil.rmtree(WORK, ignore_errors=True)
    print(f"compiled {len(paths)} stf modules into {OUT} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    import os

    os.chdir(ROOT)  # mypy reads pyproject.toml and resolves imports from the repository root
    sys.path.insert(0, str(ROOT))
    build()
    if not is_fresh():
        raise SystemExit("build/fast is incomplete after the build")
