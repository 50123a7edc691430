# The commands a newcomer needs: `make run` and `make test`; `make lint` before landing;
# `make lock` after changing dependencies in pyproject.toml (UPGRADE=1 make lock: newest allowed).
.PHONY: run test lint lock bench

run:
	./scripts/run.sh

test:
	./scripts/test.sh

lint:
	./scripts/lint.sh

lock:
	./scripts/lock.sh

bench:
	./scripts/bench.sh
