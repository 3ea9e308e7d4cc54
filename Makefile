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
ARCH := $(shell uname -m)
# The trainer's TensorFlow is a workstation dependency (no tensorflow-cpu wheel for
# aarch64): a Pi gets the device side only, sees Raspberry Pi OS's picamera2/libcamera
# (--system-site-packages) and keeps Bookworm's numpy 1.24 that simplejpeg is built
# against (device/constraints-pi.txt: numpy<2, opencv-python-headless<4.12).
ifneq ($(filter aarch64 armv7l,$(ARCH)),)
EXTRAS ?= device,dev
VENV_FLAGS ?= --system-site-packages
PIP_CONSTRAINTS ?= -c device/constraints-pi.txt
else
EXTRAS ?= device,train,dev
VENV_FLAGS ?=
PIP_CONSTRAINTS ?=
endif

.PHONY: help venv train-deps mosquitto test-tools demo demo-model test test-all test-hw test-pi \
	lint bench bench-train \
	install-device uninstall-device deploy rollback rollout keys fleet container clean

# q: one shell word, whatever the value holds (HOST='pi@x;cmd' stays one argument)
q = '$(subst ','\'',$(1))'

help: ## show this help
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-16s %s\n",$$1,$$2}'

# make-venv DIR,EXTRAS: a venv with this checkout installed editable with those extras
define make-venv
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "coral-classifier needs Python >= 3.11 (found $$($(PYTHON) --version 2>&1)): set PYTHON=python3.11"; exit 1; }
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { echo "installing python3-venv (apt)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }
	$(PYTHON) -m venv $(VENV_FLAGS) $(1)
	$(1)/bin/pip install --quiet --upgrade pip
	$(1)/bin/pip install --quiet -e ".[$(2)]" $(PIP_CONSTRAINTS)
	touch $(1)/.installed
endef

$(VENV)/.installed: pyproject.toml
	$(call make-venv,$(VENV),$(EXTRAS))

# The demo needs the device side only (no TensorFlow: ~0.3 GB instead of 2.2 GB); an
# existing full .venv is reused.
DEMO_VENV ?= $(if $(wildcard $(VENV)/.installed),$(VENV),.venv-demo)
ifneq ($(DEMO_VENV),$(VENV))
$(DEMO_VENV)/.installed: pyproject.toml
	$(call make-venv,$(DEMO_VENV),device)
endif

venv: $(VENV)/.installed ## create .venv (x86-64: device, train, dev extras; a Pi: device, dev)

train-deps: venv
	@$(PY) -c 'import tensorflow' 2>/dev/null || { echo "the trainer needs TensorFlow, a \
	workstation dependency: run it on an x86-64 machine (make EXTRAS=device,train,dev venv)"; exit 1; }

mosquitto: ## install the mosquitto broker (apt) when it is missing
	@command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || { \
	  echo "installing mosquitto (apt)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; }

demo: $(DEMO_VENV)/.installed mosquitto ## the flagship on six real banknote photos (demo/banknotes-vnd) with the web page on: prints its address and what arrives on MQTT (Ctrl-C stops); a device-only venv (.venv-demo) unless .venv exists
	$(DEMO_VENV)/bin/python -m device.tools.demo --model compiled_models/banknotes-vnd --photos demo/banknotes-vnd $(DEMO_ARGS)

demo-model: train-deps ## retrain the committed demo bundle compiled_models/demo-notes on synthetic data
	rm -rf .demo/data && $(PY) -m host_training demo-data .demo/data --per-class 80
	$(PY) -m host_training train --data .demo/data --out compiled_models/demo-notes \
	  --input-size 96 --epochs 20 --fine-tune-epochs 6 --feature-copies 2 --version 1.0.0 \
	  --golden-per-class 1

.PHONY: collect
collect: venv ## pull the frames labelled on a device into class folders: make collect HOST=pi@host [OUT=data/] (merges, never overwrites)
	@[ -n $(call q,$(HOST)) ] || { echo "usage: make collect HOST=pi@host [OUT=data/] [REMOTE=/var/lib/coral-classifier/dataset]"; exit 2; }
	$(PY) -m host_training.fleet.collect --host $(call q,$(HOST)) --out $(call q,$(or $(OUT),data/)) \
	  $(if $(REMOTE),--remote $(call q,$(REMOTE))) $(COLLECT_ARGS)

.PHONY: bench-web
bench-web: venv mosquitto ## what the web page costs per frame when nobody watches: the tap alone, and daemon windows with [web] off/on
	$(PY) -m device.tools.bench_web $(BENCH_WEB_ARGS)

test-tools: ## install what the tests drive for real (sshd, rsync, openssl, headless chromium) when missing
	@missing=""; for t in sshd:openssh-server rsync:rsync openssl:openssl ssh:openssh-client \
	  chromium:chromium chromedriver:chromium-driver; do \
	  cmd=$${t%%:*}; pkg=$${t#*:}; command -v $$cmd >/dev/null 2>&1 || [ -x /usr/sbin/$$cmd ] || missing="$$missing $$pkg"; done; \
	[ -z "$$missing" ] || { echo "installing$$missing (apt)"; $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; }

test: venv mosquitto test-tools ## run the test suite (what CI runs)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: venv mosquitto test-tools ## the test suite including slow training tests
	$(PY) -m pytest $(PYTEST_ARGS)

test-hw: venv mosquitto ## on a Pi with a Coral and a camera: the tpu and picamera tests
	$(PY) -m pytest -m "tpu or picamera" -rs $(PYTEST_ARGS)

test-pi: ## the device package on Raspberry Pi OS Bookworm arm64, emulated (qemu-user, debootstrap)
	tests/pi/run.sh

bench: venv mosquitto ## benchmark: raw invoke vs the daemon's whole pipeline to MQTT (BENCH_ARGS="--backend edgetpu" on a Pi), then bench-web
	$(PY) -m device.tools.bench $(BENCH_ARGS)
	$(PY) -m device.tools.bench_web $(BENCH_WEB_ARGS)

bench-train: train-deps ## training speed: cached-feature head vs end-to-end frozen epochs, and fine-tuning
	$(PY) -m host_training.train.bench $(BENCH_TRAIN_ARGS)

install-device: ## on the Pi: user, deploy group + sudoers rule, venv, config, unit, udev rule (DEPLOY_USERS=, LIBEDGETPU_DEB=, TFLITE_WHEEL=, UPDATE_PUBLIC_KEY=)
	$(SUDO) env LIBEDGETPU_DEB=$(call q,$(LIBEDGETPU_DEB)) TFLITE_WHEEL=$(call q,$(TFLITE_WHEEL)) \
	  UPDATE_PUBLIC_KEY=$(call q,$(UPDATE_PUBLIC_KEY)) \
	  $(if $(DEPLOY_USERS),DEPLOY_USERS=$(call q,$(DEPLOY_USERS))) systemd/install-device.sh install

uninstall-device: ## on the Pi: undo install-device (PURGE=1 also removes config, models and counts)
	$(SUDO) env PURGE=$(call q,$(PURGE)) systemd/install-device.sh uninstall

deploy: venv ## flash a bundle: make deploy HOST=user@pi MODEL=compiled_models/NAME (HOSTS="a b" for a fleet, ALLOW_CPU=1, CONFIG=controller.toml for the broker)
	$(PY) -m host_training.fleet.deploy deploy --model $(call q,$(MODEL)) \
	  $(foreach h,$(HOST) $(HOSTS),--host $(call q,$(h))) $(if $(ALLOW_CPU),--allow-cpu) \
	  $(if $(CONFIG),--config $(call q,$(CONFIG))) $(DEPLOY_ARGS)

rollback: venv ## switch a device back to its previous model: make rollback HOST=user@pi
	$(PY) -m host_training.fleet.deploy rollback $(foreach h,$(HOST) $(HOSTS),--host $(call q,$(h))) \
	  $(if $(CONFIG),--config $(call q,$(CONFIG))) $(DEPLOY_ARGS)

rollout: venv ## pull update over MQTT, canary first: make rollout MODEL=compiled_models/NAME DEVICES="id1 id2" BROKER=host:port (CONFIG=controller.toml: credentials, TLS)
	$(PY) -m host_training.fleet.rollout --model $(call q,$(MODEL)) \
	  $(foreach d,$(DEVICES),--device $(call q,$(d))) $(if $(BROKER),--broker $(call q,$(BROKER))) \
	  $(if $(ALLOW_CPU),--allow-cpu) $(if $(SIGN_KEY),--sign-key $(call q,$(SIGN_KEY))) \
	  $(if $(CONFIG),--config $(call q,$(CONFIG))) $(ROLLOUT_ARGS)

# rollout signs with keys/update.pem when it exists (make keys); SIGN_KEY= turns that off
SIGN_KEY ?= $(wildcard keys/update.pem)

keys: venv ## Ed25519 key pair that signs pull updates: keys/update.pem (private, 600) and keys/update.pub (never overwrites)
	$(PY) -m host_training.fleet.keys --out $(call q,$(or $(KEYS_DIR),keys))

fleet: venv ## every device on the broker: model, backend, fps, errors (BROKER=host:port, CONFIG=controller.toml, FLEET_ARGS=--json)
	$(PY) -m host_training fleet $(if $(BROKER),--broker $(call q,$(BROKER))) \
	  $(if $(CONFIG),--config $(call q,$(CONFIG))) $(FLEET_ARGS)

container: ## build the device image with buildah or podman (CONTAINER_ARCH=arm64 for a Pi; see container/)
	container/build.sh $(call q,$(or $(CONTAINER_ARCH),$(ARCH)))

lint: venv ## ruff
	$(VENV)/bin/ruff check device host_training tests

clean: ## remove the venv and caches
	rm -rf $(VENV) .venv-demo .pytest_cache .ruff_cache .demo *.egg-info
