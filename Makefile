# Two entry points: `make demo` runs the main job, `make test` runs the test suite.
# Both create .venv on first use; pip takes torch/torchvision from this machine's disk.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
FMNIST ?= $(abspath ../shared/data/fashion-mnist)

.PHONY: audit-provenance demo test install install-dev bench-pruning bench-latency-calibration bench-criteria bench-speed bench-layers bench-scale bench-explanations bench-gradmask bench-classes zoo clean results-readme test-strength bench-robustness bench-models bench-subspaces bench-deploy bench-vit bench-transformer-scale

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@# the report's browser test drives Debian's chromium through Playwright (no browser download)
	command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium) || \
	  echo "chromium not installed: the browser test will be skipped"
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/neurotomy demo --out demo-out

test: install-dev
	NEUROTOMY_FMNIST_FULL=$(FMNIST) $(BIN)/python -m pytest

zoo: install
	$(BIN)/python benchmarks/train_zoo.py --root $(FMNIST)

# the README's results block (figures, tables, claims) from benchmarks/results/*.json
results-readme: install
	$(BIN)/python benchmarks/readme_results.py

# the fuzz test of the CLI, corrupt-file tests and resume check, counted (benchmarks/results/robustness.json)
bench-robustness: install-dev
	$(BIN)/python benchmarks/robustness.py

# the mutation check as a table: which broken versions of each criterion / attribution method the tests catch
test-strength: install-dev
	$(BIN)/python benchmarks/test_strength.py

# issue 19: ours vs torch-pruning at −50/−70/−85 % MACs and 1.5/2/3× speed-up, ± reconstruction, 3 fine-tune
# epochs each (long, resumable), then batch-64 speed-ups (waits for a quiet machine) → pruning_budget.json
bench-pruning: install
	$(BIN)/python benchmarks/pruning_budget.py --root $(FMNIST)

# issue 19: the latency table's predicted vs measured speed-ups, one-point vs calibrated on measured cuts
# (data-free criteria at 1.5/2/3×, 1 thread, waits for a quiet machine; minutes) → latency_calibration.json
bench-latency-calibration: install
	$(BIN)/python benchmarks/latency_calibration.py

# every criterion × MACs target × scope (long: fine-tuning), then speed on the same architectures (waits for a quiet machine)
bench-criteria: install
	$(BIN)/python benchmarks/pruning_criteria.py --root $(FMNIST)
	$(BIN)/python benchmarks/pruning_speed.py --root $(FMNIST)

clean:
	rm -rf $(VENV) demo-out .pytest_cache

bench-layers: install
	$(BIN)/python benchmarks/layer_dynamics.py --root $(FMNIST) --models zoo:resnet20-fmnist zoo:resnet56-fmnist zoo:vgg16-fmnist

bench-speed: install
	$(BIN)/python benchmarks/pruning_speed.py --root $(FMNIST)

bench-scale: install
	$(BIN)/python benchmarks/scale.py --root $(FMNIST)

# every attribution method × every metric, ROAR at reduced scale, throughput vs pytorch-grad-cam
bench-explanations: install
	$(BIN)/python benchmarks/explanations.py --root $(FMNIST)

# plain vs gradient-mask training: accuracy, after 50 % pruning, FGSM/PGD, saliency focus
bench-gradmask: install
	$(BIN)/python benchmarks/grad_mask.py --root $(FMNIST) --resnet-seeds 0 1 --resnet-short-control

# class feature subsets (ResNet-20/56), decomposed heads, per-class modules, patching weak models
bench-classes: install
	$(BIN)/python benchmarks/classes.py --root $(FMNIST)

# torchvision + timm classifiers and a user-file model: MACs vs FlopCounterMode, prune −50 % MACs, reload, explain
bench-models: install-dev
	nice $(BIN)/python benchmarks/model_matrix.py

# relevant directions of ResNet-20's last block: PRCA vs PCA vs random (relevance, accuracy kept), DRSA subspaces
bench-subspaces: install
	$(BIN)/python benchmarks/subspaces.py --root $(FMNIST)

# zoo:resnet20-fmnist and its −50 % MACs cut as PyTorch, onnxruntime fp32 and int8: accuracy, size, latency, reasons kept
bench-deploy: install-dev
	$(BIN)/python benchmarks/deploy.py --root $(FMNIST) --threads 1

# zoo:vit-tiny-fmnist: heads / MLP neurons / embedding cut at −30/−50/−70 % MACs vs torch-pruning's ViT recipe, 3 fine-tune
# epochs each (long, resumable), explanations before/after, then batch-64 CPU speed-up (waits for a quiet machine)
bench-vit: install
	$(BIN)/python benchmarks/vit.py --root $(FMNIST)

# #21: plan + cut (filters −10 % MACs, MLP neurons, heads) of swin_t@64, maxvit_t@224, deit_tiny@224 in a fresh
# process each: seconds and peak memory vs ≤ 60 s and ≤ 2 GB (time it on a quiet machine; timm comes with install-dev)
bench-transformer-scale: install-dev
	$(BIN)/python benchmarks/transformer_scale.py --threads 1

# #17: which committed results still lack a measured load (the benchmarks to rerun)
audit-provenance: install
	$(BIN)/python benchmarks/audit_provenance.py
