# `make test` installs what the suite needs (apt packages, kernel assets,
# Docker engine, base images) and runs every test, real-VM tests included.
.PHONY: test unit agent bench lint kube-tools fuzz up

test:
	bash scripts/test.sh

# Unit tests only: no VM, no Docker (fast feedback while editing).
unit:
	go test -short ./...

agent:
	mkdir -p .cache/bin
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o .cache/bin/agent ./guest/agent

bench:
	bash scripts/bench.sh

lint:
	@bad=$$(gofmt -l $$(git ls-files '*.go')); \
	  if [ -n "$$bad" ]; then echo "gofmt would change: $$bad" >&2; exit 1; fi
	go vet ./...
	cd build/exportcheck && go vet ./...

# The Kubernetes tools the export tests use (kubecheck, registry, kubeapi).
kube-tools:
	bash scripts/kube-tools.sh .cache/bin

# Long fuzz runs of the user-input parsers (make test runs each for 2s).
fuzz:
	bash scripts/fuzz.sh -time $${FUZZTIME:-5m}

# The appliance in Docker on any machine: engine, Compose plugin, local base
# images when no registry answers, the CA step, then docker compose up --build;
# ends when the shipped examples answer (scripts/up.sh).
up:
	bash scripts/up.sh
