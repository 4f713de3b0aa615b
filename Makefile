# equirl developer targets. `make demo` and `make test` work from a fresh clone: they create .venv
# (CPU torch, all extras) on first use; the stamp makes setup idempotent and redo itself when
# pyproject.toml changes.
VENV       ?= .venv
PYTHON     ?= python3
PY         := $(VENV)/bin/python
PIP        := $(PY) -m pip
# the CPU build of torch (this pin is setup-only; pyproject declares a range)
TORCH_SPEC ?= torch==2.13.0
EXTRAS     ?= rl,language,vision,dev,docs,dist
STAMP      := $(VENV)/.equirl-setup-$(shell cksum pyproject.toml | cut -d' ' -f1)
PYTEST_ARGS ?= -n 2

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup demo test test-slow test-all fuzz lint type format bench docs wheel-check clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@echo "setting up $(VENV): the CPU build of torch, then equirl[$(EXTRAS)] (a few minutes the first time; once)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@rm -f $(VENV)/.equirl-setup-*
	@echo "  1/2 $(TORCH_SPEC)"
	$(PIP) install -q --disable-pip-version-check --progress-bar on "$(TORCH_SPEC)"
	@echo "  2/2 equirl[$(EXTRAS)] and its dependencies"
	$(PIP) install -q --disable-pip-version-check --progress-bar on -e ".[$(EXTRAS)]"
	@if $(PIP) list 2>/dev/null | grep -i -E "nvidia|cuda"; then \
		echo "error: a CUDA build crept into $(VENV) (see above); remove $(VENV) and set TORCH_SPEC to a CPU build"; exit 1; fi
	@touch $@

demo: setup
	$(VENV)/bin/equirl demo

test: setup
	$(PY) -m pytest -q -rs $(PYTEST_ARGS)

test-slow: setup
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

test-all: setup
	$(PY) -m pytest -q -m "slow or not slow" $(PYTEST_ARGS)

# the CLI fuzzer's long profile ($(FUZZ_EXAMPLES) examples per strategy; `make test` runs its short CI profile).
# FUZZ_COLLECT=violations.jsonl records every contract violation instead of stopping at the first
FUZZ_EXAMPLES ?= 300
fuzz: setup
	HYPOTHESIS_PROFILE=fuzz FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q -p no:xdist tests/test_fuzz.py

lint: setup
	$(VENV)/bin/ruff check equirl tests equirl_gymnasium.py setup.py
	$(VENV)/bin/ruff format --check equirl tests equirl_gymnasium.py setup.py

format: setup
	$(VENV)/bin/ruff format equirl tests equirl_gymnasium.py setup.py
	$(VENV)/bin/ruff check --fix equirl tests equirl_gymnasium.py setup.py

type: setup
	$(VENV)/bin/mypy

bench: setup
	$(VENV)/bin/equirl bench symmetrizers

# build the wheel, install it in a fresh venv outside the checkout and run it from another folder
wheel-check:
	PYTHON=$(PYTHON) TORCH_SPEC="$(TORCH_SPEC)" bash .ci/wheel-check

# the documentation site (mkdocs.yml) into site/; warnings (broken links, docstring errors) are errors
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache site
