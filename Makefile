# One venv, installed once; re-installed only when pyproject.toml changes.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTHON ?= python3
# Tests run in two processes (one per core); each pins torch to one thread. A worker that dies in native code
# (seen on a 2-core EPYC with avx512_bf16: both workers segfaulted about 6 minutes in, at different tests, cause
# not found yet) has its test run again on a fresh worker, up to twice; ordinary failures are never rerun.
PYTEST_ARGS ?= -n 2 --durations=15 --reruns 2 --only-rerun "crashed while running"

.PHONY: setup test lint docs demo bench clean browser gpu-check gpu-carry

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'   # dev includes [all]
	@touch $@

test: setup browser
	$(PY) -m pytest $(PYTEST_ARGS)

# The report test drives a real headless Chromium (Debian's package; Playwright never downloads one).
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
browser:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; } \
		|| echo "Chromium could not be installed: the browser test will skip (and fail under CI=true)"

lint: setup
	$(VENV)/bin/ruff check rcnn_cli tests measurements

# The documentation site (mkdocs.yml, docs/) into site/. --strict turns a broken link or anchor, or a page left
# out of the nav, into a failed build; tests/test_docs.py builds it the same way. No network needed.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# The README's first command: train on the built-in shapes set, evaluate, predict on held-out images.
RCNN := $(VENV)/bin/rcnn
DEMO := runs/demo
demo: setup
	rm -rf $(DEMO)   # the demo always starts fresh
	$(RCNN) train experiment=demo run_dir=$(DEMO)
	$(RCNN) eval --weights $(DEMO)/checkpoints/best.ckpt --out $(DEMO)/eval --json $(DEMO)/eval/metrics.json
	$(RCNN) predict 'data/shapes/images/0000*.jpg' --weights $(DEMO)/checkpoints/best.ckpt --out $(DEMO)/predictions
	@echo "demo done: model $(DEMO)/checkpoints/best.ckpt, training curves $(DEMO)/metrics.png,"
	@echo "  metrics and PR curves $(DEMO)/eval/, pictures with detections $(DEMO)/predictions/"

# Our detector vs torchvision's with the same weights, same images, same process (docs/speed.md).
BENCH_DEVICE ?= cpu
# Exported runtimes timed beside torch (ONNX and OpenVINO, fp32 and int8) on the resnet18 run only:
# each format is exported and quantized first, minutes at resnet50's 800 px.
BENCH_FORMATS ?= onnx,openvino
bench: setup
	mkdir -p measurements
	$(RCNN) benchmark model=resnet50_fpn dataset=bccd --count 4 --batch 2 --formats $(BENCH_FORMATS) --json measurements/results-$(BENCH_DEVICE)-resnet50_fpn.json
	$(RCNN) benchmark model=resnet18_fpn dataset=bccd --count 4 --batch 4 --formats $(BENCH_FORMATS) --json measurements/results-$(BENCH_DEVICE)-resnet18_fpn.json
	$(RCNN) benchmark model=resnet18_fpn dataset=bccd --count 2 --batch 2 --repeats 3 --scaling --json measurements/scaling-$(BENCH_DEVICE)-resnet18_fpn.json
	$(RCNN) benchmark --data-scale 1000,10000 --load-scale 118287 --json measurements/scale-$(BENCH_DEVICE).json
	$(RCNN) benchmark --profile model=resnet50_fpn dataset=bccd --count 2 --batch 2 --json measurements/profile-cpu-resnet50_fpn.json

# The prepared check for a lent GPU machine (docs/gpu-check.md); exit 3 (make: "Error 3") where no GPU is
# visible. That machine has no network, so this never installs when the venv is there (.venv/.installed:
# copied files can make pyproject.toml look newer than the stamp) or when PY names another interpreter.
GPU_CHECK_ARGS ?=
ifeq ($(origin PY),command line)
GPU_CHECK_NEEDS :=
else
GPU_CHECK_NEEDS := $(if $(wildcard $(STAMP)),,setup)
endif
gpu-check: $(GPU_CHECK_NEEDS)
	$(PY) measurements/gpu_check.py $(GPU_CHECK_ARGS)

# What a lent GPU machine needs beside the checkout: its python3 (3.12) has torch, lightning, typer and
# pytest but not these (the venv's versions), so they travel as wheels in .whl/ (carry it); BCCD goes
# into shared/, the one data folder that travels (../shared does not). About 25 MB in all.
GPU_WHEELS := hydra-core==1.3.8 omegaconf==2.3.1 albumentations==2.0.8 albucore==0.0.24 pydantic==2.14.4 \
	pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 simsimd==6.5.16 stringzilla==5.3.2 \
	faster-coco-eval==1.8.0 ImageHash==4.3.2 PyWavelets==1.9.0 orjson==3.13.0
gpu-carry: setup
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl $(GPU_WHEELS)
	$(PY) -m pip wheel --quiet --no-deps -w .whl antlr4-python3-runtime==4.9.3   # omegaconf's; no wheel on PyPI
	mkdir -p shared/datasets && cp -r ../shared/datasets/bccd-voc shared/datasets/

clean:
	rm -rf build dist *.egg-info .pytest_cache site
