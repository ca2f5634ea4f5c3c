# Benchmarks (bench/README.md).  Included from the top-level Makefile.
#   make bench        full run: bench/RESULTS.md, bench/results.png
#   make bench-quick  the same in under 2 minutes (fewer rounds/samples)
# Venvs are created in bench/.venvs/ on first use (needs PyPI).
PYTHON ?= python3
BENCH_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))/bench

.PHONY: bench bench-quick bench-clean
bench:
	$(PYTHON) $(BENCH_DIR)/run.py </dev/null

bench-quick:
	$(PYTHON) $(BENCH_DIR)/run.py --quick </dev/null

bench-clean:
	rm -rf $(BENCH_DIR)/.venvs
