# secondsight: `make demo` runs the pipeline on the demo data set, `make test` runs every test.
# Each target installs what it needs into .venv (idempotent: a stamp file records the install).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.secondsight-installed
SUBJ ?= 1
SUBJ2 := $(shell printf '%02d' $(SUBJ))
RUN_DIR := runs/demo/subj$(SUBJ2)
export MPLBACKEND := Agg
export PYTHONHASHSEED := 0
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1

.PHONY: install lock demo test test-nb test-py test-slurm slurm-deps check-clean docs bench bench-gpu gpu-check rehearsal clean-venv

install: $(STAMP) $(BIN)/quarto

$(STAMP): settings.ini setup.py constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	# torch first, from the local wheels (the CUDA build; it runs on the CPU too)
	$(BIN)/python -m pip install -c constraints.txt torch torchvision
	$(BIN)/python -m pip install -c constraints.txt -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (secondsight)"
	touch $(STAMP)

# nbdev_docs, finding no `quarto` on PATH, runs sudo installs and `pip install -e .[dev]` into this venv: this stand-in
# is found instead, and says in one line that Quarto is missing and `make docs` builds the offline site (a real Quarto
# further on PATH runs as usual).
$(BIN)/quarto: tools/quarto_stand_in.sh | $(STAMP)
	install -m 755 tools/quarto_stand_in.sh $@

# Refresh constraints.txt (the tested versions) from .venv, after upgrading there and passing make test.
lock:
	{ head -2 constraints.txt; $(BIN)/python -m pip freeze --exclude-editable; } > constraints.txt.new && mv constraints.txt.new constraints.txt

# The main job: notebooks 00 -> 04 through papermill on the demo data set (SUBJ=2 etc. work the same).
demo: install
	mkdir -p $(RUN_DIR)
	for nb in 00_data 01_encoders 02b_models 03_search 04_metrics; do \
	  $(BIN)/papermill nbs/$$nb.ipynb $(RUN_DIR)/$$nb.ipynb --cwd nbs -k python3 -l python \
	    -p subj $(SUBJ) -p dataset demo -p out_dir $(CURDIR)/$(RUN_DIR) || exit 1; \
	done
	@echo "demo finished: executed notebooks and results under $(RUN_DIR)/"

# Fails if tools/clean_outputs.py (small figures, no stderr noise, no machine paths, Jupyter's layout, so that a save in
# JupyterLab is undone; it prints each notebook's bytes and warns above 1 MB in all), nbdev_clean or nbdev_export would
# change tracked files, then runs the notebooks and pytest.
test: install check-clean test-nb test-py

check-clean: install
	@before="$$(git diff --no-ext-diff HEAD -- nbs secondsight | sha1sum)"; \
	$(BIN)/python tools/clean_outputs.py && $(BIN)/nbdev_clean && $(BIN)/nbdev_export || exit 1; \
	after="$$(git diff --no-ext-diff HEAD -- nbs secondsight | sha1sum)"; \
	untracked="$$(git ls-files --others --exclude-standard -- secondsight)"; \
	if [ "$$before" != "$$after" ] || [ -n "$$untracked" ]; then \
	  echo "clean_outputs/nbdev_clean/nbdev_export changed files: run them (make check-clean) and commit the result"; \
	  git status --short -- nbs secondsight; exit 1; fi; \
	echo "notebooks clean and package in sync with the notebooks"

test-nb: install
	$(BIN)/nbdev_test --n_workers 2 --timing

test-py: install
	$(BIN)/python -m pytest tests -x -q -rs

# secondsight-slurm alone; tests/test_slurm_cluster.py starts a one-node SLURM itself (root, `make slurm-deps`), else skips saying why.
test-slurm: install
	$(BIN)/python -m pytest tests/test_slurm_cli.py tests/test_slurm_cluster.py -q -rs

# SLURM's daemons and commands for tests/test_slurm_cluster.py (Debian, as root: CI); elsewhere it says why not.
slurm-deps:
	@if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && command -v sbatch >/dev/null; then echo "SLURM is installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge; \
	else echo "SLURM is not installed and cannot be here (needs root and apt-get): tests/test_slurm_cluster.py will be skipped"; fi

# Offline docs site in _site/ (nbdev's proc_nbs, then tools/docs_site.py: titles, sidebar, search, local API links, MathML)
# and README.md from nbs/index.ipynb; fails on a broken local link or anchor, or a page showing front matter, #| options,
# prompts, raw math (a formula across a line break too) or progress bars. Where Quarto is installed, `nbdev_docs` builds
# the published site (deploy.yaml); elsewhere it stops at .venv/bin/quarto, the stand-in above, and installs nothing.
docs: install
	$(BIN)/python tools/build_docs.py

# CPU benchmarks (each ends with one JSON line; results in bench/results/, figures in nbs/bench.ipynb)
bench: install
	mkdir -p bench/results
	for b in preprocess_session gnet_throughput library_ranking prepare_cost cost_model; do \
	  $(BIN)/python bench/$$b.py | tee bench/results/$$b.txt || exit 1; done

# Full-size rehearsal of the NSD path (not in make test): an NSD mirror at real shapes and the published model formats
# at full size with random weights (data/rehearsal/, ~12 GB), then notebooks 00 -> 04 through papermill on it, then 03 and 04
# on MindEye's route (BOI as published) on a second small mirror; DEVICE=cuda on a GPU
rehearsal: install
	mkdir -p bench/results
	$(BIN)/python bench/rehearsal.py --device $(or $(DEVICE),cpu) | tee bench/results/rehearsal.txt

# GPU benchmark (under 8 min on one H100/H200): SD 2.1 unCLIP + the hybrid encoder at full size, random weights, 768 px: batch, attention, dtype, compile, sampler, the reconstruction vs the floor; needs CUDA
bench-gpu: install
	mkdir -p bench/results
	$(BIN)/python bench/gpu_search.py | tee bench/results/gpu_search.txt

# The GPU check (at most 9 min on one H100/H200, builds included; --budget 540 s, phases skipped by name when short):
# the bench-gpu essentials (UNet s/sample and best batch, float16 vs bfloat16, DDIM 50 vs DPM-Solver++ 20, peak memory, one
# reconstruction vs the cost model's floor), the notebooks' `#| cuda` cells on a local random-weight unCLIP, and the
# rehearsal's 03 stage on the GPU; one JSON line in bench/results/gpu_check.txt. It needs no network, but the venv must be
# made on the GPU machine (`make install` needs the package registries; a venv is too big to copy there): where there are
# none, run `python bench/gpu_check.py` in any environment with the project's dependencies. --device cpu --tiny: its test.
gpu-check: install
	mkdir -p bench/results
	$(BIN)/python bench/gpu_check.py | tee bench/results/gpu_check.txt

clean-venv:
	rm -rf $(VENV)
