# Tagsmith developer commands. `make run` starts the whole system; `make test` runs every check CI runs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL_DIR := models/efficientnet_lite0/1
PROTOS := $(shell find protos -name '*.proto')
SERVICE_REQUIREMENTS := $(wildcard services/*/requirements.txt) model/requirements.txt

.PHONY: setup protos model vocabulary run test lint bench clean

## setup: virtual environment, dependencies, generated protos and the model
setup: $(VENV)/.installed protos model

$(VENV)/.installed: requirements-dev.txt $(SERVICE_REQUIREMENTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	# Generated code lives in gen/; this makes it importable from the venv.
	$(PY) -c "import site, pathlib; pathlib.Path(site.getsitepackages()[0], 'tagsmith.pth').write_text('$(CURDIR)/gen\n$(CURDIR)\n')"
	touch $@

## protos: Python code and .pyi stubs for protos/ into gen/, plus TF Serving's message descriptors
protos: gen/.stamp

gen/.stamp: $(PROTOS) tools/capture_tfserving_descriptors.py $(VENV)/.installed
	rm -rf gen && mkdir -p gen
	$(PY) -m grpc_tools.protoc -I protos --python_out=gen --pyi_out=gen --grpc_python_out=gen $(PROTOS)
	$(PY) tools/capture_tfserving_descriptors.py gen/tfserving_descriptors.binpb
	touch $@

## model: the EfficientNet-Lite0 SavedModel in TF Serving's layout under models/
model: $(MODEL_DIR)/saved_model.pb

$(MODEL_DIR)/saved_model.pb: $(wildcard model/*.py) model/imagenet_labels.txt $(VENV)/.installed
	$(PY) -m model.build --output $(MODEL_DIR)

## vocabulary: services/common/vocabulary.json from WordNet 3.0 (Debian's wordnet-base) and the ImageNet class ids
vocabulary: $(VENV)/.installed
	$(PY) tools/build_vocabulary.py

## run: the whole system on embedded defaults (PostgreSQL, local blob store, model server)
run: setup
	$(PY) -m local

## test: every test CI runs
test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

## bench: throughput and latency figures (slow; not part of test)
bench: setup
	$(PY) -m bench

clean:
	rm -rf gen models $(VENV)
