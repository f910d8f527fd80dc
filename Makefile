# defender-tenant-operator

IMG ?= defender-tenant-operator:dev
K8S_VERSION ?= 1.37.0
CONTROLLER_TOOLS_VERSION ?= v0.23.0
KUSTOMIZE_VERSION ?= v5.8.2
GOLANGCI_LINT_VERSION ?= v2.6.2
# promtool and the PromQL parser that checks the alerts and the Grafana dashboard.
PROMETHEUS_VERSION ?= v0.316.0

CHART := charts/defender-tenant-operator

LOCALBIN ?= $(shell pwd)/bin
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
KUSTOMIZE ?= $(LOCALBIN)/kustomize
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint

# Go test flags; CI adds -count=1.
GOTESTFLAGS ?=
# The packages whose tests `make test` runs with the race detector (which needs cgo):
# the controllers and the libraries they run concurrently. Every other package runs
# without it, and no package runs twice.
RACE_PACKAGES ?= ./internal/...

.DEFAULT_GOAL := help

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: controller-gen ## Generate the CRD and RBAC manifests from the Go markers, and copy them (and the alerts) into the Helm chart.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd:allowDangerousTypes=false paths="./api/..." paths="./internal/controller/..." output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	@# The chart ships these files as they are; TestChartCopiesOfConfigFilesAreCurrent checks it.
	rm -f $(CHART)/crds/*.yaml && cp config/crd/bases/*.yaml $(CHART)/crds/
	cp config/rbac/role.yaml $(CHART)/files/manager-role.yaml
	cp config/prometheus/alerts.yaml $(CHART)/files/alerts.yaml

.PHONY: generate
generate: controller-gen ## Generate DeepCopy methods.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: fmt
fmt: ## Run go fmt.
	go fmt ./...

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: lint
lint: golangci-lint ## Run golangci-lint (built from the Go module proxy on first use), the e2e suite included.
	$(GOLANGCI_LINT) run ./...
	$(GOLANGCI_LINT) run --build-tags e2e ./test/e2e/...
	cd hack/promql-check && $(GOLANGCI_LINT) run ./...

# Generated files and formatting are checked in, so a change that forgot to
# regenerate must fail rather than be fixed silently on the next machine. Only a
# clean tree can be checked: in a dirty one, the diff would mix in work in progress.
.PHONY: verify-generated
verify-generated: ## Run manifests, generate and fmt; fail if that changed a file of a clean git checkout.
	@if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
		echo "verify-generated: not a git checkout; regenerating without checking"; \
		$(MAKE) --no-print-directory manifests generate fmt; \
	elif [ -n "$$(git status --porcelain -- .)" ]; then \
		echo "verify-generated: the tree has uncommitted changes; regenerating without checking"; \
		$(MAKE) --no-print-directory manifests generate fmt; \
	else \
		$(MAKE) --no-print-directory manifests generate fmt || exit 1; \
		if [ -n "$$(git status --porcelain -- .)" ]; then \
			git status --short -- .; git --no-pager diff -- .; \
			echo "make manifests generate fmt changed tracked files; commit the result"; \
			exit 1; \
		fi; \
	fi

.PHONY: envtest
envtest: ## Build (once, cached outside the clone) the kube-apiserver, etcd and kube-controller-manager that the tests run against.
	@K8S_VERSION=$(K8S_VERSION) hack/envtest-binaries.sh >/dev/null

# The checks must see the regenerated tree, so test's prerequisites run in order
# even under -j (GNU make 4.4 and later; older ones then run everything serially).
.NOTPARALLEL: test
.PHONY: test
test: verify-generated vet lint envtest test-rules test-e2e fuzz ## Check generated code, vet, lint, test the alerts with promtool, and run every test against a real kube-apiserver + etcd and the Entra ID emulator (RACE_PACKAGES with -race).
	@set -e; \
	KUBEBUILDER_ASSETS="$$(K8S_VERSION=$(K8S_VERSION) hack/envtest-binaries.sh)"; \
	PROMQL_CHECK="$$(PROMETHEUS_VERSION=$(PROMETHEUS_VERSION) hack/promtool.sh promql-check)"; \
	export KUBEBUILDER_ASSETS PROMQL_CHECK; \
	race=""; [ -z "$(strip $(RACE_PACKAGES))" ] || race="$$(go list $(RACE_PACKAGES))"; \
	others="$$(go list ./... | grep -vxF -e "$$race" || true)"; \
	status=0; \
	if [ -n "$$race" ]; then \
		echo "go test $(GOTESTFLAGS) -race $(RACE_PACKAGES)"; \
		go test $(GOTESTFLAGS) -race $$race || status=1; \
	fi; \
	if [ -n "$$others" ]; then \
		echo "go test $(GOTESTFLAGS) <the other packages of ./...>"; \
		go test $(GOTESTFLAGS) $$others || status=1; \
	fi; \
	exit $$status

.PHONY: promtool
promtool: ## Build (once, cached outside the clone) promtool and hack/promql-check, Prometheus's PromQL parser for the dashboard test.
	@PROMETHEUS_VERSION=$(PROMETHEUS_VERSION) hack/promtool.sh >/dev/null
	@PROMETHEUS_VERSION=$(PROMETHEUS_VERSION) hack/promtool.sh promql-check >/dev/null

# promtool reads plain rule files, so the PrometheusRule's spec.groups is written out
# beside copies of the tests (their rule_files name it), in a directory of their own.
.PHONY: test-rules
test-rules: promtool ## Check config/prometheus/alerts.yaml and run its unit tests (config/prometheus/tests) with promtool.
	@set -e; \
	promtool="$$(PROMETHEUS_VERSION=$(PROMETHEUS_VERSION) hack/promtool.sh)"; \
	check="$$(PROMETHEUS_VERSION=$(PROMETHEUS_VERSION) hack/promtool.sh promql-check)"; \
	work="$$(mktemp -d)"; trap 'rm -rf "$$work"' EXIT; \
	"$$check" rules config/prometheus/alerts.yaml >"$$work/alerts.rules.yaml"; \
	cp config/prometheus/tests/*_test.yaml "$$work/"; \
	"$$promtool" check rules --lint=all --lint-fatal "$$work/alerts.rules.yaml"; \
	cd "$$work" && "$$promtool" test rules *_test.yaml

# The e2e tests build the manager and render config/default (with kustomize's library)
# themselves; the e2e build tag keeps them out of `go test ./...`.
.PHONY: test-e2e
test-e2e: manifests envtest ## Run the manager binary, as its ServiceAccount, against a local API server and the Entra ID emulator.
	KUBEBUILDER_ASSETS="$$(K8S_VERSION=$(K8S_VERSION) hack/envtest-binaries.sh)" go test $(GOTESTFLAGS) -tags e2e ./test/e2e/...

# Each fuzz target runs for FUZZTIME; their seed corpora (f.Add) run with every go test.
# A count of executions, not a duration: with a duration, Go's fuzzing coordinator
# can report "context deadline exceeded" as a failure when the time runs out while a
# worker is busy, as it does on a loaded machine, having found nothing. 100,000
# executions take a few seconds per target here.
FUZZTIME ?= 100000x
.PHONY: fuzz
fuzz: ## Fuzz token claim validation, Entra error classification and Secret template rendering for FUZZTIME each.
	go test -run='^$$' -fuzz='^FuzzCheck$$' -fuzztime=$(FUZZTIME) ./internal/tokencheck
	go test -run='^$$' -fuzz='^FuzzClaims$$' -fuzztime=$(FUZZTIME) ./internal/tokencheck
	go test -run='^$$' -fuzz='^FuzzClassify$$' -fuzztime=$(FUZZTIME) ./internal/entra
	go test -run='^$$' -fuzz='^FuzzRender$$' -fuzztime=$(FUZZTIME) ./internal/secrettemplate

.PHONY: bench
bench: envtest ## Measure the operator at scale: N DefenderTenants against kube-apiserver, etcd and the Entra emulator (BENCH_ARGS="-n 5000 -latency 50ms -idle 60s"; see docs/performance.md).
	KUBEBUILDER_ASSETS="$$(K8S_VERSION=$(K8S_VERSION) hack/envtest-binaries.sh)" go run ./hack/bench $(BENCH_ARGS)

##@ Build and run

.PHONY: build
build: manifests generate fmt vet ## Build the manager and emulator binaries into bin/.
	CGO_ENABLED=0 go build -trimpath -o $(LOCALBIN)/manager ./cmd
	CGO_ENABLED=0 go build -trimpath -o $(LOCALBIN)/entra-emulator ./cmd/entra-emulator

.PHONY: kubectl-defender
kubectl-defender: ## Build the kubectl plugin into bin/kubectl-defender (put it on the PATH to run `kubectl defender`).
	CGO_ENABLED=0 go build -trimpath -o $(LOCALBIN)/kubectl-defender ./cmd/kubectl-defender

.PHONY: run
run: manifests generate fmt vet ## Run the operator against the cluster in your kubeconfig (install the CRD first: make install).
	go run ./cmd $(ARGS)

.PHONY: demo
demo: build kubectl-defender envtest ## Try the operator on this machine: a local API server, the Entra ID emulator and config/samples. DEMO_EXIT=1 exits after the tour.
	go build -o $(LOCALBIN)/demo ./hack/demo
	@# Not go run: it exits 1 on Ctrl-C even when the demo stopped cleanly.
	KUBEBUILDER_ASSETS="$$(K8S_VERSION=$(K8S_VERSION) hack/envtest-binaries.sh)" $(LOCALBIN)/demo

.PHONY: docker-build
docker-build: ## Build the container image (needs a Docker engine).
	docker build -t $(IMG) .

##@ Deployment

.PHONY: install
install: manifests kustomize ## Install the CRD into the cluster in your kubeconfig.
	$(KUSTOMIZE) build config/crd | kubectl apply -f -

.PHONY: uninstall
uninstall: manifests kustomize ## Remove the CRD (and every DefenderTenant) from the cluster.
	$(KUSTOMIZE) build config/crd | kubectl delete --ignore-not-found -f -

.PHONY: deploy
deploy: manifests kustomize ## Deploy the operator with image IMG into the cluster in your kubeconfig.
	cd config/manager && $(KUSTOMIZE) edit set image controller=$(IMG)
	$(KUSTOMIZE) build config/default | kubectl apply -f -

.PHONY: undeploy
undeploy: kustomize ## Remove the operator from the cluster.
	$(KUSTOMIZE) build config/default | kubectl delete --ignore-not-found -f -

##@ Tools (built from the Go module proxy into bin/)

$(LOCALBIN):
	mkdir -p $(LOCALBIN)

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN)
$(CONTROLLER_GEN): | $(LOCALBIN)
	GOBIN=$(LOCALBIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)

.PHONY: kustomize
kustomize: $(KUSTOMIZE)
$(KUSTOMIZE): | $(LOCALBIN)
	GOBIN=$(LOCALBIN) go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)

.PHONY: golangci-lint
golangci-lint: $(GOLANGCI_LINT)
$(GOLANGCI_LINT): | $(LOCALBIN)
	GOBIN=$(LOCALBIN) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
