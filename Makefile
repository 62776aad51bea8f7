# The two commands of the README: `make quickstart` (the main job) and `make test`.
.PHONY: setup services test lint quickstart clean gpu-check check-llama-cpp

setup: .venv/.installed

.venv/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

lint: setup
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/ruff format --check src tests benchmarks

# Chromium and PostgreSQL for the serving tests (installed where this user may).
services:
	bash scripts/test-services.sh

# Two workers, each taking whole test files (module fixtures are built once): on two
# cores this takes about two thirds of the serial time, since much of it is waiting on
# subprocesses, servers and imports. More workers would fight over torch's threads.
test: lint services
	.venv/bin/python -m pytest -q -n 2 --dist loadfile

# On a CUDA GPU: the tests marked gpu and a throughput benchmark in about five minutes,
# everything in OUT/gpu-check.json (default build/gpu-check/); one line where there is no
# GPU. No setup prerequisite: a bare GPU image runs it with its own python3 and the wheels
# that scripts/gpu-wheels.sh put in .whl/.
gpu-check:
	@bash scripts/gpu-check.sh $(if $(OUT),--out $(OUT))

# llama.cpp itself checks `export --for llama.cpp`: builds llama-cpp-python and llama-server
# into build/llama-cpp (minutes, once), then compares their greedy replies with rejoinder's.
# Not part of `make test`: it compiles.
check-llama-cpp: setup
	.venv/bin/python scripts/check_llama_cpp.py

# Build Chit-Chat, train forward and reverse models, evaluate, show samples, chat.
# MINUTES=5 for a shorter run; the same command again reuses what is finished.
quickstart: setup
	.venv/bin/rejoinder quickstart --minutes $(or $(MINUTES),15)

clean:
	rm -rf .venv quickstart build src/*.egg-info
