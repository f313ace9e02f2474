# make install | make test | make demo
# PYTHON selects the interpreter (and so the environment) to install into.
PYTHON ?= python
PYTEST_TIMEOUT ?= 600
export PYTHON

.PHONY: install test test-random test-isolated mutation-check demo

install:
	bash tools/install.sh

# pytest exits 5 when it collects no tests; that is a failure here too.
test: install
	$(PYTHON) -m pytest tests -q -x --timeout=$(PYTEST_TIMEOUT)

# The suite in a shuffled order (modules and the tests inside each module);
# the seed is printed at the top, rerun one order with SEED=<seed>.
SEED ?= $(shell date +%s)
test-random: install
	$(PYTHON) -m pytest tests -q -x --timeout=$(PYTEST_TIMEOUT) \
		--random-order-bucket=module --random-order-seed=$(SEED)

# Every test file alone, in its own pytest process (no test may rely on
# another file having run first).
test-isolated: install
	@failed=0; for f in $$(find tests -name "test_*.py" | sort); do \
		echo "== $$f"; \
		$(PYTHON) -m pytest $$f -q -x --timeout=$(PYTEST_TIMEOUT) || failed=1; \
	done; exit $$failed

# Plant each bug of tests/mutations/catalog.py and check its tests catch it
# (too slow for CI: run it before resolving an issue that touches a guarded
# feature, and put its table in the note).
mutation-check: install
	$(PYTHON) tools/dev/mutation_check.py

demo: install
	$(PYTHON) tools/demo.py
