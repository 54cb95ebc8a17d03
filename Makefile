# mipha — the two commands: `make run` and `make test`. Both bootstrap a fresh Debian 12 machine.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages the project needs (installed only when missing, only when root).
# qemu-system-x86 + linux-image-amd64: the real-kernel ipip tests where User-Mode Linux cannot run
# (tests/dataplane/kernel_guest.py); tiny-initramfs satisfies the kernel's initramfs-tool dependency
# without pulling udev/systemd upgrades (skipped by ensure-apt.sh when another initramfs tool is present).
# python3-venv: `python3 -m venv` below (a minimal Debian 12 lacks it); procps: sysctl in the tests.
APT_PACKAGES := libyang2-dev libyang2-tools tshark iproute2 ethtool user-mode-linux busybox-static tcpdump openssh-client iputils-ping \
	freeradius freeradius-utils etcd-server etcd-client nftables conntrack prometheus curl \
	qemu-system-x86 linux-image-amd64 tiny-initramfs \
	gcc python3-dev python3-venv libssl-dev procps
STAMP := $(VENV)/.installed
# pip: more patience with a slow or flaky package index than its defaults (5 retries, 15 s)
PIP_OPTS := --retries 10 --timeout 60

.PHONY: run test lint deps venv tree clean bench bench-config bench-restconf fuzz

deps:
	@bash scripts/ensure-apt.sh $(APT_PACKAGES)

$(STAMP): pyproject.toml scripts/ensure-apt.sh ha/_fastpath.c
	@bash scripts/ensure-apt.sh $(APT_PACKAGES)
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(PIP_OPTS) --upgrade pip
	$(BIN)/python -m pip install -q $(PIP_OPTS) -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/mipha run --config examples/mipha.toml

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pyang --strict --lint -p yang/ietf yang/*.yang
	yanglint -i -p yang/ietf yang/*.yang
	$(BIN)/mypy

tree: $(STAMP)
	$(BIN)/pyang -f tree -p yang/ietf yang/mipha-home-agent.yang -o docs/yang-tree.txt

bench: $(STAMP)
	$(BIN)/python bench/validate.py

# configuration at scale (issue 10): a daemon with 0/1k/10k/100k mobile nodes, a few minutes
bench-config: $(STAMP)
	$(BIN)/python bench/config_scale.py

# RESTCONF beside the NETCONF path (issue 16): 100k configured nodes and bindings, curl as the client
bench-restconf: $(STAMP)
	$(BIN)/python bench/restconf.py

# Coverage-guided fuzz campaigns (atheris): registration path, NETCONF framing + RPCs, the C path against
# the Python path (FUZZ_TARGETS picks some); a crash
# stops with the input saved under .fuzz/<target>/. Logs: .fuzz/<target>.log (docs/fuzzing.md).
FUZZ_RUNS ?= 1000000
FUZZ_TARGETS ?= registration netconf fastpath
fuzz: $(STAMP)
	@mkdir -p .fuzz; set -o pipefail; for target in $(FUZZ_TARGETS); do \
		echo "== fuzz $$target: $(FUZZ_RUNS) inputs"; start=$$(date +%s); \
		nice -n 10 $(BIN)/python tests/fuzz/campaign.py $$target -runs=$(FUZZ_RUNS) 2>&1 \
			| tee .fuzz/$$target.log | grep -E '^(#fuzz|Done|stat::)|INITED|DONE|ERROR|Traceback' || exit 1; \
		echo "== fuzz $$target: wall time $$(( $$(date +%s) - start )) s"; \
	done

clean:
	rm -rf $(VENV) .pytest_cache
