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
	@# Compile first, test after. Vet with -race compiles what the test
	@# binaries are built from, so vet's compile is theirs, not a second
	@# one. The core first and alone: every module builds on it and its
	@# dependencies, and modules compiling them at the same moment on a
	@# cold cache did it once each. Then the other modules' own
	@# dependencies, side by side.
	$(GO) vet -race $(PKGS)
	$(MAKE) -j4 --output-sync=target vet-pg vet-cmd vet-interop vet-examples
	@# Then the suites side by side, each one's output kept together: they
	@# wait on the broker, the database and disposable nodes far more than
	@# they use the CPU (one after the other they kept 2 cores 42% busy),
	@# and they no longer share the cores with the dependencies' compile,
	@# only with their own test packages' (beside it a broker ran its TTL
	@# timers late, and a node took over 90 s to boot; boots also take
	@# turns, PITFALLS 50). The system tests (./tests,
	@# 354 s idle) are the long pole: they start first.
	$(MAKE) -j6 --output-sync=target test-system test-core test-pg test-cmd test-interop test-examples

.PHONY: vet-pg vet-cmd vet-interop vet-examples
vet-pg:
	cd pg && $(GO) vet -race ./...
vet-cmd:
	cd cmd/warren && $(GO) vet -race ./...
vet-interop:
	cd bench && $(GO) vet -race .
	cd interop && $(GO) vet -race ./...
vet-examples:
	cd examples/cqrs && $(GO) vet -race .
	cd examples/observability && $(GO) vet -race .
	cd examples/kubernetes && $(GO) vet -race .
	cd payload/zstd && $(GO) vet -race .

.PHONY: test-system test-core test-pg test-cmd test-interop test-examples
test-system:
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./tests
test-core:
	@# Every micro-benchmark runs once too (a few seconds): one that
	@# panics or measures a stack missing a middleware fails here, not
	@# the day someone reads its numbers.
	@# -p 4: four test binaries at a time, not one per core; the long ones
	@# (warrentest, conn, broker) mostly wait on the broker.
	$(GO) test -race -count=1 -p 4 -timeout $(TEST_TIMEOUT) -bench . -benchtime 1x $$($(GO) list $(PKGS) | grep -v '/tests$$')
test-pg: vet-pg
	cd pg && $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...
test-cmd: vet-cmd
	cd cmd/warren && $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...
test-interop: vet-interop
	@# The benchmarks' sides counted under valgrind, each run natively
	@# once: one that leaves messages behind fails here.
	cd bench && $(GO) test -race -count=1 -run '^TestInstructionSides$$' .
	cd interop && $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...
test-examples: vet-examples
	cd examples/cqrs && $(GO) test -race -count=1 .
	cd examples/observability && $(GO) test -race -count=1 .
	cd examples/kubernetes && $(GO) test -race -count=1 .
	cd payload/zstd && $(GO) test -race -count=1 .

## test-short: unit tests only; no broker needed.
test-short:
	$(GO) test -short -race -count=1 -skip '^Example_publishAndSubscribe$$|^ExampleRequester$$' $(PKGS)
	cd pg && $(GO) test -short -race -count=1 ./...
	cd cmd/warren && $(GO) test -short -race -count=1 ./...

## demo: the quickstart example against the local broker.
demo: broker
	$(GO) run ./examples/quickstart

## bench: side-by-side benchmarks (bench/ is its own module): publish and
## consume (Compare), the consume rows counted in instructions under
## valgrind (Instructions: counts that repeat run after run), then scale
## (restore, declaration, subscribers, router CPU, teardown; each row in a
## vhost of its own).
bench: broker postgres
	cd bench && $(GO) test -run '^$$' -bench Compare -benchtime 1x -count 1 -timeout 30m .
	cd bench && $(GO) test -run '^$$' -bench Instructions -benchtime 1x -count 1 -timeout 30m .
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
