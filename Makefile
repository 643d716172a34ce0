# kosmos_ros: one entry point for set-up, the demo, tests and benchmarks.
#   make run     build the environment if needed, then run the node on the embedded sample
#   make test    build the environment if needed, then run every test
#   make test-fast  the core and worker unit tests (no DDS, no model), in under a minute
# DISTRO=kilted selects ROS 2 Kilted (default: jazzy). PYTEST_ARGS passes options to pytest.
# TEST_WORKERS: pytest-xdist workers for make test (default: two per core, at most 8: most
# tests wait on DDS or on processes; 0 runs the tests in one process). Each worker has its own
# ROS_DOMAIN_ID (test/conftest.py).

DISTRO ?= jazzy
export KOSMOS_ROS_DISTRO := $(DISTRO)
PYTHON ?= python3
IN_ENV := tools/in-env
TEST_WORKERS ?= $(shell n=$$(nproc); echo $$((n * 2 > 8 ? 8 : n * 2)))

.PHONY: setup test test-fast run lint bench params lock clean

setup:
	@$(PYTHON) tools/bootstrap.py

# Whole test modules go to one worker (--dist loadfile): a module shares its node and model.
test: setup
	@$(IN_ENV) python -m pytest kosmos_ros/test -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# Tests marked fast (pytest -m fast): they need neither DDS nor a model.
test-fast: setup
	@$(IN_ENV) python -m pytest kosmos_ros/test -m fast $(PYTEST_ARGS)

run: setup
	@$(IN_ENV) python -m kosmos_ros.demo $(RUN_ARGS)

lint: setup
	@$(IN_ENV) python -m pytest kosmos_ros/test/test_lint.py $(PYTEST_ARGS)

bench: setup
	@$(IN_ENV) python benchmarks/run_benchmarks.py $(BENCH_ARGS)

# Write config/grounding.yaml and the parameter tables of docs/node.md from the parameter
# specs (kosmos_ros.node.parameter_table).
params: setup
	@$(IN_ENV) python -m kosmos_ros.node.parameter_file --write kosmos_ros/config/grounding.yaml \
		--markdown docs/node.md

lock:
	@rm -f env/constraints-$(DISTRO).txt
	@$(PYTHON) tools/bootstrap.py --lock

clean:
	rm -rf build/$(DISTRO) install/$(DISTRO) log/$(DISTRO)
