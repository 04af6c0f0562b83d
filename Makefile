# Flotilla — build, test and run. `make help` lists the targets.

SHELL      := /bin/bash
GO         ?= go
# Build tags the Podman bindings need (see DESIGN.md, fixed decisions).
TAGS       := remote,exclude_graphdriver_btrfs,btrfs_noversion,exclude_graphdriver_devicemapper,containers_image_openpgp
export GOFLAGS := -tags=$(TAGS) $(GOFLAGS)
BIN        := bin/flotilla
CUE_VERSION := v0.17.1
CUE        := $(shell $(GO) env GOPATH)/bin/cue
# DATA_DIR: where `make demo` keeps its cluster; empty means flotilla's default
# (/var/lib/flotilla for root), which the CLI then finds by itself.
DATA_DIR   ?=
FUZZTIME   ?= 10s

.DEFAULT_GOAL := help

help: ## Show this help.
	@awk 'BEGIN{FS=":.*## "} /^[a-z-]+:.*## /{printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps: ## Install the system packages Flotilla needs (podman, runc, busybox-static, nftables) and the cue command.
	@hack/install-deps.sh

build: ## Build bin/flotilla.
	$(GO) build -o $(BIN) ./cmd/flotilla

image: ## Build the example image localhost/busybox:latest from busybox-static.
	@hack/busybox-image.sh localhost/busybox:latest

demo: deps build image ## Install what is missing, build, and run `flotilla up` on examples/hello.
	$(BIN) up $(if $(DATA_DIR),--data-dir $(DATA_DIR))

test: deps ## Run every test: unit, integration (real Podman, Git, Badger, netns) and a fuzz smoke run.
	$(GO) vet ./...
	@missing=$$($(GO) list -f '{{if not .Doc}}{{.ImportPath}}{{end}}' ./...); \
	  if [ -n "$$missing" ]; then echo "packages without a doc comment naming their job: $$missing"; exit 1; fi
	$(GO) test -race -timeout 30m ./...
	@$(MAKE) --no-print-directory fuzz

fuzz: ## Run each fuzz target for FUZZTIME (default 10s).
	@hack/fuzz.sh $(FUZZTIME)

bench: deps ## Print the performance report (scheduler, commit→Running, pod start vs podman run).
	@hack/bench.sh

schema: ## Regenerate the CUE definitions of the Kubernetes types in schema/.
	@schema/gen.sh

verify: ## gofmt, go vet, go mod tidy and generated files must leave the tree clean.
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: run gofmt -w"; exit 1; }
	$(GO) vet ./...
	$(GO) mod tidy && git diff --exit-code go.mod go.sum
	@$(MAKE) --no-print-directory schema && git diff --exit-code schema/

clean: ## Remove bin/.
	rm -rf bin

.PHONY: help deps build image demo test fuzz bench schema verify clean
