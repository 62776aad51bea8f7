# The two commands of the README: `make demo` (the main job) and `make test`.
.PHONY: setup test lint demo clean

setup: .venv/.installed

.venv/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

lint: setup
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/ruff format --check src tests benchmarks

test: lint
	.venv/bin/python -m pytest -q

demo: setup
	bash scripts/demo.sh

clean:
	rm -rf .venv demo build src/*.egg-info
