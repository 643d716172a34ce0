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

.PHONY: setup test test-fast run lint bench params lock clean eval-article

setup:
	@$(PYTHON) tools/bootstrap.py

# Whole test modules go to one worker (--dist loadfile): a module shares its node and model.
# Modules go out in collection order, the slowest first (test/conftest.py), not by test count.
# Bytecode is cached (__pycache__, git-ignored) even where PYTHONDONTWRITEBYTECODE is set:
# otherwise each Python process of the suite (workers, nodes, commands) compiles the project
# and the tests anew.
test: setup
	@env -u PYTHONDONTWRITEBYTECODE $(IN_ENV) python -m pytest kosmos_ros/test \
		-n $(TEST_WORKERS) --dist loadfile \
		--no-loadscope-reorder $(PYTEST_ARGS)

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

# The KOSMOS-2 article's grounding benchmarks (docs/evaluation.md): Flickr30k Entities val and
# test (recall@1) and RefCOCO, RefCOCO+, RefCOCOg (accuracy@0.5) with the released weights.
# Nothing is downloaded: FLICKR30K_DIR is the Flickr30k Entities folder (Sentences/,
# Annotations/, val.txt, test.txt; images in FLICKR30K_IMAGES, default its flickr30k-images/),
# REFCOCO_DIR holds RefCOCO/, RefCOCOplus/, RefCOCOg/ (lmms-lab Parquet) or MDETR's
# finetune_*.json (COCO_IMAGES: the COCO train2014 images); the weights come from the local
# Hugging Face cache (EVAL_OFFLINE). EVAL_ARGS passes more flags (--device, --dtype, --limit).
FLICKR30K_DIR ?=
FLICKR30K_IMAGES ?=
REFCOCO_DIR ?=
COCO_IMAGES ?=
EVAL_OUT ?= results/eval-article
EVAL_OFFLINE ?= --local-files-only
EVAL_ARGS ?=
eval-article:
	@if [ -z "$(FLICKR30K_DIR)" ] || [ -z "$(REFCOCO_DIR)" ]; then \
		echo "make eval-article: set FLICKR30K_DIR (Flickr30k Entities) and REFCOCO_DIR" \
			"(RefCOCO family, Parquet or JSON); nothing is downloaded (docs/evaluation.md)" >&2; \
		exit 2; fi
	@$(MAKE) --no-print-directory setup
	@$(IN_ENV) python -m kosmos_ros.evaluation.cli article \
		--flickr30k "$(FLICKR30K_DIR)" --refcoco "$(REFCOCO_DIR)" \
		$(if $(FLICKR30K_IMAGES),--flickr30k-images "$(FLICKR30K_IMAGES)") \
		$(if $(COCO_IMAGES),--coco-images "$(COCO_IMAGES)") \
		-o "$(EVAL_OUT)" $(EVAL_OFFLINE) $(EVAL_ARGS)

lock:
	@rm -f env/constraints-$(DISTRO).txt
	@$(PYTHON) tools/bootstrap.py --lock

clean:
	rm -rf build/$(DISTRO) install/$(DISTRO) log/$(DISTRO)
