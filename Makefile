# lockbox: the verbs a person (and CI, and SAM) types. `make help` lists them.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

# Absolute, so the SAM build targets work when SAM runs `make --makefile <this file>`.
ROOT := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
VENV := $(ROOT)/.venv
STAMP := $(VENV)/.lockbox-setup
# moto alone, for the demo.
MOTO_STAMP := $(VENV)/.lockbox-setup-moto
TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(ROOT)/target)
# What the demo runs, and nothing else: the extension, the rotator and the demo itself (no
# test targets, no dev-dependencies, none of the layer's tools).
DEMO_BINS := -p lockbox-extension --bin lockbox -p lockbox-rotator --bin lockbox-rotator \
             -p lockbox-tests --bin demo
DIST := $(ROOT)/dist
TEMPLATE := $(ROOT)/template.yaml

# The project's tools (moto, cfn-lint, sam, cargo-lambda, zig) come first.
export PATH := $(VENV)/bin:$(PATH)
export SAM_CLI_TELEMETRY := 0
# Architecture for the SAM build targets and sam-build: x86_64 or arm64. SAM does not pass
# it to make, so `ARCH=arm64 sam build --parameter-overrides Architecture=arm64`, or simply
# `make sam-build ARCH=arm64`.
ARCH ?= x86_64
export ARCH
# Test runner: auto (cargo-nextest when installed, else cargo test), nextest, or cargo.
TEST_RUNNER ?= auto
export TEST_RUNNER
# Bench sections to run (prefetch hits init memory layer rotator fleet); empty means all.
ONLY ?=
# nextest's ci profile (.config/nextest.toml) when CI=true: no fail-fast, hung tests killed.
NEXTEST_PROFILE := $(if $(filter true,$(CI)),ci,default)

.PHONY: help setup setup-demo build test check lint demo bench layer layer-x86_64 layer-arm64 \
        layer-check sam-build clean distclean build-LockboxLayer build-RotatorFunction

help: ## List the verbs
	@echo "lockbox: make <verb>"
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-22s %s\n", $$1, $$2}' \
	  $(MAKEFILE_LIST)

setup: $(STAMP) ## Prepare .venv (moto, cfn-lint, SAM CLI, cargo-lambda, zig), arm64 and the Lambda emulator; instant when done
	@[ -x $(ROOT)/.tools/bin/aws-lambda-rie ] || $(ROOT)/scripts/setup.sh rie

$(STAMP): $(ROOT)/scripts/setup.sh $(ROOT)/scripts/requirements.txt
	@$(ROOT)/scripts/setup.sh
	@touch $@ $(MOTO_STAMP)

setup-demo: $(MOTO_STAMP) ## Prepare .venv with moto only: all the demo runs (make setup has it too)

$(MOTO_STAMP): $(ROOT)/scripts/setup.sh $(ROOT)/scripts/requirements.txt
	@$(ROOT)/scripts/setup.sh moto
	@touch $@

build: ## Debug build of the workspace, all targets, linted by clippy as it compiles (the end-to-end tests run these binaries)
	$(ROOT)/scripts/linted.sh cargo build --workspace --all-targets

# The test commands run with --workspace, like `make build`: with -p alone cargo resolves
# features for one package and rebuilds dozens of crates (minutes on 2 cores).
test: setup build lint ## Everything: template lint, a layer zip check (profile layer-test), all tests
	@$(ROOT)/scripts/linted.sh $(ROOT)/scripts/test.sh

check: ## What CI checks first: rustfmt, clippy -D warnings (in the debug build), template lint
	@$(ROOT)/scripts/check.sh

lint: setup ## Template lint: cfn-lint and sam validate --lint (offline)
	cfn-lint $(TEMPLATE)
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} sam validate --lint --template-file $(TEMPLATE)

