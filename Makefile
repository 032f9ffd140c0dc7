# Two commands: `make run` (every notebook, tiny preset, one at a time, executed copies + HTML in reports/;
# `python -m rlhf_helpers run --jobs 2` runs two at a time, with the same numbers: docs/tuning.md, round 9)
# and `make test` (unit tests + every notebook under nbval in the smoke preset). Both create or
# reuse the local virtual environment .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: venv dev run test bench site clean-artifacts

# Notebooks reach git without outputs: nbstripout is the git filter named in .gitattributes, so a
# learner's executed notebooks keep their outputs in the working copy while `git status`, `git diff`
# and commits see them stripped. (Idempotent: `git config` overwrites; skipped outside a git checkout.)
NBSTRIPOUT_ARGS := --keep-id
NBSTRIPOUT_EXTRA_KEYS := metadata.language_info.version metadata.language_info.codemirror_mode metadata.language_info.file_extension metadata.language_info.mimetype metadata.language_info.nbconvert_exporter metadata.language_info.pygments_lexer

venv: $(STAMP)
	@if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
	  git config filter.nbstripout.clean '$(BIN)/python -m nbstripout $(NBSTRIPOUT_ARGS)' && \
	  git config filter.nbstripout.smudge cat && \
	  git config filter.nbstripout.extrakeys '$(NBSTRIPOUT_EXTRA_KEYS)' && \
	  git config diff.ipynb.textconv '$(BIN)/python -m nbstripout $(NBSTRIPOUT_ARGS) -t'; \
	fi

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed, found " + sys.version.split()[0]'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-compile -r requirements.txt
	@# byte-compile the installed packages on every core (pip does it on one; measured on 2 cores: 61 s for
	@# pip's way, 53 s this way). A few files are meant for newer Pythons and fail to compile, as they do
	@# under pip, which ignores them too.
	@$(BIN)/python -m compileall -q -j 0 "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null 2>&1 || true
	@touch $(STAMP)

# Development tools (tests, site, browser test) on top of the learner's install: requirements-dev.txt.
dev: venv $(DEVSTAMP)

$(DEVSTAMP): requirements-dev.txt $(STAMP)
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-compile -r requirements-dev.txt
	@$(BIN)/python -m compileall -q -j 0 "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null 2>&1 || true
	@touch $(DEVSTAMP)

run: venv
	$(BIN)/python -m rlhf_helpers run --preset $${RLHF_PRESET:-tiny}

test: dev
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

# A static site of `make run`'s executed notebooks (reports/NN_*.ipynb; nothing is executed again):
# Sphinx + MyST-NB, offline. Open reports/site/index.html.
site: dev
	$(BIN)/python docs/site/build.py --notebooks reports --out reports/site

bench: venv
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/ppo.py

clean-artifacts:
	rm -rf artifacts reports
