# The two commands of the README: `make demo` (the main job) and `make test`.
# Each bootstraps what it needs: a virtual environment with LoanStream installed, and on first
# use the Kafka jars from Maven Central (cached under ~/.local/share/loanstream).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every third-party package, pinned with its hashes (Python 3.11, Linux x86_64): dev.txt for the
# venv and CI (runtime, the dev extra and the build backend), runtime.txt for the image, a subset
# of dev.txt at the same versions. `make lock` regenerates both from pyproject.toml.
DEV_LOCK := requirements/dev.txt
RUNTIME_LOCK := requirements/runtime.txt
LOCK_TOOL ?= /tmp/loanstream-lock-tool
# `make lock LOCK_FLAGS=--upgrade` moves every pin to the newest allowed release,
# `LOCK_FLAGS='--upgrade-package mlflow'` one package; by default existing pins are kept.
LOCK_FLAGS ?=
COMPILE = $(LOCK_TOOL)/bin/uv pip compile --quiet --generate-hashes --python-version 3.11 \
	--python-platform x86_64-unknown-linux-gnu --custom-compile-command 'make lock'

.PHONY: demo test lint tools lock clean

# The lock installs everything, hash-checked wheels only (a package that would need building
# would fetch its build tools unhashed); the project itself adds no package (--no-deps) and builds
# with the locked setuptools (--no-build-isolation), so nothing else is downloaded.
$(STAMP): pyproject.toml $(DEV_LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --only-binary :all: -r $(DEV_LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	@# fails when pyproject.toml asks for a package or version that the lock lacks: run `make lock`
	$(BIN)/pip check
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/loanstream demo

test: $(STAMP) tools
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# kcat is the third-party Kafka client the integration tests check the broker with; promtool
# (Debian's prometheus package, not started) runs the alert rules' unit tests.
tools:
	@command -v kcat >/dev/null || { echo "installing kcat (Debian package)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat >/dev/null; }
	@command -v promtool >/dev/null || { echo "installing promtool (Debian package prometheus)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends prometheus >/dev/null; }

# Resolve pyproject.toml's dependencies (with the dev extra) and requirements/build.in again.
lock:
	$(PYTHON) -m venv $(LOCK_TOOL)
	$(LOCK_TOOL)/bin/pip install --quiet --require-hashes -r requirements/lock-tool.txt
	$(COMPILE) $(LOCK_FLAGS) --extra dev -o $(DEV_LOCK) pyproject.toml requirements/build.in
	$(COMPILE) -c $(DEV_LOCK) -o $(RUNTIME_LOCK) pyproject.toml requirements/build.in

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
