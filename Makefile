# lowshot-bench. Every target creates .venv and installs the project first (once; again when pyproject.toml changes).
PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
MODEL   ?= maskcluster
DATA    ?=
RESULTS ?= results/runs
EMBEDDED_RESULTS := results/embedded

STAMP := $(VENV)/.installed

.PHONY: install test test-fast bench leaderboard figure1 gpu-check results pretrain-tiny ablation-collapse clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -c constraints.txt -e '.[test]'
	touch $@

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The inner loop: every test but the slow end-to-end runs (@pytest.mark.slow: the 13-dataset transfer run, the
# concurrent runs, torchrun, the full embedded task, the perf scripts, ...); `make test` runs them too.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# MODEL: a method (dino|ibot|mae|msn|maskcluster), 'all', a registry name or a checkpoint file.
# Without DATA: the embedded dataset and the tiny models, offline. With DATA=<root>: the real protocols.
bench: $(STAMP)
	$(BIN)/lowshot bench --model $(MODEL) $(if $(DATA),--data-root $(DATA)) --results $(RESULTS)

leaderboard: $(STAMP)
	$(BIN)/lowshot leaderboard $(RESULTS)

figure1: $(STAMP)
	$(BIN)/lowshot plot figure1 $(RESULTS)

# Every CUDA path checked against the CPU and every GPU figure, in one JSON (< 8 min on one H100 / H200; without a
# GPU the CUDA items are reported as skipped). GPU_CHECK_ARGS="--device cpu --small" is the CI run.
GPU_CHECK_OUT  ?= gpu_check.json
GPU_CHECK_ARGS ?=
gpu-check: $(STAMP)
	$(BIN)/python -m lowshot.benchmark.perf.gpu_check --out $(GPU_CHECK_OUT) $(GPU_CHECK_ARGS)

# Regenerate the committed embedded-default results (records, leaderboard, figures, report) in results/embedded.
# Records of a results directory (<results>/<model>/<task>/*.json and their *.evidence.npz; the saved split files stay): deleted before a
# regeneration, so that no record of an older configuration is left beside the new ones.
clear_records = find $(1) -mindepth 3 -maxdepth 3 \( -name '*.json' -o -name '*.evidence.npz' \) -not -path '*/splits/*' -delete

results: $(STAMP)
	$(call clear_records,$(EMBEDDED_RESULTS))
	$(BIN)/lowshot bench --model all --model random-tiny --results $(EMBEDDED_RESULTS) --overwrite
	$(BIN)/lowshot leaderboard $(EMBEDDED_RESULTS)
	$(BIN)/lowshot plot families $(EMBEDDED_RESULTS)
	$(BIN)/lowshot report $(EMBEDDED_RESULTS)

# Re-train the tiny models shipped in model_zoo/weights/ (CPU, one after another, ~50 min); prints their sha256
# for model_zoo/registry.py. Bit-exact only on the same machine, thread count and torch/timm versions.
pretrain-tiny: $(STAMP)
	$(BIN)/python -m lowshot.benchmark.tiny_models

# The collapse-avoidance ablation in results/ablation-collapse/: MaskCluster's tiny recipe (both: centering + ME-MAX,
# the shipped maskcluster-tiny's config) and centering, ME-MAX or Sinkhorn alone -- four ~10-minute CPU runs, one
# thread each, ABLATION_JOBS at a time, weights and run directories in build/ -- each scored on embedded-lowshot
# every 20 steps while it trains (curves.csv, ablation_curves.png|pdf); then the final table next to the shipped
# maskcluster-tiny and random-tiny.
ABLATION_RESULTS := results/ablation-collapse
ABLATION_BUILD := build/ablation-collapse
ABLATION_JOBS ?= 2
ablation-collapse: $(STAMP)
	$(BIN)/python -m lowshot.benchmark.tiny_models --ablation both centering memax sinkhorn --jobs $(ABLATION_JOBS) \
		--out $(ABLATION_BUILD) --work $(ABLATION_BUILD)/runs
	cp $(ABLATION_BUILD)/curves.csv $(ABLATION_BUILD)/ablation_curves.png $(ABLATION_BUILD)/ablation_curves.pdf $(ABLATION_RESULTS)/
	$(call clear_records,$(ABLATION_RESULTS))
	$(BIN)/lowshot bench --quiet --results $(ABLATION_RESULTS) --overwrite --model maskcluster-tiny --model random-tiny \
		$(foreach v,centering memax sinkhorn,--model $(ABLATION_BUILD)/maskcluster-tiny-$(v).safetensors)
	$(BIN)/lowshot leaderboard $(ABLATION_RESULTS)
	$(BIN)/lowshot plot families $(ABLATION_RESULTS)
	$(BIN)/lowshot report $(ABLATION_RESULTS)

clean:
	rm -rf $(VENV) *.egg-info
