# The two set-up commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
COLL    = .build/collections
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/$(COLL)
export ANSIBLE_PYTHON_INTERPRETER := $(CURDIR)/$(BIN)/python

.PHONY: all venv deps collection demo test unit integration bench bench-import clean

all: test

$(BIN)/.installed: requirements.txt requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements-test.txt
	touch $@

venv: $(BIN)/.installed

deps:
	./tools/debian-packages.sh

# Tests and the demo use the checkout as the collection appc.rocket.
collection:
	@mkdir -p $(COLL)/ansible_collections/appc
	@ln -sfn $(CURDIR) $(COLL)/ansible_collections/appc/rocket

demo: venv deps collection
	$(BIN)/ansible-playbook -i localhost, -c local demo/demo.yml

test: venv deps collection
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

unit: venv collection
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit

bench: bench-import

bench-import: venv deps collection
	$(BIN)/python bench/import_bench.py

clean:
	rm -rf $(VENV) .build tests/output bench/results
