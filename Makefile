# make install | make test | make demo | make selfcheck
# PYTHON selects the interpreter (and so the environment) to install into.
PYTHON ?= python
PYTEST_TIMEOUT ?= 600
export PYTHON

.PHONY: install wheelhouse test test-random test-isolated mutation-check demo selfcheck

# Keeps an installed torch within 2.4..2.13.x; only a missing one is installed
# (TORCH_VARIANT=cpu|cu126|... picks the build). MMCV_WITH_CUDA=0|1 and
# TORCH_CUDA_ARCH_LIST steer the mmcv build; INSTALL_DRY_RUN=1 prints the
# plan (tools/dev/install_plan.py) and changes nothing. WHEELHOUSE=DIR
# installs offline from a folder made by `make wheelhouse`.
install:
	bash tools/install.sh

# Everything `make install WHEELHOUSE=DIR` needs, for a machine without
# network (tools/dev/wheelhouse.py): PY=3.12 and PLATFORM=manylinux_2_28_x86_64
# pick the target (default: this machine), TORCH=1 adds the pinned torch
# (TORCH_VARIANT=cu126 ... its build); no install needed first.
wheelhouse:
	@test -n "$(DIR)" || { echo "make wheelhouse DIR=<folder> [PY=3.12] [PLATFORM=...] [TORCH=1]"; exit 2; }
	$(PYTHON) tools/dev/wheelhouse.py --dir $(DIR) $(if $(PY),--python $(PY)) \
		$(if $(PLATFORM),--platform $(PLATFORM)) $(if $(TORCH),--torch) \
		$(if $(TORCH_VARIANT),--torch-variant $(TORCH_VARIANT))

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

# Does this installation train, infer and export on this device? PASS / FAIL /
# SKIP per item, exit 1 on a FAIL (tools/misc/selfcheck.py).
# DEVICE=cuda|cpu (default: cuda when a GPU is visible), OUT=report.json.
selfcheck: install
	$(PYTHON) tools/misc/selfcheck.py $(if $(DEVICE),--device $(DEVICE)) $(if $(OUT),--out $(OUT))
