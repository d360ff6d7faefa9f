# Every target sets up .venv first (a few seconds when nothing changed): see tools/setup_env.sh.
PYTHON := .venv/bin/python

.PHONY: setup test lint format demo demo-combo demo-negative-audio demo-catr

setup:
	@bash tools/setup_env.sh

test: setup
	$(PYTHON) -m pytest

lint: setup
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format: setup
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

# Synthetic data -> train -> evaluate (+ shuffled audio) -> masks/overlays; `ARGS=--quick` for a smoke run.
demo: setup
	$(PYTHON) tools/synthetic_demo.py $(ARGS)

# The same for COMBO (configs/synthetic/combo_tiny_s4.yaml): the generator writes the maskiges.
demo-combo: setup
	$(PYTHON) tools/synthetic_demo.py --config-file configs/synthetic/combo_tiny_s4.yaml \
		--output-dir output/demo_combo $(ARGS)

# The demo model trained with negative audio from iteration 650 on (silence, noise, off-screen
# sound must give an empty mask): configs/synthetic/avsegformer_tiny_s4_negative_audio.yaml.
demo-negative-audio: setup
	$(PYTHON) tools/synthetic_demo.py --config-file configs/synthetic/avsegformer_tiny_s4_negative_audio.yaml \
		--output-dir output/demo_negative_audio $(ARGS)

# The same for CATR (configs/synthetic/catr_tiny_s4.yaml).
demo-catr: setup
	$(PYTHON) tools/synthetic_demo.py --config-file configs/synthetic/catr_tiny_s4.yaml \
		--output-dir output/demo_catr $(ARGS)
