# The recipes are thin: the work is in scripts/ so it can be read and run alone.
# make test ARGS="-k stream -x" passes ARGS to pytest.

.PHONY: run test lint

run:
	scripts/run.sh

test:
	scripts/test.sh $(ARGS)

lint:
	scripts/lint.sh
