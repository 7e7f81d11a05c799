# Set-up and the everyday commands. Every target installs what it needs into $(VENV).
PYTHON ?= python3
VENV   ?= .venv
# A CPU build of torch 2.13.0 lies on this machine's disk; elsewhere set TORCH to the build you want,
# e.g. `make test TORCH="torch --index-url https://download.pytorch.org/whl/cpu"`.
TORCH  ?= torch==2.13.0
BIN     = $(VENV)/bin

.PHONY: demo test bench docs clean install install-bench install-docs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[test,eval]'
	touch $@

install: $(VENV)/.installed

$(VENV)/.installed-bench: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

install-bench: $(VENV)/.installed-bench

$(VENV)/.installed-docs: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[test,docs]'
	touch $@

install-docs: $(VENV)/.installed-docs

demo: install
	$(BIN)/pillargraph demo

# the docs extra too, so that tests/test_docs.py runs instead of skipping without Sphinx
test: install-docs
	$(BIN)/python -m pytest -q

docs: install-docs
	$(MAKE) -C docs html SPHINXBUILD=$(abspath $(BIN))/sphinx-build

clean:
	rm -rf $(VENV) docs/_build docs/generated
