# atr-demo: `make demo` runs the app on the bundled model, `make test` runs the test suite,
# `make test-fast` the suite without the real backbones and the browser, `make lint` runs ruff.
# Both set up .venv/ first (torch, then torchaudio with the same pin, then the rest, then the
# aiSFX backbone weights converted from the aisfx wheel).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
WEIGHTS_STAMP := $(VENV)/.aisfx-weights

.PHONY: install lint test test-fast demo bench clean-venv

install: $(STAMP) $(WEIGHTS_STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel
	$(PIP) install torch==2.9.1
	$(PIP) install -r requirements.txt
	$(PIP) install --no-deps -e .
	touch $@

$(WEIGHTS_STAMP): $(STAMP) training/convert_aisfx.py
	$(PY) -m training convert-aisfx
	touch $@

lint: install
	$(VENV)/bin/ruff check .

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -rs

test-fast: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not integration and not browser and not slow"

demo: install
	HF_HUB_OFFLINE=1 $(PY) app.py

bench: install
	$(PY) benchmarks/ot_vs_pot.py
	$(PY) benchmarks/audio_encoder.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/app_latency.py --model bundled

clean-venv:
	rm -rf $(VENV)
