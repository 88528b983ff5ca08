# The two commands of the README. Both set up .venv first (a no-op when it is current).
.PHONY: setup quickstart test lint format bench

setup:
	bash setup.sh

quickstart: setup
	.venv/bin/accelerate launch recipes/iterate.py

test: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/python -m pytest -q

lint:
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .
