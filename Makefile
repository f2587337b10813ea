# Two entry points, both from a fresh clone with Python 3.11 and make:
#   make serve   install, train the default model if the repository has none, serve it
#   make test    install, lint, type-check and run the whole test suite
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
MODELS ?= models

.PHONY: serve test check lint typecheck pytest train install browser prometheus protos clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Serving and training only (no test toolchain), for `make serve`.
# An editable install compiles no bytecode (pip does for every other package): compile
# it, or each start compiles the service's modules again (a fifth of its start-up).
$(VENV)/.installed-train: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[train]'
	$(PY) -m compileall -q service model_training
	touch $@

# Everything the tests, linters and type checks need.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	# TF Serving's gRPC stubs, for tests/protocols/test_grpc_tfserving.py: its metadata
	# requires the "tensorflow" distribution, which would install beside the train extra's
	# tensorflow-cpu (the same module); everything else it needs is there.
	$(PY) -m pip install --quiet --no-deps 'tensorflow-serving-api~=2.21.0'
	$(PY) -m compileall -q service model_training
	touch $@ $(VENV)/.installed-train

install: $(VENV)/.installed

train: $(VENV)/.installed-train
	$(PY) -m model_training --model-repository $(MODELS) --if-missing

serve: train
	$(PY) -m service --model-repository $(MODELS)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: install
	$(PY) -m mypy

# The playground test drives a real headless Chromium: Debian's package, never a download.
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

# The alert rules' tests run Debian's promtool and a real Prometheus (never a download).
prometheus:
	@command -v promtool >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq prometheus >/dev/null; }

pytest: install browser prometheus
	$(PY) -m pytest

test: lint typecheck pytest

# The inner loop: lint, types and the in-process tier (no server processes, no training
# in the test process, no containers, browser or benchmarks).
FAST := not (process or training or containers or browser or benchmark)
check: lint typecheck install
	SOFTMAX_TRAINED_CACHE=.pytest_cache/trained $(PY) -m pytest -q -m "$(FAST)"

# The gRPC messages (service/protocols/grpc/*.proto), regenerated and committed: serving
# needs protobuf only, not the compiler.
protos: install
	$(PY) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. service/protocols/grpc/*.proto

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
