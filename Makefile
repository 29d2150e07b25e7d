# loradyn: two commands do everything on a fresh machine.
#   make demo   - create .venv, install, run the main job (reproduce the paper, quick scale)
#   make test   - create .venv, install, run the test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/loradyn reproduce --scale quick --out report
	@echo "report written to $(CURDIR)/report/index.html (claims: report/claims.csv)"

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(STAMP)
	@for f in benchmarks/*.py; do echo "== $$f"; OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) report .pytest_cache
