# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SOURCES := kling_nb tests benchmarks scripts

.PHONY: demo test lint package lab bench mutate clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

demo: $(VENV)/.installed
	$(PY) scripts/demo.py

test: lint $(VENV)/.installed
	$(PY) -m pytest

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check $(SOURCES)
	$(VENV)/bin/ruff format --check $(SOURCES)
	$(VENV)/bin/mypy

# The wheel and sdist build, pass twine's checks, and the wheel imports in a fresh venv.
package: $(VENV)/.installed
	rm -rf dist build/package-venv
	$(PY) -m build --outdir dist . >/dev/null
	$(VENV)/bin/twine check --strict dist/*
	$(PYTHON) -m venv build/package-venv
	build/package-venv/bin/pip install -q dist/*.whl
	cd build && package-venv/bin/python -c "import kling_nb, kling_nb.notebook.magics; print('wheel imports:', kling_nb.__version__)"

lab: $(VENV)/.installed
	$(VENV)/bin/jupyter lab notebooks/

bench: $(VENV)/.installed
	$(PY) benchmarks/run.py

# Mutation testing of the money and secret modules (mutmut, one module at a time against its own
# tests; about 30 min on 2 cores) -> benchmarks/mutation.json. Not part of CI.
# `make mutate GROUPS="journal fields"` runs only some.
mutate: $(VENV)/.installed
	nice -n 19 $(PY) scripts/mutate.py $(GROUPS)

clean:
	rm -rf $(VENV) demo-output test-artifacts .pytest_cache dist build
