# The two commands a newcomer needs: `make run` and `make test`.
.PHONY: run test bench

run:
	./scripts/run.sh

test:
	./scripts/test.sh

bench:
	./scripts/bench.sh
