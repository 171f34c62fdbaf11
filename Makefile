# Switchboard: one set of rules for every module of the Go workspace. The
# module list comes from `go list -m`, so adding a module needs no edit here.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
export PATH := $(CURDIR)/.tools/bin:$(PATH)

MODULES  := $(shell go list -m)
PKGS     := $(addsuffix /...,$(MODULES))
# FUZZTIME is an execution count, not a duration: Go 1.26's fuzz coordinator
# can report a spurious "context deadline exceeded" when a duration runs out
# while a worker is mid-call on a loaded machine (go.dev/issue/75804), and a
# count has no deadline to race. 200000 calls take 1-15 s per target here.
FUZZTIME ?= 200000x
BENCHTIME ?= 1s
BIN      ?= $(CURDIR)/bin
# VERSION is what `switchboard version` prints for binaries built here.
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)

.PHONY: all test setup check lint vet staticcheck fmt-check buf-lint alerts-check proto proto-check unit fuzz e2e build bench clean

all: build

## test: everything CI runs — install tools, lint, generated-code check, race tests, fuzz, e2e.
test: setup check unit fuzz e2e

## setup: install Debian packages and pinned tools (idempotent, cached).
setup:
	scripts/setup.sh

## check: formatting, vet, staticcheck, buf lint, the alert rules and stale generated code.
check: fmt-check vet staticcheck buf-lint alerts-check proto-check

fmt-check:
	@out=$$(gofmt -l $$(go list -m -f '{{.Dir}}')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	go vet $(PKGS)

staticcheck:
	staticcheck $(PKGS)

buf-lint:
	buf lint

## alerts-check: promtool checks the alert rules and runs their unit tests.
alerts-check:
	promtool check rules deploy/prometheus/alerts.yaml
	promtool test rules deploy/prometheus/alerts_test.yaml

## proto: regenerate Go from proto/ with the pinned local plugins.
proto:
	buf generate

## proto-check: fail when the committed generated code is stale.
proto-check:
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	buf generate -o "$$tmp"; \
	if ! diff -r -q "$$tmp/proto" proto --exclude='*.proto' --exclude=go.mod --exclude=go.sum >/dev/null; then \
		diff -r "$$tmp/proto" proto --exclude='*.proto' --exclude=go.mod --exclude=go.sum | head -40; \
		echo "generated code is stale: run make proto"; exit 1; fi

## unit: race tests of every module.
unit:
	go test -race -count=1 -timeout 30m $(PKGS)

## fuzz: run every fuzz target for FUZZTIME (an execution count; FUZZTIME=30s also works).
fuzz:
	@for f in $$(grep -rl --include='*_test.go' '^func Fuzz' $$(go list -m -f '{{.Dir}}')); do \
		dir=$$(dirname "$$f"); \
		for t in $$(grep -oh '^func Fuzz[A-Za-z0-9_]*' "$$f" | cut -d' ' -f2); do \
			echo "fuzz $$dir $$t ($(FUZZTIME))"; \
			(cd "$$dir" && go test -run='^$$' -fuzz="^$$t\$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=3s .) || exit 1; \
		done; \
	done

## e2e: the compose stack end to end (builds images locally), then the short fault-injection run.
e2e:
	@if [ -x scripts/e2e.sh ]; then scripts/e2e.sh; else echo "e2e: no compose e2e yet"; fi
	@if [ -x scripts/faults.sh ]; then SWITCHBOARD_FAULTS_NO_BUILD=1 scripts/faults.sh --short; fi

## build: static binaries of every service and the CLI into bin/.
build:
	@mkdir -p $(BIN)
	@for d in $$(go list -m -f '{{.Dir}}'); do \
		for m in $$(find "$$d" -path '*/cmd/*/main.go' -o -path "$$d/main.go" | grep -v testdata); do \
			pkg=$$(dirname "$$m"); name=$$(basename "$$pkg"); \
			[ "$$pkg" = "$(CURDIR)/cmd/switchboard" ] && name=switchboard; \
			echo "build $$name"; (cd "$$pkg" && CGO_ENABLED=0 go build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(BIN)/$$name .); \
		done; \
	done

## bench: Go benchmarks of every module (figures, not pass/fail); peers in bench/.
bench:
	go test -run='^$$' -bench=. -benchmem -benchtime=$(BENCHTIME) $(PKGS)

clean:
	rm -rf $(BIN)
