# Benchmarks (bench/README.md).  Included from the top-level Makefile.
#   make bench        full run: bench/RESULTS.md, bench/results.png
#   make bench-quick  the same in under 2 minutes (fewer rounds/samples)
# Venvs are created in bench/.venvs/ on first use (needs PyPI).
PYTHON ?= python3
BENCH_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))/bench

.PHONY: bench bench-quick bench-clean bench-trust bench-host-writes bench-limits
bench:
	$(PYTHON) $(BENCH_DIR)/run.py </dev/null
	@$(MAKE) --no-print-directory bench-trust bench-host-writes

bench-quick:
	$(PYTHON) $(BENCH_DIR)/run.py --quick </dev/null
	@$(MAKE) --no-print-directory bench-trust bench-host-writes

# The refusal path (issue 3): appended to RESULTS.md for each of our venvs.
bench-trust:
	@{ echo; echo "## Refusal path: the trusted-call search"; echo; \
	   echo "A would-be refusal that the trusted-call search allows, with 20 untrusted"; \
	   echo "frames between the event and the trusted call (\`bench/trust_search.py\`)."; \
	   echo; header=--header; \
	   for py in $(BENCH_DIR)/.venvs/ours-py*/bin/python; do \
	     $$py $(BENCH_DIR)/trust_search.py $$header || exit 1; header=; \
	   done; } >> $(BENCH_DIR)/RESULTS.md
	@tail -6 $(BENCH_DIR)/RESULTS.md

# Host writes after cells have run vs. no safepyrun imported (issue 7).
bench-host-writes:
	@{ echo; echo "## Host writes after cells have run"; echo; \
	   echo "Host code writing files 20 frames deep, in a process where 50 cells ran,"; \
	   echo "against a process that never imported safepyrun (\`bench/host_writes.py\`)."; \
	   echo; header=--header; \
	   for py in $(BENCH_DIR)/.venvs/ours-py*/bin/python; do \
	     $$py $(BENCH_DIR)/host_writes.py $$header || exit 1; header=; \
	   done; } >> $(BENCH_DIR)/RESULTS.md
	@tail -4 $(BENCH_DIR)/RESULTS.md

# Limits (issue 9): whichever of bench/limits_{time,memory,output}.py exist,
# appended to RESULTS.md for each of our venvs.
LIMIT_BENCHES = $(wildcard $(BENCH_DIR)/limits_time.py $(BENCH_DIR)/limits_memory.py \
                           $(BENCH_DIR)/limits_output.py)
bench-limits:
	@for b in $(LIMIT_BENCHES); do \
	   { echo; echo "## Limits: $$(basename $$b)"; echo; header=--header; \
	     for py in $(BENCH_DIR)/.venvs/ours-py*/bin/python; do \
	       $$py $$b $$header || exit 1; header=; \
	     done; } >> $(BENCH_DIR)/RESULTS.md || exit 1; \
	 done
	@tail -8 $(BENCH_DIR)/RESULTS.md

bench-clean:
	rm -rf $(BENCH_DIR)/.venvs
