# The commands a newcomer needs: `make run` and `make test`;
# `make lock` after changing dependencies in pyproject.toml (UPGRADE=1 make lock: newest allowed).
.PHONY: run test lock bench

run:
	./scripts/run.sh

test:
	./scripts/test.sh

lock:
	./scripts/lock.sh

bench:
	./scripts/bench.sh
