# Two entry points for a fresh machine: `make demo` and `make test`.
# Each installs what it needs (Debian data packages and the DICOM tools the tests use
# when root, then a venv).
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# The TensorFlow wheel: cpu (tensorflow-cpu) or gpu (tensorflow[and-cuda]; `make venv TF=gpu`,
# see README "Install"). Default: the one the venv already has, else cpu. The two provide the
# same module and must not share a venv.
TF ?= $(if $(wildcard $(VENV)/lib/python*/site-packages/tensorflow-[0-9]*.dist-info),gpu,cpu)
DEBS := mricron-data invesalius-examples dicom3tools orthanc

.PHONY: demo test deps venv bench clean bazel-test
BAZEL ?= bazel

deps:
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then echo "installing Debian packages:$$missing"; \
	    (apt-get install -y -q $$missing || (apt-get update -q && apt-get install -y -q $$missing)) >/dev/null; fi; \
	else echo "not root or no apt-get: demo data falls back to pip-installed anatomy (nilearn);" \
	  "the dciodvfy (dicom3tools) and Orthanc tests are skipped unless installed"; fi

$(BIN)/python:
	$(PY) -m venv $(VENV)

venv: $(BIN)/python deps
	@case "$(TF)" in cpu) other='tensorflow-[0-9]*' name='tensorflow (the CUDA wheel)';; \
	  gpu) other='tensorflow_cpu-*' name='tensorflow-cpu';; *) echo "TF=$(TF): expected cpu or gpu"; exit 2;; esac; \
	if ls -d $(VENV)/lib/python*/site-packages/$$other.dist-info >/dev/null 2>&1; then \
	  echo "$(VENV) holds $$name, TF=$(TF) needs the other wheel: remove $(VENV) or give another VENV=..."; exit 2; fi
	$(BIN)/pip install -q -e '.[$(TF),test,dose]'
	$(BIN)/pip install -q --no-deps 'tensorflow-serving-api==2.21.*'   # its "tensorflow" requirement would pull a second TF next to tensorflow-cpu
	$(BIN)/pip install -q --no-deps 'pyradplan==0.5.0'   # the dose check's engine; its own requirement list pulls ~180 packages it does not use

demo: venv
	$(BIN)/python -m mrgan_tf.demo

test: venv
	$(BIN)/python -m pytest -q -n 2 tests

bazel-test: venv
	$(BAZEL) build //... && $(BAZEL) test //:fast_tests

clean:
	rm -rf runs build *.egg-info
