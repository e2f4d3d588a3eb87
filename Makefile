# Baton. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
TOOL := $(GO) tool -modfile=tools/go.mod
BIN := bin/baton
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/batonhq/baton/sidecar/batoncli.Version=$(VERSION)
# go test flags; CI and `make test` use the race detector. -p 4: four test
# binaries at once, since they wait on etcd, timers and child processes far
# more than they compute (go test's default is one per CPU).
GOTESTFLAGS ?= -race -count=1 -timeout 10m -p 4
PYTHON ?= python3

.PHONY: help build demo test test-go test-py lint lint-py generate check-generated clean chaos bench deps-py fuzz

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/baton
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/baton

demo: build ## the whole loop: baton dev, a second sidecar, two TTS workers, sample.jsonl -> out/demo/*.wav
	$(PYTHON) examples/python-worker/demo.py --baton $(BIN)

generate: ## regenerate gen/ from proto/ (buf, protoc-gen-go, protoc-gen-connect-go)
	$(TOOL) buf generate

check-generated: generate ## fail when the committed generated code is stale
	@git diff --exit-code --stat -- gen/ || { echo "gen/ is stale: run 'make generate' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- gen/)" || { git status --porcelain -- gen/; echo "gen/ has uncommitted files: run 'make generate' and commit"; exit 1; }

lint: lint-py ## gofmt, go vet, staticcheck, buf lint; pyflakes and mypy --strict
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...
	$(TOOL) staticcheck ./...
	$(TOOL) buf lint

test-go: ## Go tests with the race detector
	$(GO) test $(GOTESTFLAGS) ./...

# vermin checks that the code runs on the Python versions pyproject.toml
# claims (requires-python >= 3.9), from the syntax and library calls used.
VERMIN := $(PYTHON) -c 'import sys; from vermin.main import main; sys.argv[0] = "vermin"; sys.exit(main())'
lint-py: ## pyflakes, mypy --strict and vermin (Python >= 3.9) on the Python client and example worker
	$(PYTHON) -m pyflakes clients/python examples/python-worker
	$(VERMIN) -q -t=3.9- --no-tips --violations --eval-annotations clients/python/baton_client examples/python-worker/tts_worker
	cd clients/python && $(PYTHON) -m mypy --strict --cache-dir $(CURDIR)/.mypy_cache baton_client
	MYPYPATH=$(CURDIR)/clients/python $(PYTHON) -m mypy --strict --cache-dir $(CURDIR)/.mypy_cache examples/python-worker/tts_worker

# pytest against a real baton (built once per run with go build).
PYTESTFLAGS ?= -q
PYTESTS := clients/python/tests examples/python-worker/tests
test-py: ## Python client tests against a real baton
	PYTHONPATH=$(CURDIR)/clients/python $(PYTHON) -m pytest $(PYTESTFLAGS) $(PYTESTS)

# The Python test tools, pinned, installed with pip only when missing, so that
# `make test` passes on a fresh machine with nothing but Go and Python.
deps-py: ## install the pinned Python test tools that are missing (pytest, mypy, pyflakes, vermin, OpenTelemetry)
	@$(PYTHON) -c 'import pytest' 2>/dev/null || $(PYTHON) -m pip install -q pytest
	@$(PYTHON) -c 'import mypy, pyflakes' 2>/dev/null || $(PYTHON) -m pip install -q mypy==2.4.1 pyflakes==4.1.0
	@$(PYTHON) -c 'import vermin' 2>/dev/null || $(PYTHON) -m pip install -q vermin==1.9.2
	@$(PYTHON) -c 'import opentelemetry.sdk' 2>/dev/null || $(PYTHON) -m pip install -q opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2
	@$(PYTHON) -c 'import opentelemetry.exporter.otlp.proto.grpc' 2>/dev/null || $(PYTHON) -m pip install -q opentelemetry-exporter-otlp-proto-grpc==1.45.2

test: deps-py check-generated lint test-go test-py ## everything CI runs

# `make chaos SEED=n` replays the fault sequence of seed n; CHAOSFLAGS adds
# flags (see bin/baton-chaos -h).
SEED ?= 0
CHAOSFLAGS ?=
chaos: ## fault-injection run (< 10 min): kill/pause/partition etcd, sidecars, workers; check invariants; SEED=n replays
	$(GO) build -o bin/baton-chaos ./cmd/baton-chaos
	bin/baton-chaos -seed $(SEED) $(CHAOSFLAGS)

# `make bench` runs the fleet sweep and the affinity run (baton bench's
# default, under a minute on 2 cores), then the comparison with raw etcd,
# recipes.Queue and naive CAS (--systems all, 2-3 minutes).
# BENCHFLAGS= (empty) leaves the comparison out; add "--plot FILE.png" to draw
# the plot; see bin/baton bench --help for the other flags.
BENCHFLAGS ?= --systems all
bench: build ## baton bench (< 5 min): fleet sweep of 8, 64, 256 sidecars (one worker each), affinity run, then baton vs raw etcd, recipes, naive CAS; tables and targets
	$(BIN) bench $(BENCHFLAGS)

# `make test` runs every fuzz target's seed corpus (they are ordinary
# tests); `make fuzz` fuzzes each for FUZZTIME: 14 targets, about 9 minutes
# on 2 cores at the default 30s (FUZZTIME=5s for a quick pass). A crasher
# is written to the package's testdata/fuzz/<target>/: commit it with the
# fix, and it runs in `make test` from then on.
FUZZTIME ?= 30s
FUZZ := ./sidecar/workqueue:FuzzParseClaim ./sidecar/workqueue:FuzzIndexKeys ./sidecar/workqueue:FuzzParseIndexKeys \
	./sidecar/workqueue:FuzzWaitKey ./sidecar/workqueue:FuzzNames ./sidecar/workqueue:FuzzStatus \
	./sidecar/jsonl:FuzzRead ./sidecar/configdoc:FuzzValidateObject ./sidecar/configdoc:FuzzDocumentNames \
	./sidecar/coord:FuzzLockNames ./sidecar/internal/etcdutil:FuzzNamespace \
	./sidecar/server:FuzzRequests ./sidecar/server:FuzzDurationArgs ./sidecar/server:FuzzNotBefore
fuzz: ## fuzz every parser of untrusted input (claims, keys, names, state records, JSONL, config documents, request fields) for FUZZTIME each (default 30s; ~9 min in all)
	@for t in $(FUZZ); do pkg=$${t%%:*}; fn=$${t##*:}; echo "fuzz $$fn ($$pkg)"; \
	  $(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; done

clean: ## remove build output and dev data
	rm -rf bin .baton
