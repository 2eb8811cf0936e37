# `make test` and `make demo` work from a fresh clone: they create .venv when it is
# missing and install the package under constraints.txt (torch pinned to the CPU wheel).
# `make demo` installs only what the demo needs (the `data` extra: scikit-learn's digits);
# `make setup`/`make test` install the `dev` extra (tests, ONNX, TensorBoard, the docs site).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo

.PHONY: setup test demo docs bench bench-deps clean

setup: $(STAMP)

# The venv, made once, with a current pip.
define venv
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
endef

$(STAMP): pyproject.toml constraints.txt
	$(venv)
	$(PIP) install --quiet -c constraints.txt torch==2.13.0
	$(PIP) install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# Only what the demo needs (torch pinned, the package, the data extra), in one pip call.
$(DEMO_STAMP): pyproject.toml constraints.txt
	$(venv)
	$(PIP) install --quiet -c constraints.txt torch==2.13.0 -e ".[data]"
	touch $(DEMO_STAMP)

test: $(STAMP)
	$(PY) -m pytest -n auto --dist loadfile

demo: $(DEMO_STAMP)
	$(PY) -m contdepth demo
	@echo "The command line is in .venv: run .venv/bin/contdepth --help (or: source .venv/bin/activate, then contdepth --help)"

# The documentation site into site/ (mkdocs, warnings as errors; the docs extra is part of dev).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict
	@echo "The site is in site/: open site/index.html"

# Peers for the benchmarks.  torchdyn declares torchvision (no CPU wheel exists), so it
# and torchcde are installed without their declared dependencies, plus what they import.
bench-deps: $(STAMP)
	$(PIP) install --quiet -c constraints.txt ".[bench]" attrs trampoline scipy torchsde
	$(PIP) install --quiet --no-deps torchdyn==1.0.6 torchcde==0.2.5

bench: bench-deps
	$(PY) benchmarks/solver_overhead.py

clean:
	rm -rf $(VENV) build site *.egg-info
