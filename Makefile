# One command to set up and chat with Haven in the terminal, one to set up and run the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: console run test lint bench extract-messages crisis-anchors

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# Haven's own modules compiled now, as pip compiles the packages it installs: where
	# PYTHONDONTWRITEBYTECODE is set, every start would otherwise compile them again.
	$(BIN)/python -m compileall -q bot > /dev/null
	touch $(STAMP)

console: $(STAMP)  ## chat with Haven in this terminal (no token, SQLite in ./data)
	$(BIN)/python -m bot console

run: $(STAMP)  ## run the Telegram bot (needs TELEGRAM_BOT_TOKEN)
	$(BIN)/python -m bot

test: $(STAMP)  ## lint, type-check and run every test
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/turns.py

extract-messages: $(STAMP)  ## refresh bot/locale/messages.pot from the code, templates and dialogs
	$(BIN)/pybabel extract -F babel.cfg -k N_ --sort-output -o bot/locale/messages.pot --no-location --omit-header .
	$(BIN)/pybabel update -i bot/locale/messages.pot -d bot/locale --no-fuzzy-matching

crisis-anchors: $(STAMP)  ## refresh bot/crisis/anchors.json after editing bot/crisis/phrases.yaml
	$(BIN)/python -m bot.crisis.anchors
