# lowshot-bench. `make test` and `make bench` create .venv and install the project first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
MODEL  ?= maskcluster
DATA   ?=
RESULTS ?= results/runs

STAMP := $(VENV)/.installed

.PHONY: install test bench leaderboard figure1 pretrain-tiny clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -c constraints.txt -e '.[test]'
	touch $@

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/lowshot bench --model $(MODEL) $(if $(DATA),--data-root $(DATA),--embedded) --results $(RESULTS)

clean:
	rm -rf $(VENV) *.egg-info
