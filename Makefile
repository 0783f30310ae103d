# warren: see README.md. Every target that talks to RabbitMQ runs scripts/broker.sh first.
GO            ?= go
STATICCHECK   := honnef.co/go/tools/cmd/staticcheck@v0.8.2
TEST_TIMEOUT  ?= 14m
PKGS          := ./...

.PHONY: test test-short demo bench lint broker postgres pika soak

broker:
	bash scripts/broker.sh

## pika: make sure Python's pika is there (the interop tests' Python client).
pika:
	bash scripts/pika.sh

## postgres: make sure PostgreSQL answers (the outbox and inbox tests need it).
postgres:
	bash scripts/postgres.sh

## test: the whole suite against a real RabbitMQ, with the race detector (CI runs this).
## The outbox and inbox (pg/) are a module of their own, so that the core
## never builds a database driver; they are tested with the core, and so are
## the command (cmd/warren, a module of its own for its CLI framework, YAML
## parser and progress bar),
## the interop with watermill-amqp (interop/, a module of its own too), the
## benchmarks' own checks (bench/),
## the CQRS example (components/cqrs brings protobuf: its own module), and
## the observability example (the Prometheus exporter: its own module), and
## the Kubernetes example (its manifests' test parses YAML: its own module),
## and zstd for payload (klauspost/compress: its own module).
test: broker postgres pika
	@# First the core's vet, alone: it compiles the core and its
	@# dependencies with -race once, into the build cache every module's
	@# tests then read. (-race: vet's compile is then the test binaries'
	@# own, not a second one; and six modules compiling the same
	@# dependencies at once on a cold cache did it six times.)
	$(GO) vet -race $(PKGS)
	@# Then the modules side by side, each one's output kept together:
	@# the suites wait on the broker, the database and disposable nodes
	@# far more than they use the CPU (one after the other they kept 2
	@# cores 42% busy). The system tests (./tests) are the long pole,
	@# so they start first, in two processes: the tests that kill,
	@# restart or block disposable nodes run one after the other (106 s
	@# idle; TestChaos counts its process's goroutines and heap), beside
	@# the rest (in one process they came first and held up the parallel
	@# tests behind them: 354 s idle, 585 s in make test).
	@# From a cold build cache on this 2-core machine: 1026 s before
	@# (vet without -race, ./tests started last), 770 s with ./tests
	@# first in one process.
	$(MAKE) -j7 --output-sync=target test-system-faults test-system test-core test-pg test-cmd test-interop test-examples

# The system tests that take a disposable node down or block it, each alone.
SYSTEM_FAULTS := ^(TestReconnect|TestClusterFailover|TestChaos|TestBlockedBroker|TestServiceSurvivesCutAndRestart)$$

.PHONY: test-system-faults test-system test-core test-pg test-cmd test-interop test-examples
test-system-faults:
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) -run '$(SYSTEM_FAULTS)' ./tests
test-system:
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) -skip '$(SYSTEM_FAULTS)' ./tests
test-core:
	@# Every micro-benchmark runs once too (a few seconds): one that
	@# panics or measures a stack missing a middleware fails here, not
	@# the day someone reads its numbers.
	@# -p 4: four test binaries at a time, not one per core; the long ones
	@# (warrentest, conn, broker) mostly wait on the broker.
	$(GO) test -race -count=1 -p 4 -timeout $(TEST_TIMEOUT) -bench . -benchtime 1x $$($(GO) list $(PKGS) | grep -v '/tests$$')
test-pg:
	cd pg && $(GO) vet -race ./... && $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...
test-cmd:
	cd cmd/warren && $(GO) vet -race ./... && $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...
test-interop:
	cd bench && $(GO) vet -race .
	cd interop && $(GO) vet -race ./... && $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...
test-examples:
	cd examples/cqrs && $(GO) test -race -count=1 .
	cd examples/observability && $(GO) vet -race . && $(GO) test -race -count=1 .
	cd examples/kubernetes && $(GO) vet -race . && $(GO) test -race -count=1 .
	cd payload/zstd && $(GO) vet -race . && $(GO) test -race -count=1 .

## test-short: unit tests only; no broker needed.
test-short:
	$(GO) test -short -race -count=1 -skip '^Example_publishAndSubscribe$$|^ExampleRequester$$' $(PKGS)
	cd pg && $(GO) test -short -race -count=1 ./...
	cd cmd/warren && $(GO) test -short -race -count=1 ./...

## demo: the quickstart example against the local broker.
demo: broker
	$(GO) run ./examples/quickstart

## bench: side-by-side benchmarks (bench/ is its own module): publish and
## consume (Compare), then scale (restore, declaration, subscribers, router
## CPU, teardown; each row in a vhost of its own).
bench: broker postgres
	cd bench && $(GO) test -run '^$$' -bench Compare -benchtime 1x -count 1 -timeout 30m .
	cd bench && $(GO) test -run '^$$' -bench RequestReply -benchtime 1x -count 1 -timeout 30m .
	cd bench && $(GO) test -run '^$$' -bench Telemetry -benchtime 1x -count 1 -timeout 30m .
	cd bench && $(GO) test -run '^$$' -bench Payload -benchtime 1x -count 1 -timeout 30m .
	cd bench && $(GO) test -run '^$$' -bench WatermillMethod -benchtime 1x -count 1 -timeout 30m .
	cd bench && $(GO) test -run '^$$' -bench Scale -benchtime 1x -count 1 -timeout 60m .
	$(GO) test -run '^$$' -bench ReconnectAfterCut -benchtime 1x -count 1 ./conn
	$(GO) test -run '^$$' -bench 'Process|Send' -benchmem -count 3 ./internal/instrument
	cd pg && $(GO) test -run '^$$' -bench . -benchtime 1x -count 1 -timeout 30m ./bench

## soak: the long reliability runs.
soak: broker postgres
	WARREN_SOAK=1 $(GO) test -race -count=1 -timeout 60m ./tests/...
	cd pg && WARREN_SOAK=1 $(GO) test -race -count=1 -timeout 60m ./e2e/...

## lint: gofmt, go vet, staticcheck (pinned).
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) run $(STATICCHECK) $(PKGS)
	cd pg && $(GO) vet ./... && $(GO) run $(STATICCHECK) ./...
	cd interop && $(GO) vet ./... && $(GO) run $(STATICCHECK) ./...
	cd cmd/warren && $(GO) vet ./... && $(GO) run $(STATICCHECK) ./...
	cd payload/zstd && $(GO) vet ./... && $(GO) run $(STATICCHECK) ./...
