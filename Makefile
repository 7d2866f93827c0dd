# Tagsmith developer commands. `make run` starts the whole system; `make test` runs every check CI runs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL_DIR := models/efficientnet_lite0/1
FACE_MODEL_DIR := models/face_detector/1
PROTOS := $(shell find protos -name '*.proto')

.PHONY: setup lock protos model vocabulary run test lint bench images clean grpc-client

## setup: virtual environment, dependencies, generated protos and the model
setup: $(VENV)/.installed protos model

$(VENV)/.installed: requirements-dev.txt clients/python/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements-dev.txt
	# The tagsmith command (clients/python), editable; its one dependency, httpx, is in the lock.
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e ./clients/python
	# Generated code lives in gen/; this makes it importable from the venv.
	$(PY) -c "import site, pathlib; pathlib.Path(site.getsitepackages()[0], 'tagsmith.pth').write_text('$(CURDIR)/gen\n$(CURDIR)\n')"
	touch $@

## lock: the hashed locks (requirements.txt) from the requirements.in beside them; run after changing any .in file
# Each .in lists a part's direct requirements with exact pins (a service's includes services/common's); its
# requirements.txt pins every package, transitive ones too, with hashes, for Python 3.11 on x86_64 Linux (the
# images' Debian bookworm base, glibc 2.36). requirements-dev.txt, all of them plus the tools, is locked first and
# every other lock is constrained to it, so the images run the versions the tests run. Existing pins are kept; to
# move one: make lock LOCK_ARGS="--upgrade-package certifi". tests/deploy/test_locks.py checks the locks agree.
LOCK := $(PY) -m uv pip compile --quiet --generate-hashes --python-version 3.11 \
	--python-platform x86_64-manylinux_2_36 --custom-compile-command "make lock"
# services/common's list is not locked on its own: every service's lock holds it.
LOCKED := $(filter-out services/common/%,$(wildcard services/*/requirements.in)) model/requirements.in \
	protos/requirements.in

lock: $(VENV)/.installed
	$(LOCK) $(LOCK_ARGS) requirements-dev.in -o requirements-dev.txt
	$(foreach in,$(LOCKED),$(LOCK) -c requirements-dev.txt $(in) -o $(in:.in=.txt) &&) true

## protos: Python code and .pyi stubs for protos/ into gen/, plus TF Serving's message descriptors
protos: gen/.stamp

gen/.stamp: $(PROTOS) tools/capture_tfserving_descriptors.py $(VENV)/.installed
	rm -rf gen && mkdir -p gen
	$(PY) -m grpc_tools.protoc -I protos --python_out=gen --pyi_out=gen --grpc_python_out=gen $(PROTOS)
	$(PY) tools/capture_tfserving_descriptors.py gen/tfserving_descriptors.binpb
	touch $@

## grpc-client: the generated gRPC stubs as an installable package, built into dist/ (see clients/grpc/README.md)
grpc-client: gen/.stamp
	$(PY) clients/grpc/build_wheel.py dist

## model: the EfficientNet-Lite0 classifier and the BlazeFace face detector in TF Serving's layout under models/
model: $(MODEL_DIR)/saved_model.pb $(FACE_MODEL_DIR)/saved_model.pb

$(MODEL_DIR)/saved_model.pb: $(wildcard model/*.py) model/imagenet_labels.txt services/common/model_contract.py $(VENV)/.installed
	$(PY) -m model.build --output $(MODEL_DIR)

$(FACE_MODEL_DIR)/saved_model.pb: model/face_detector.py model/build.py $(VENV)/.installed
	$(PY) -m model.face_detector --output $(FACE_MODEL_DIR)

## vocabulary: services/common/vocabulary.json from WordNet 3.0 (Debian's wordnet-base) and the ImageNet class ids
vocabulary: $(VENV)/.installed
	$(PY) tools/build_vocabulary.py

## run: the whole system on embedded defaults (PostgreSQL, local blob store, model server)
run: setup
	$(PY) -m local

## test: every test CI runs
test: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

## bench: throughput and latency figures (slow; not part of test)
bench: setup
	$(PY) -m bench

## images: every service's image from the one services/Dockerfile, and the model image (needs Docker)
REGISTRY ?= tagsmith
VERSION ?= 0.1.0
IMAGE_SERVICES := auth catalog gateway inference modelserver
# The ports each image listens on by default: its config.py's port and metrics port.
PORTS_auth := 50052 9102
PORTS_catalog := 50053 9103
PORTS_gateway := 8080
PORTS_inference := 50054 9104
PORTS_modelserver := 8500 9105

images: model
	$(foreach s,$(IMAGE_SERVICES),docker build -f services/Dockerfile --build-arg SERVICE=$(s) \
	  --build-arg "PORTS=$(PORTS_$(s))" -t $(REGISTRY)/$(s):$(VERSION) . &&) true
	docker build -f deploy/model.Dockerfile -t $(REGISTRY)/model:$(VERSION) .

clean:
	rm -rf gen models $(VENV)
