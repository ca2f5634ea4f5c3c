# safepyrun - build, demo, tests, sanitizer run, benchmarks.
#
#   make demo    fresh clone -> venv -> build -> examples/demo.py
#   make test    build and run the tests on every interpreter present
#   make asan    the same tests against an -fsanitize=address,undefined build
#   make debug   the same tests against an -O0 -g3 build with assertions on
#
# Interpreters: the default python3 (3.11 here), 3.12 and 3.13: Debian's
# /usr/bin/python3.1x where present, else pyenv's.  3.12 and 3.13 both
# exercise the 3.12+ code paths (sys.monitoring).

PYTHON ?= python3
# $(call findpy,3.1x): Debian's interpreter, else pyenv's.
findpy = $(firstword $(wildcard /usr/bin/python$(1)) \
                     $(wildcard $(HOME)/.pyenv/versions/$(1)*/bin/python$(1)))
PY312 ?= $(call findpy,3.12)
PY313 ?= $(call findpy,3.13)
PYTHONS ?= $(PYTHON) $(PY312) $(PY313)
WERROR := -Werror
ASAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer \
              -fno-sanitize-recover=undefined -O1 -g
DEBUG_FLAGS := -O0 -g3 -UNDEBUG
VENVS := .venv
TEST_DEPS := pytest hypothesis numpy pandas matplotlib ipython atheris scipy scikit-learn pillow

.PHONY: demo test test-one asan debug clean

# $(call venv,python,dir): create the venv with build and test tools once.
define venv
	@test -x $(2)/bin/python || { \
	  echo "== creating $(2) with $$($(1) --version)"; \
	  $(1) -m venv $(2) && \
	  $(2)/bin/pip install -q --upgrade pip 'setuptools>=64' wheel && \
	  $(2)/bin/pip install -q $(TEST_DEPS); }
endef

# $(call install,dir,cflags): build the engine into the venv.
define install
	@echo "== building safepyrun into $(1) (SAFEPYRUN_CFLAGS=$(2))"
	@SAFEPYRUN_CFLAGS="$(2)" $(1)/bin/pip install -q --no-build-isolation \
	  --no-deps --force-reinstall . >$(1)/build.log 2>&1 || \
	  { cat $(1)/build.log; exit 1; }
endef

demo:
	@test -x $(VENVS)/demo/bin/python || $(PYTHON) -m venv $(VENVS)/demo
	@$(VENVS)/demo/bin/pip install -q 'setuptools>=64' wheel
	$(call install,$(VENVS)/demo,)
	$(VENVS)/demo/bin/python examples/demo.py

test:
	@set -e; for py in $(PYTHONS); do \
	  tag=$$($$py -c 'import sys; print("py%d%d" % sys.version_info[:2])'); \
	  $(MAKE) --no-print-directory test-one PY=$$py DIR=$(VENVS)/$$tag; \
	done

test-one:
	$(call venv,$(PY),$(DIR))
	$(call install,$(DIR),$(WERROR))
	cd tests && ../$(DIR)/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

asan:
	$(call venv,$(PYTHON),$(VENVS)/asan)
	$(call install,$(VENVS)/asan,$(WERROR) $(ASAN_FLAGS))
	cd tests && SAFEPYRUN_ASAN=1 \
	  LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libstdc++.so)" \
	  ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  PYTHONMALLOC=malloc ../$(VENVS)/asan/bin/python -m pytest -q \
	  -p no:cacheprovider -m "not slow" $(PYTEST_ARGS)

debug:
	$(call venv,$(PYTHON),$(VENVS)/debug)
	$(call install,$(VENVS)/debug,$(WERROR) $(DEBUG_FLAGS))
	cd tests && ../$(VENVS)/debug/bin/python -m pytest -q -p no:cacheprovider \
	  -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf build *.egg-info safepyrun/*.so $(VENVS)

-include bench.mk

# ---- red team (issue 10): escape and compatibility corpora, figures, fuzzing --
#   make redteam  runs tests/redteam's corpora on our engine and on the
#                 published safepyrun + fastaudit (its own venv, Python 3.12+),
#                 plus a short fuzz run; prints and writes tests/redteam/RESULTS.md
#   make fuzz     a longer atheris run (FUZZ_SECONDS) on the path checker and
#                 cell runner; its figures go to tests/redteam/fuzz-stats.json
REDTEAM_PUB_PY ?= $(firstword $(call findpy,3.12) $(call findpy,3.13))
# ours is measured on the default python3 and on 3.12 (the published one's)
REDTEAM_OURS ?= $(PYTHON) $(PY312)
REDTEAM_FUZZ_SECONDS ?= 30
FUZZ_SECONDS ?= 300

.PHONY: redteam redteam-one fuzz fuzz-venv redteam-pub-venv

redteam: fuzz-venv redteam-pub-venv
	@set -e; args=""; for py in $(REDTEAM_OURS); do \
	  tag=$$($$py -c 'import sys; print("py%d%d" % sys.version_info[:2])'); \
	  $(MAKE) --no-print-directory redteam-one PY=$$py DIR=$(VENVS)/$$tag; \
	  args="$$args --ours $(VENVS)/$$tag/bin/python"; \
	done; \
	$(PYTHON) tests/redteam/run_redteam.py $$args \
	  --published $(VENVS)/pub/bin/python \
	  --fuzz $(VENVS)/fuzz/bin/python --fuzz-seconds $(REDTEAM_FUZZ_SECONDS)

# our engine built into the same per-interpreter venvs as `make test`
redteam-one:
	$(call venv,$(PY),$(DIR))
	$(call install,$(DIR),$(WERROR))

redteam-pub-venv:
	@test -x $(VENVS)/pub/bin/python || { \
	  test -n "$(REDTEAM_PUB_PY)" || { echo "no Python 3.12+ for the published implementation"; exit 1; }; \
	  echo "== creating $(VENVS)/pub (published safepyrun + fastaudit) with $(REDTEAM_PUB_PY)"; \
	  $(REDTEAM_PUB_PY) -m venv $(VENVS)/pub && \
	  $(VENVS)/pub/bin/pip install -q --upgrade pip && \
	  $(VENVS)/pub/bin/pip install -q safepyrun fastaudit pandas numpy matplotlib; }

fuzz-venv:
	@test -x $(VENVS)/fuzz/bin/python || { \
	  echo "== creating $(VENVS)/fuzz (atheris) with $$($(PYTHON) --version)"; \
	  $(PYTHON) -m venv $(VENVS)/fuzz && \
	  $(VENVS)/fuzz/bin/pip install -q --upgrade pip 'setuptools>=64' wheel && \
	  $(VENVS)/fuzz/bin/pip install -q atheris pytest hypothesis; }
	$(call install,$(VENVS)/fuzz,$(WERROR))

fuzz: fuzz-venv
	$(VENVS)/fuzz/bin/python tests/redteam/run_redteam.py --fuzz-only \
	  --fuzz $(VENVS)/fuzz/bin/python --fuzz-seconds $(FUZZ_SECONDS)
