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

# helm and promtool, pinned, built from source into bin/tools/NAME-VERSION/
# (gitignored) once; a build is skipped when its binary is there. Both are
# `tool`s of deploy/kubecheck's go.mod, which pins their versions and
# checksums: built in one module they share their k8s.io packages, and the
# kubecheck tests reuse those from the build cache too (about 130 s of CPU
# less than two `go install pkg@version` builds). -s -w: no symbol table or
# DWARF. Cold (empty caches) they take about 6 minutes of CPU together:
# `make test` builds them niced beside the other checks (docs/decisions.md,
# D-deploy2). Change a version with `go -C deploy/kubecheck get -tool
# PKG@VERSION`.
modversion = $(shell awk '$$1 == "$(1)" { print $$2 }' deploy/kubecheck/go.mod)
HELM_VERSION := $(call modversion,helm.sh/helm/v4)
PROMETHEUS_VERSION := $(call modversion,github.com/prometheus/prometheus)
TOOLS_DIR := $(CURDIR)/bin/tools
TOOLS_BUILD := $(GO) -C deploy/kubecheck build -ldflags '-s -w'
HELM := $(TOOLS_DIR)/helm-$(HELM_VERSION)/helm
PROMTOOL := $(TOOLS_DIR)/promtool-$(PROMETHEUS_VERSION)/promtool
$(HELM):
	$(TOOLS_BUILD) -o $@ helm.sh/helm/v4/cmd/helm
# remove_all_sd leaves out promtool's service-discovery plugins (cloud SDKs):
# about 250 packages fewer to build; checking rules needs none of them.
$(PROMTOOL):
	$(TOOLS_BUILD) -tags remove_all_sd -o $@ github.com/prometheus/prometheus/cmd/promtool
.DEFAULT_GOAL := help
tools: $(HELM) $(PROMTOOL) ## build the pinned helm and promtool into bin/tools (once)

.PHONY: help build demo screenshots test test-go test-py test-deploy test-lanes lane-tools lane-checks lint lint-py generate check-generated clean chaos bench deps-py fuzz tools

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/baton
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/baton

demo: build ## the whole loop: baton dev, a second sidecar, two TTS workers, sample.jsonl -> out/demo/*.wav
	$(PYTHON) examples/python-worker/demo.py --baton $(BIN)

# `make screenshots` redraws docs/ui/*.png: the browser test against a real
# sidecar, saving each view it shows.
screenshots: ## redraw docs/ui/*.png (the web page's browser test, in headless Chromium)
	mkdir -p docs/ui
	BATON_UI_SCREENSHOTS=$(CURDIR)/docs/ui BATON_REQUIRE_CHROMIUM=1 $(GO) test -count=1 -run '^TestBrowser$$' ./sidecar/ui

generate: ## regenerate gen/ from proto/ (buf, protoc-gen-go, protoc-gen-connect-go)
	$(TOOL) buf generate

check-generated: generate ## fail when the committed generated code is stale
	@git diff --exit-code --stat -- gen/ || { echo "gen/ is stale: run 'make generate' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- gen/)" || { git status --porcelain -- gen/; echo "gen/ has uncommitted files: run 'make generate' and commit"; exit 1; }

lint: lint-py ## gofmt, go vet, staticcheck, buf lint; pyflakes and mypy --strict
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...
	$(GO) -C deploy/kubecheck vet ./...
	$(TOOL) staticcheck ./...
	$(TOOL) buf lint

# ./deploy renders the chart with helm: test-deploy runs it.
test-go: ## Go tests with the race detector (all but ./deploy: test-deploy runs it)
	$(GO) test $(GOTESTFLAGS) $$($(GO) list ./... | grep -vx 'github.com/batonhq/baton/deploy')

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


CHART := deploy/helm/baton
RULES := deploy/observability/baton-rules.yml
# The deploy checks: helm lint and helm template, every rendered object
# decoded strictly (deploy/kubecheck, its own Go module: the k8s.io types
# stay out of the sidecar's go.mod), promtool on the alerting rules and
# their unit tests, and ./deploy's tests (the chart's objects against
# baton's flags, the compose file against the Compose Specification's
# schema, Dockerfiles and manifests).
# kubecheck's tests run one goroutine and share nothing, so they run
# without the race detector: race-built k8s.io/api costs about 75 s of CPU
# cold, and without it they reuse the packages the helm build compiled.
KUBECHECKFLAGS ?= -count=1 -timeout 5m
test-deploy: $(HELM) $(PROMTOOL) ## helm lint + template, strict validation of every rendered object, promtool check/test rules, ./deploy's tests
	$(HELM) lint --strict $(CHART)
	@for f in $(CHART)/ci/*.yaml; do echo "helm lint --strict -f $$f"; $(HELM) lint --strict -f $$f $(CHART) >/dev/null || exit 1; done
	$(PROMTOOL) check rules $(RULES)
	$(PROMTOOL) test rules deploy/observability/baton-rules.test.yml
	BATON_HELM=$(HELM) $(GO) test $(GOTESTFLAGS) ./deploy
	BATON_HELM=$(HELM) $(GO) -C deploy/kubecheck test $(KUBECHECKFLAGS) ./...

# `make test` runs two lanes at once, then the deploy checks: one lane builds
# the tools, niced, so that it takes the CPU that the other leaves idle (etcd
# round trips, lease and TTL waits, pytest against a real baton) and yields
# the rest; the other checks generated code, lints and runs the Go and
# Python tests, in that order, stopping at the first failure.
test: deps-py ## everything CI runs
	$(MAKE) --no-print-directory -j2 test-lanes
	$(MAKE) --no-print-directory test-deploy

test-lanes: lane-tools lane-checks
lane-tools:
	nice -n 10 $(MAKE) --no-print-directory tools
lane-checks:
	@for t in check-generated lint test-go test-py; do $(MAKE) --no-print-directory $$t || exit 1; done

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
# tests); `make fuzz` fuzzes each for FUZZTIME: 16 targets, about 10 minutes
# on 2 cores at the default 30s (FUZZTIME=5s for a quick pass). A crasher
# is written to the package's testdata/fuzz/<target>/: commit it with the
# fix, and it runs in `make test` from then on.
FUZZTIME ?= 30s
FUZZ := ./sidecar/workqueue:FuzzParseClaim ./sidecar/workqueue:FuzzIndexKeys ./sidecar/workqueue:FuzzParseIndexKeys \
	./sidecar/workqueue:FuzzWaitKey ./sidecar/workqueue:FuzzNames ./sidecar/workqueue:FuzzStatus ./sidecar/workqueue:FuzzReadyRecord ./sidecar/workqueue:FuzzTraceparent \
	./sidecar/jsonl:FuzzRead ./sidecar/configdoc:FuzzValidateObject ./sidecar/configdoc:FuzzDocumentNames \
	./sidecar/namedlock:FuzzLockNames ./sidecar/etcdconn:FuzzNamespace \
	./sidecar/server:FuzzRequests ./sidecar/server:FuzzDurationArgs ./sidecar/server:FuzzNotBefore
fuzz: ## fuzz every parser of untrusted input (claims, keys, names, state records, JSONL, config documents, request fields) for FUZZTIME each (default 30s; ~10 min in all)
	@for t in $(FUZZ); do pkg=$${t%%:*}; fn=$${t##*:}; echo "fuzz $$fn ($$pkg)"; \
	  $(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; done

clean: ## remove build output and dev data (the tools in bin/tools stay: they take minutes to build)
	find bin -mindepth 1 -maxdepth 1 ! -name tools -exec rm -rf {} + 2>/dev/null || true
	rm -rf .baton
