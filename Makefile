# Two commands: `make run` (every notebook, tiny preset, executed copies + HTML in reports/)
# and `make test` (unit tests + every notebook under nbval in the smoke preset). Both create or
# reuse the local virtual environment .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv run test bench clean-artifacts

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed, found " + sys.version.split()[0]'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	@touch $(STAMP)

run: venv
	$(BIN)/python -m rlhf_helpers run --preset $${RLHF_PRESET:-tiny}

test: venv
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

bench: venv
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/ppo.py

clean-artifacts:
	rm -rf artifacts reports