demo: ## Run the demo: moto, a key, parameters, a secret, the extension in the sandbox
	@$(ROOT)/scripts/require-bin.sh demo
	@$(ROOT)/scripts/beside.sh setup-demo cargo build $(DEMO_BINS)
	$(TARGET_DIR)/debug/demo

# What the bench's sections run, built with the layer's profile: the extension always, the
# rotator for `rotator`, the bare server for `hits`. `ONLY=hits` builds no rotator.
bench_wants = $(if $(ONLY),$(filter $(1),$(ONLY)),$(1))
BENCH_PACKAGES = -p lockbox-extension $(if $(call bench_wants,rotator),-p lockbox-rotator) \
  $(if $(call bench_wants,hits),-p lockbox-ceiling)

bench: setup ## The layer's build (profile lambda), then the benchmark figures (ONLY="memory hits" for some)
	@$(ROOT)/scripts/require-bin.sh bench lockbox-bench
	cargo build --profile lambda $(BENCH_PACKAGES)
	cargo run --release -p lockbox-bench --bin bench -- $(ONLY)

layer: setup ## Layer zips for x86_64 and arm64 in dist/ (says so plainly when arm64 cannot be built)
	$(ROOT)/scripts/layer.sh zip x86_64 arm64

layer-x86_64: setup ## The x86_64 layer zip only
	$(ROOT)/scripts/layer.sh zip x86_64

layer-arm64: setup ## The arm64 layer zip only (fails when arm64 cannot be built here)
	$(ROOT)/scripts/layer.sh zip arm64

layer-check: ## Check every layer zip in dist/: layout, mode 755, glibc <= 2.34, serves /ping
	@zips=$$(ls $(DIST)/lockbox-layer-*.zip 2>/dev/null | paste -sd: -); \
	  [ -n "$$zips" ] || { echo "layer-check: no zip in dist/; run make layer first"; exit 1; }; \
	  echo "+ LOCKBOX_LAYER_ZIP=$$zips cargo test --workspace --test e2e -- --ignored deploy::"; \
	  LOCKBOX_LAYER_ZIP=$$zips cargo test --workspace --test e2e -- --ignored deploy::

sam-build: setup ## sam build, offline: the layer and the rotator for ARCH (two release builds)
	sam build --template-file $(TEMPLATE) --parameter-overrides Architecture=$(ARCH)
	@test -x $(ROOT)/.aws-sam/build/LockboxLayer/extensions/lockbox
	@test -x $(ROOT)/.aws-sam/build/RotatorFunction/bootstrap
	@echo "sam-build: $(ARCH) layer and rotator in .aws-sam/build; next: sam deploy --guided"

# Called by `sam build` (BuildMethod: makefile), with ARTIFACTS_DIR set by SAM.
build-LockboxLayer: setup ## (SAM) the layer in $(ARTIFACTS_DIR): extensions/lockbox, lockbox-exec
	@test -n "$(ARTIFACTS_DIR)" || { echo "$@: ARTIFACTS_DIR is not set (sam build sets it)"; exit 1; }
	@echo "$@: building for ARCH=$(ARCH); it must match the template's Architecture parameter"
	$(ROOT)/scripts/layer.sh stage $(ARCH) "$(ARTIFACTS_DIR)"

build-RotatorFunction: setup ## (SAM) the rotator at $(ARTIFACTS_DIR)/bootstrap, for ARCH
	@test -n "$(ARTIFACTS_DIR)" || { echo "$@: ARTIFACTS_DIR is not set (sam build sets it)"; exit 1; }
	@echo "$@: building for ARCH=$(ARCH); it must match the template's Architecture parameter"
	$(ROOT)/scripts/lambda-build.sh rotator $(ARCH) "$(ARTIFACTS_DIR)/bootstrap"

clean: ## Remove build outputs: target/, dist/, .aws-sam/ (keeps .venv)
	cargo clean
	rm -rf $(DIST) $(ROOT)/.aws-sam

distclean: clean ## Also remove .venv
	rm -rf $(VENV)
