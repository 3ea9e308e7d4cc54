# coral-classifier: every job is a target; `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export TF_CPP_MIN_LOG_LEVEL ?= 2
export TF_ENABLE_ONEDNN_OPTS ?= 0
SHARED ?= ../shared
# Keras finds ImageNet weights here instead of downloading them (offline machines).
KERAS_HOME ?= $(abspath $(SHARED)/weights/keras)
export KERAS_HOME
PYTEST_ARGS ?=

.PHONY: help venv mosquitto test-tools demo demo-model test test-all lint bench bench-train \
	install-device uninstall-device deploy rollback clean

help: ## show this help
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-16s %s\n",$$1,$$2}'

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "coral-classifier needs Python >= 3.11 (found $$($(PYTHON) --version 2>&1)): set PYTHON=python3.11"; exit 1; }
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { echo "installing python3-venv (apt)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e ".[device,train,dev]"
	touch $@

venv: $(VENV)/.installed ## create .venv with the device, train and dev extras

mosquitto: ## install the mosquitto broker (apt) when it is missing
	@command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || { \
	  echo "installing mosquitto (apt)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; }

demo: venv mosquitto ## run the daemon on the demo model + replayed frames, printing what arrives on MQTT (Ctrl-C stops)
	$(PY) -m device.tools.demo $(DEMO_ARGS)

demo-model: venv ## retrain the committed demo bundle compiled_models/demo-notes on synthetic data
	rm -rf .demo/data && $(PY) -m host_training demo-data .demo/data --per-class 80
	$(PY) -m host_training train --data .demo/data --out compiled_models/demo-notes \
	  --input-size 96 --epochs 20 --fine-tune-epochs 6 --feature-copies 2 --version 1.0.0 \
	  --golden-per-class 1

test-tools: ## install what the tests drive for real (sshd, rsync, openssl) when missing
	@missing=""; for t in sshd:openssh-server rsync:rsync openssl:openssl ssh:openssh-client; do \
	  cmd=$${t%%:*}; pkg=$${t#*:}; command -v $$cmd >/dev/null 2>&1 || [ -x /usr/sbin/$$cmd ] || missing="$$missing $$pkg"; done; \
	[ -z "$$missing" ] || { echo "installing$$missing (apt)"; $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; }

test: venv mosquitto test-tools ## run the test suite (what CI runs)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: venv mosquitto test-tools ## the test suite including slow training tests
	$(PY) -m pytest $(PYTEST_ARGS)

bench: venv mosquitto ## benchmark: raw invoke vs the daemon's whole pipeline to MQTT (BENCH_ARGS="--backend edgetpu" on a Pi)
	$(PY) -m device.tools.bench $(BENCH_ARGS)

bench-train: venv ## training speed: cached-feature head vs end-to-end frozen epochs, and fine-tuning
	$(PY) -m host_training.bench $(BENCH_TRAIN_ARGS)

install-device: ## on the Pi: user, venv (--system-site-packages), config, unit, udev rule; enable the service
	$(SUDO) systemd/install-device.sh install

uninstall-device: ## on the Pi: undo install-device (PURGE=1 also removes config, models and counts)
	$(SUDO) env PURGE=$(PURGE) systemd/install-device.sh uninstall

deploy: venv ## flash a bundle: make deploy HOST=user@pi MODEL=compiled_models/NAME (HOSTS="a b" for a fleet, ALLOW_CPU=1)
	$(PY) -m host_training.deploy deploy --model $(MODEL) $(foreach h,$(HOST) $(HOSTS),--host $(h)) \
	  $(if $(ALLOW_CPU),--allow-cpu) $(DEPLOY_ARGS)

rollback: venv ## switch a device back to its previous model: make rollback HOST=user@pi
	$(PY) -m host_training.deploy rollback $(foreach h,$(HOST) $(HOSTS),--host $(h)) $(DEPLOY_ARGS)

lint: venv ## ruff
	$(VENV)/bin/ruff check device host_training tests

clean: ## remove the venv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache .demo *.egg-info
