# The two commands of the README: `make demo` (the main job) and `make test`.
# Each bootstraps what it needs: a virtual environment with LoanStream installed, and on first
# use the Kafka jars from Maven Central (cached under ~/.local/share/loanstream).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint tools clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/loanstream demo

test: $(STAMP) tools
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# kcat is the third-party Kafka client the integration tests check the broker with.
tools:
	@command -v kcat >/dev/null || { echo "installing kcat (Debian package)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat >/dev/null; }

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
