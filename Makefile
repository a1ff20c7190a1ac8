# Two commands for a newcomer: `make demo` (install, then one reply per corpus)
# and `make test` (install with the dev extra, then lint and the test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint bench clean

$(BIN)/charbot: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e ".[dev]"
	@touch $@

install: $(BIN)/charbot

demo: install
	$(BIN)/charbot reply tale "Once upon a time there was a little mermaid" --seed 1
	$(BIN)/charbot reply faq "Do I need to wear a mask on campus?" --seed 1
	$(BIN)/charbot reply novel "Anna looked at him" --seed 1

lint: install
	$(BIN)/ruff check .

test: lint
	$(BIN)/pytest

bench: install
	$(BIN)/charbot bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
