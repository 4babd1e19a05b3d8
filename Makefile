# Two commands on a fresh machine: `make run` and `make test` (`make docs` builds the site).
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG ?= examples/digits_mlp.toml
OUT    ?= runs/digits

.PHONY: run test lint docs clean

$(PY):
	python3 -m venv $(VENV)

# torch is pinned first: 2.13.0 is the local CPU build, a looser spec would fetch a CUDA build.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,hls4ml,qonnx,docs]'
	touch $(STAMP)

# The default search: trains the digits MLP (or reuses OUT/model.pt), then searches.
run: $(STAMP)
	$(VENV)/bin/bitscout search $(CONFIG) --out $(OUT)

test: $(STAMP)
	$(PY) -m pytest

# Style, types and the import layers (pyproject.toml's [tool.importlinter]): all three run,
# so one report shows every problem; any failure fails the target.
lint: $(STAMP)
	@rc=0; \
	$(VENV)/bin/ruff check src tests || rc=1; \
	$(VENV)/bin/mypy src || rc=1; \
	$(VENV)/bin/lint-imports || rc=1; \
	exit $$rc

# The documentation site (mkdocs.yml) into site/; --strict fails on a broken link or reference.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean:
	rm -rf runs site .pytest_cache
