# The two commands a new machine needs (see README.md):
#   make demo   boots a tiny demo VM under libvirt and shows the library on it
#   make test   installs what is missing, runs ruff, mypy --strict and the whole test suite
# make bench [QUICK=1] [BENCH='fleet ping']: benchmarks side by side (python -m bench --help)
VENV := .venv/bin

.PHONY: setup test lint demo bench docs clean

demo: setup
	$(VENV)/python -m scripts.demo

setup:
	@scripts/setup.sh

lint: setup
	$(VENV)/ruff check qga_libvirt mcp_server tests bench scripts ansible
	$(VENV)/ruff format --check qga_libvirt mcp_server tests bench scripts ansible
	$(VENV)/mypy

test: lint
	$(VENV)/pytest $(PYTEST_ARGS)

bench: setup
	$(VENV)/python -m bench $(if $(QUICK),--quick) $(BENCH)

docs: setup
	$(VENV)/python -m scripts.docgen

clean:
	rm -rf .venv .mypy_cache .pytest_cache .ruff_cache
