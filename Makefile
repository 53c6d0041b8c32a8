# Two entry points for a fresh machine: `make demo` and `make test`.
# Each installs what it needs (Debian data packages and the DICOM tools the tests use
# when root, then a venv).
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
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
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps 'tensorflow-serving-api==2.21.*'   # its "tensorflow" requirement would pull a second TF

demo: venv
	$(BIN)/python -m mrgan_tf.demo

test: venv
	$(BIN)/python -m pytest -q -n 2 tests

bazel-test: venv
	$(BAZEL) build //... && $(BAZEL) test //:fast_tests

clean:
	rm -rf runs build *.egg-info
