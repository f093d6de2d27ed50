# ita — set-up, code generation, tests, benchmarks, devnet.
# Everything a fresh machine needs is installed here into .venv; nothing relies on hand installs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTOS := $(wildcard proto/ita/v1/*.proto)
GEN_STAMP := proto/ita/v1/.generated
FAST_STAMP := build/fast/.built

.PHONY: setup proto fast test test-slow lint typecheck bench devnet clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# Generated protobuf/grpc code is not committed: it is regenerated from proto/ita/v1/*.proto
# whenever a .proto changes (see README "Generated code").
$(GEN_STAMP): $(STAMP) $(PROTOS)
	$(BIN)/python -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. --pyi_out=. $(PROTOS)
	touch $(GEN_STAMP)

setup: $(STAMP) $(GEN_STAMP)

proto: $(GEN_STAMP)

# Compiled STF: mypyc builds stf/ into build/fast (rebuilt when stf/ changes); stf/ itself stays
# pure Python. Nodes and indexers run the compiled build when it is fresh (stf/__init__.py,
# ITA_STF=auto|pure|compiled); tests run the pure one and tests/test_stf_compiled.py both.
$(FAST_STAMP): $(STAMP) $(GEN_STAMP) $(wildcard stf/*.py) bench/build_fast.py
	$(BIN)/python bench/build_fast.py
	touch $(FAST_STAMP)

fast: $(FAST_STAMP)

test: setup fast
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy stf consensus genesis sdk node rpc

bench: setup fast
	$(BIN)/python bench/stf.py

devnet: setup fast
	$(BIN)/ita devnet up --validators 4 --load 20

clean:
	rm -rf $(VENV) $(GEN_STAMP) proto/ita/v1/*_pb2*.py proto/ita/v1/*_pb2*.pyi
