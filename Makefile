# The two commands of the README. Both set up .venv first (a no-op when it is current).
.PHONY: setup quickstart test test-fast test-bf16 test-fp32 lint format bench

setup:
	bash setup.sh

quickstart: setup
	.venv/bin/accelerate launch -q --config_file launch/one_process.yaml recipes/iterate.py

test: setup
	@.venv/bin/python -c "from trainer.samplers.base import dtype_regime; print(dtype_regime())"
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports --no-cache
	.venv/bin/python -m pytest -q --durations=25

# The fast subset (no model engines or training runs): a few minutes.
test-fast: setup
	.venv/bin/ruff check .
	.venv/bin/lint-imports --no-cache
	.venv/bin/python -m pytest -q -m "not slow"

# The suite in one CPU regime whatever this CPU is: what `engine.dtype: auto` resolves to is forced.
test-bf16:
	MINDGAP_CPU_DTYPE=bfloat16 $(MAKE) test

test-fp32:
	MINDGAP_CPU_DTYPE=float32 $(MAKE) test

lint:
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .
