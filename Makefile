# The two commands a newcomer needs: `make demo` and `make test`. Both set up everything first.
SHELL := /bin/bash
VENV := .venv/bin

.PHONY: setup demo node-cluster test lint unit crds docs bench

setup:
	@bash hack/setup.sh

demo: setup
	$(VENV)/kvtune demo

# A one-node cluster on this machine (root, /dev/kvm, overlayfs): a real kubelet and containerd
# running kvtune's image built from the Dockerfile, to install kvtune on as users do. Ctrl-C
# stops it and puts the host back (README: "Try kvtune on a real node").
node-cluster: setup
	$(VENV)/python -m kvtune_cli.nodecluster

test: setup
	$(MAKE) --no-print-directory lint
	$(VENV)/pytest

lint:
	$(VENV)/ruff check .
	$(VENV)/mypy api/kvtune_api node-agent/kvtune_agent operator/kvtune_operator cli/kvtune_cli \
		tests bench
	$(VENV)/lint-imports

unit: setup
	$(VENV)/pytest -m "not apiserver and not e2e"

crds: setup
	$(VENV)/kvtune crds

# The API reference (docs/api.md) from the CRDs, which are regenerated first.
docs: crds
	$(VENV)/kvtune docs

bench: setup
	for b in bench/*.py; do $(VENV)/python $$b || exit 1; done
