# make install | make test | make demo
# PYTHON selects the interpreter (and so the environment) to install into.
PYTHON ?= python
PYTEST_TIMEOUT ?= 600
export PYTHON

.PHONY: install test demo

install:
	bash tools/install.sh

# pytest exits 5 when it collects no tests; that is a failure here too.
test: install
	$(PYTHON) -m pytest tests -q -x --timeout=$(PYTEST_TIMEOUT)

demo: install
	$(PYTHON) tools/demo.py
