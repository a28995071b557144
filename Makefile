# The recipes are thin: the work is in scripts/ so it can be read and run alone.
# make test ARGS="-k stream -x" passes ARGS to pytest.

.PHONY: run test lint

run:
	scripts/run.sh

test:
	scripts/test.sh $(ARGS)

lint:
	scripts/lint.sh

# make bench ARGS="--quick" runs the streaming benchmarks (see bench/README.md).
.PHONY: bench
bench:
	.venv/bin/python bench/stream_bench.py $(ARGS)
