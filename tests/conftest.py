"""Test-wide set-up.

The tests run the pure-Python STF (stf/*.py), the reference build, unless ITA_STF is already set:
tests/test_stf_compiled.py runs the STF tests again with ITA_STF=compiled. The setting is in the
environment, so node and indexer processes started by the tests run the same build; a test that
wants the compiled build in a process passes ITA_STF=compiled to it.
"""

from __future__ import annotations

import os

os.environ.setdefault("ITA_STF", "pure")
