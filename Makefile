# One-command entry points. `make demo` and `make test` set up .venv on first use.
# TORCH pins the wheel installed first, so pip never resolves a different torch
# (override it for a CUDA machine: make demo TORCH="torch==2.13.0 --index-url ...").
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
export VAEKIT_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: setup demo test lint docs bench-guard clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev]"
	# Bytecode for the checkout, as pip writes it for an installed package: where
	# PYTHONDONTWRITEBYTECODE is set, every command would compile vaekit anew (0.2-0.5 s).
	$(BIN)/python -m compileall -q src
	touch $@

setup: $(BIN)/.installed

# The main job: train the 2-D VAE on UCI digits (no network needed), evaluate it,
# write its figures and the HTML report into runs/demo.
demo: setup
	rm -rf runs/demo
	$(BIN)/vaekit train --config configs/demo.yaml --out runs/demo
	$(BIN)/vaekit evaluate runs/demo --k 1000
	$(BIN)/vaekit report runs/demo
	@echo "open runs/demo/report.html"

test: setup
	$(BIN)/python -m pytest -q -n auto

lint: setup
	$(BIN)/ruff check src tests benchmarks docs/*.py
	$(BIN)/ruff format --check src tests benchmarks docs/*.py
	$(BIN)/mypy src/vaekit

# The documentation site into site/ (mkdocs.yml): warnings are errors, nothing is fetched.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# The speed guard CI runs: `vaekit train` as a whole process against a plain PyTorch loop
# of the same model, alternated in the same run; fails above 1.3x (benchmarks/README.md).
bench-guard: setup
	$(BIN)/python benchmarks/train_overhead.py --guard --out $${TMPDIR:-/tmp}/train_overhead_guard.json

clean:
	rm -rf $(VENV) runs site .pytest_cache .mypy_cache .ruff_cache
