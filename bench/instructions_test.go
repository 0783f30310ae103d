package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/telemetry"
)

// The consume rows of BenchmarkCompare, counted in instructions instead of
// CPU seconds. A row's client CPU follows the broker's pacing (how many
// deliveries each read brings, how often the client sleeps), which moves
// by a third from round to round on this machine, more than the 1.1 bound
// the targets set; an instruction count does not move with it. Each side
// consumes a queue filled beforehand in a process of its own, run under
// valgrind's cachegrind, which counts every user-space instruction it
// executes (a publish side publishes to an empty queue instead, for the
// telemetry rows of BenchmarkTelemetry's publishes, whose CPU moves as
// much). The side runs twice, with instrSmall and with instrLarge
// messages, and the difference divided by the difference in messages is
// its instructions per message: the process's start, its connection and
// its exit cancel out.
//
// What the count leaves out: the kernel's work (system calls: warren
// makes about half the write calls raw makes, its acks coalesced), and
// the broker's pacing itself. Under valgrind the client runs tens of
// times slower than the broker delivers, so every read finds a full
// buffer: the count is the client's work per message with deliveries
// always waiting, the same for every side.
const (
	instrSmall = 2000
	instrLarge = 20000
)

// instrSide is one row run under valgrind: run takes n messages of q
// (filled by instrFill) and returns, or publishes n messages to q, or
// makes n requests to q, as its kind says.
type instrSide struct {
	key, name string
	// routeQueue: q is declared as the router's route declares it (with
	// its dead-letter arguments), else as a plain durable queue.
	routeQueue bool
	// withIDs: each message has a message id, as a warren publisher's
	// have (else none, as the raw baseline's), so that the telemetry
	// sides' spans carry messaging.message.id, as the floor's do.
	withIDs bool
	// publishes: the side publishes n messages to q, declared empty
	// beforehand, in place of consuming them.
	publishes bool
	// answered: the side makes n requests to q, declared empty
	// beforehand, which the bench's own process answers (instrResponder,
	// out of the count).
	answered bool
	run      func(t testing.TB, q string, n int)
}

var instrSides = []instrSide{
	{key: "rawConsume", name: "raw amqp091-go (prefetch 256, manual ack)", run: rawConsume},
	{key: "rawConsume64", name: "raw amqp091-go, 64 goroutines taking deliveries", run: func(t testing.TB, q string, n int) {
		rawConsumeGoroutines(t, q, n, 64)
	}},
	{key: "rawContract1", name: "raw amqp091-go with Watermill's contract, 1 in flight", run: func(t testing.TB, q string, n int) {
		rawWatermillContract(t, q, 1, n)
	}},
	{key: "rawContract64", name: "raw amqp091-go with Watermill's contract, 64 in flight", run: func(t testing.TB, q string, n int) {
		rawWatermillContract(t, q, 64, n)
	}},
	{key: "consume1", name: "warren Subscriber MaxInFlight 1", run: subscriberSide(1)},
	{key: "consume64", name: "warren Subscriber MaxInFlight 64", run: subscriberSide(64)},
	{key: "router1", name: "warren router, default stack, MaxInFlight 1", routeQueue: true, run: routerSide(1)},
	{key: "router64", name: "warren router, default stack, MaxInFlight 64", routeQueue: true, run: routerSide(64)},
	// Telemetry on a route (MaxInFlight 1): off, the SDK sampling
	// everything, the SDK sampling nothing, and the floors, warren with
	// telemetry off and the SDK's own calls for each message made in the
	// handler (sdkCalls, as BenchmarkTelemetry's floor rows).
	{key: "telOff", name: "router, telemetry off", routeQueue: true, withIDs: true, run: telemetrySide(telOff)},
	{key: "telSampled", name: "router, telemetry sampled", routeQueue: true, withIDs: true, run: telemetrySide(telSampled)},
	{key: "telUnsampled", name: "router, telemetry not sampled", routeQueue: true, withIDs: true, run: telemetrySide(telUnsampled)},
	{key: "telFloorSampled", name: "router, telemetry off, the SDK's calls, sampled", routeQueue: true, withIDs: true, run: telemetrySide(telFloorSampled)},
	{key: "telFloorUnsampled", name: "router, telemetry off, the SDK's calls, not sampled", routeQueue: true, withIDs: true, run: telemetrySide(telFloorUnsampled)},
	// The same for publishing: a Publisher's publishes from 16 goroutines,
	// one message a call, each waiting for its confirm (BenchmarkTelemetry's
	// 16-goroutine rows), with telemetry as above, and the floors, the
	// SDK's own calls for each publish made around it (sdkCalls.publish).
	{key: "pubOff", name: "publish, telemetry off", publishes: true, run: telemetryPublishSide(telOff)},
	{key: "pubSampled", name: "publish, telemetry sampled", publishes: true, run: telemetryPublishSide(telSampled)},
	{key: "pubUnsampled", name: "publish, telemetry not sampled", publishes: true, run: telemetryPublishSide(telUnsampled)},
	{key: "pubFloorSampled", name: "publish, telemetry off, the SDK's calls, sampled", publishes: true, run: telemetryPublishSide(telFloorSampled)},
	{key: "pubFloorUnsampled", name: "publish, telemetry off, the SDK's calls, not sampled", publishes: true, run: telemetryPublishSide(telFloorUnsampled)},
	// Request/reply from 16 requesters against a raw echo responder in
	// the bench's process (out of the count): the bare raw loop (the
	// throughput target's baseline), the raw loop sending what a warren
	// request sends (confirmed, mandatory, persistent, with a message id
	// and an expiration, ending at its reply: BenchmarkRequestReply's
	// floor), and warren's Requester. The rates those rows print move by
	// more from run to run than a request's own work; its count does not.
	{key: "rpcRaw", name: "request/reply, raw direct reply-to, 16 requesters", answered: true, run: rawRequestSide(rawBare)},
	{key: "rpcRawAsWarren", name: "request/reply, raw sending a warren request, 16 requesters", answered: true, run: rawRequestSide(rawLikeWarren)},
	{key: "rpcWarren", name: "request/reply, warren Requester, 16 requesters", answered: true, run: warrenRequestSide},
	{key: "warrenOnWatermill", name: "warren Subscriber MaxInFlight 1 (default), Watermill router", run: func(t testing.TB, q string, n int) {
		wc := openWarren(t, conn.Config{})
		defer wc.Close(context.Background())
		sub, err := warren.NewSubscriber(wc, warren.SubscriberConfig{Prefetch: 256})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		consumeOnWatermillRouter(t, sub, q, n)
	}},
	{key: "watermillConsume", name: "watermill-amqp v3.0.2 on a Watermill router", run: func(t testing.TB, q string, n int) {
		cfg := wamqp.NewDurableQueueConfig(brokerURL())
		cfg.Consume.Qos.PrefetchCount = 256
		sub, err := wamqp.NewSubscriber(cfg, watermill.NopLogger{})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		consumeOnWatermillRouter(t, sub, q, n)
	}},
}

func subscriberSide(inFlight int) func(t testing.TB, q string, n int) {
	return func(t testing.TB, q string, n int) {
		wc := openWarren(t, conn.Config{})
		defer wc.Close(context.Background())
		sub, err := warren.NewSubscriber(wc, warren.SubscriberConfig{MaxInFlight: inFlight, Prefetch: 256})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		out, err := sub.Subscribe(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		for range n {
			(<-out).Ack()
		}
	}
}

func routerSide(inFlight int) func(t testing.TB, q string, n int) {
	return func(t testing.TB, q string, n int) {
		routerConsume(t, routerBench{url: brokerURL(), queue: q, n: n, prefetch: 256, maxInFlight: inFlight, durable: true})
	}
}

type telemetryKind int

const (
	telOff telemetryKind = iota
	telSampled
	telUnsampled
	telFloorSampled
	telFloorUnsampled
)

// telemetrySide is a route consuming with telemetry as k says, the SDK's
// spans batched to a no-op exporter (flushed before the side ends, so that
// the exports count) and its meter read by a manual reader, as in
// BenchmarkTelemetry.
func telemetrySide(k telemetryKind) func(t testing.TB, q string, n int) {
	return func(t testing.TB, q string, n int) {
		tel, calls, flush := telemetryOf(t, k, q)
		defer flush()
		var work func(*message.Message)
		if calls != nil {
			work = calls.consume
		}
		routerConsume(t, routerBench{url: brokerURL(), queue: q, n: n, prefetch: 256, durable: true, tel: tel, work: work})
	}
}

// telemetryPublishSide publishes n messages to q from instrCallers
// goroutines, one a call, through a Publisher with telemetry as k says
// (telemetrySide's).
func telemetryPublishSide(k telemetryKind) func(t testing.TB, q string, n int) {
	return func(t testing.TB, q string, n int) {
		tel, calls, flush := telemetryOf(t, k, q)
		defer flush()
		c := openWarren(t, conn.Config{})
		defer c.Close(context.Background())
		pub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: warren.ExistingQueues{}, Telemetry: tel})
		if err != nil {
			t.Fatal(err)
		}
		defer pub.Close()
		fromCallers(t, n, func(i int) error {
			msg := message.NewMessage(strconv.Itoa(i), body)
			if calls == nil {
				return pub.Publish(q, msg)
			}
			return calls.publish(msg, func() error { return pub.Publish(q, msg) })
		})
	}
}

// instrCallers is how many goroutines make a publish or request side's
// calls.
const instrCallers = 16

// rawRequestSide makes n requests to q from instrCallers goroutines with
// a raw direct reply-to loop of the given shape (BenchmarkRequestReply's).
func rawRequestSide(shape rawShape) func(t testing.TB, q string, n int) {
	return func(t testing.TB, q string, n int) {
		raw := newRawRequester(t, brokerURL(), shape)
		defer raw.close()
		fromCallers(t, n, func(int) error { return raw.request(q, body) })
	}
}

// warrenRequestSide makes n requests to q from instrCallers goroutines
// through a warren Requester with its defaults.
func warrenRequestSide(t testing.TB, q string, n int) {
	c := openWarren(t, conn.Config{})
	defer c.Close(context.Background())
	rq, err := warren.NewRequester(c, warren.RequesterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer rq.Close()
	fromCallers(t, n, func(i int) error {
		_, err := rq.Request(context.Background(), q, message.NewMessage(strconv.Itoa(i), body))
		return err
	})
}

// fromCallers makes calls 1 to n of call from instrCallers goroutines; a
// caller stops at its first error.
func fromCallers(t testing.TB, n int, call func(i int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range instrCallers {
		wg.Go(func() {
			for i := int(next.Add(1)); i <= n; i = int(next.Add(1)) {
				if err := call(i); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// instrResponder answers every request on q with raw amqp091-go (its body
// back, to the request's reply-to, with its correlation id) until stop
// returns, and reports how many it answered. It runs in the bench's own
// process, so that a request side's count is its requester's alone.
func instrResponder(t testing.TB, q string) (stop func() int) {
	c := dial(t)
	ch, err := c.Channel()
	if err != nil {
		_ = c.Close()
		t.Fatal(err)
	}
	if err := ch.Qos(64, 0, false); err != nil {
		_ = c.Close()
		t.Fatal(err)
	}
	deliveries, err := ch.Consume(q, "", false, false, false, false, nil)
	if err != nil {
		_ = c.Close()
		t.Fatal(err)
	}
	answered := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for d := range deliveries {
			err := ch.PublishWithContext(context.Background(), "", d.ReplyTo, false, false,
				amqp.Publishing{CorrelationId: d.CorrelationId, MessageId: d.MessageId, Body: d.Body})
			if err != nil {
				return // the connection is closing
			}
			// Counted once the reply is sent, before the ack: the requester
			// can take the last reply and stop() close the connection
			// before this ack is written, and that request was answered.
			answered++
			if d.Ack(false) != nil {
				return
			}
		}
	}()
	return func() int {
		_ = c.Close()
		<-done
		return answered
	}
}

// telemetryOf is the telemetry a side of kind k runs with: warren's (off,
// or the SDK sampling everything or nothing), or warren's off and the
// SDK's own calls (calls) for the floors. flush ends the providers, the
// batched spans exported first, so that the exports count with the side.
func telemetryOf(t testing.TB, k telemetryKind, q string) (tel *telemetry.Telemetry, calls *sdkCalls, flush func()) {
	ctx := context.Background()
	sampler := sdktrace.ParentBased(sdktrace.AlwaysSample())
	if k == telUnsampled || k == telFloorUnsampled {
		sampler = sdktrace.ParentBased(sdktrace.NeverSample())
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sampler), sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	flush = func() {
		if err := tp.ForceFlush(ctx); err != nil {
			t.Error(err)
		}
		_ = tp.Shutdown(ctx)
		_ = mp.Shutdown(ctx)
	}
	tel = telemetry.Disabled()
	switch k {
	case telSampled, telUnsampled:
		var err error
		if tel, err = telemetry.New(telemetry.Config{TracerProvider: tp, MeterProvider: mp}); err != nil {
			flush()
			t.Fatal(err)
		}
	case telFloorSampled, telFloorUnsampled:
		calls = newSDKCalls(t, tp, mp, q)
	}
	return tel, calls, flush
}

// instrChildEnv names the side a child process runs (with instrQueueEnv
// and instrCountEnv); set only by BenchmarkInstructions.
const (
	instrChildEnv = "WARREN_INSTR_SIDE"
	instrQueueEnv = "WARREN_INSTR_QUEUE"
	instrCountEnv = "WARREN_INSTR_N"
)

func instrFill(t testing.TB, s instrSide, q string, n int) {
	if s.publishes || s.answered {
		freshQueue(t, q)
		return
	}
	if s.routeQueue {
		c := dial(t)
		defer c.Close()
		declareRouteQueue(t, c, q, true)
	} else {
		freshQueue(t, q)
	}
	rawPublishWith(t, q, n, 1000, func(i int) amqp.Publishing {
		p := amqp.Publishing{DeliveryMode: amqp.Persistent, Body: body}
		if s.withIDs {
			p.MessageId = strconv.Itoa(i)
		}
		return p
	})
}

func instrDrop(q string) {
	dropQueue(q)
	dropQueue(q + ".dlq")
}

// TestInstructionSides runs each side natively on a small queue and checks
// that it did all it says (consumed the queue whole, left every message it
// published in it, had every request answered), so that
// BenchmarkInstructions counts what it says. Run by BenchmarkInstructions under valgrind, it is one
// side's child process instead.
func TestInstructionSides(t *testing.T) {
	if key := os.Getenv(instrChildEnv); key != "" {
		n, err := strconv.Atoi(os.Getenv(instrCountEnv))
		if err != nil {
			t.Fatalf("%s: %v", instrCountEnv, err)
		}
		i := slices.IndexFunc(instrSides, func(s instrSide) bool { return s.key == key })
		if i < 0 {
			t.Fatalf("no side %q", key)
		}
		instrSides[i].run(t, os.Getenv(instrQueueEnv), n)
		return
	}
	defer removeDelayTopology(t)()
	const n = 300
	for _, s := range instrSides {
		t.Run(s.key, func(t *testing.T) {
			q := "warren.bench.instructions." + s.key
			defer instrDrop(q)
			instrFill(t, s, q, n)
			if s.answered {
				stop := instrResponder(t, q)
				s.run(t, q, n)
				if got := stop(); got != n {
					t.Fatalf("%d requests answered, want %d", got, n)
				}
			} else {
				s.run(t, q, n)
			}
			c := dial(t)
			defer c.Close()
			ch, err := c.Channel()
			if err != nil {
				t.Fatal(err)
			}
			st, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			want := 0 // consumed whole, or every request taken by the responder
			if s.publishes {
				want = n // every message published stays in the queue
			}
			if st.Messages != want {
				t.Fatalf("%d messages in the queue, want %d (%d consumed or published)", st.Messages, want, n)
			}
		})
	}
}

// instrCount is one child's count: its total and its instructions by
// function.
type instrCount struct {
	total int64
	byFn  map[string]int64
}

// BenchmarkInstructions prints each side's instructions per message, its
// ratio to raw amqp091-go's consume and where they go (by package), from
// counts that repeat run after run:
//
//	cd bench && go test -run '^$' -bench Instructions -benchtime 1x
func BenchmarkInstructions(b *testing.B) {
	vg, err := exec.LookPath("valgrind")
	if err != nil {
		b.Fatal("valgrind is not on PATH (apt-get install valgrind): ", err)
	}
	defer removeDelayTopology(b)()
	// WARREN_INSTR_DIR keeps the counts, to read function by function
	// (cg_annotate, cg_diff); they go with the run otherwise.
	dir := os.Getenv("WARREN_INSTR_DIR")
	if dir == "" {
		dir = b.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	// The binary go test runs has no symbols (go test links without
	// them), and cachegrind names functions from them: build one that has.
	bin := filepath.Join(dir, "bench.test")
	if o, err := exec.Command("go", "test", "-c", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("go test -c: %v\n%s", err, o)
	}
	perMsg := map[string]float64{}
	parts := map[string]map[string]float64{}
	for range b.N {
		for _, s := range instrSides {
			if only := os.Getenv("WARREN_INSTR_ONLY"); only != "" && !slices.Contains(strings.Split(only, ","), s.key) {
				continue
			}
			q := "warren.bench.instructions." + s.key
			var counts [2]instrCount
			for i, n := range []int{instrSmall, instrLarge} {
				instrFill(b, s, q, n)
				var stop func() int
				if s.answered {
					stop = instrResponder(b, q)
				}
				counts[i] = instrRun(b, vg, bin, dir, s, q, n)
				if stop != nil {
					if got := stop(); got != n {
						b.Fatalf("side %s: %d requests answered, want %d", s.key, got, n)
					}
				}
			}
			instrDrop(q)
			d := float64(instrLarge - instrSmall)
			perMsg[s.key] = float64(counts[1].total-counts[0].total) / d
			parts[s.key] = map[string]float64{}
			for fn, c := range counts[1].byFn {
				parts[s.key][instrPart(fn)] += float64(c-counts[0].byFn[fn]) / d
			}
		}
	}
	instrReport(perMsg, parts)
}

// instrRun runs side s in a child process under cachegrind, consuming n
// messages of q, and returns its count.
func instrRun(b *testing.B, vg, bin, dir string, s instrSide, q string, n int) instrCount {
	out := filepath.Join(dir, fmt.Sprintf("%s.%d.cg", s.key, n))
	cmd := exec.Command(vg, "--tool=cachegrind", "--cache-sim=no", "--branch-sim=no",
		"--cachegrind-out-file="+out, "-q",
		bin, "-test.run", "^TestInstructionSides$", "-test.count", "1")
	// Go's runtime under valgrind: one P, no preemption signals, no
	// RDTSCP. Valgrind runs one thread at a time; with two Ps, a thread
	// spinning for a lock whose holder valgrind has set aside spins for
	// its whole turn, which no native run does (one side's count moved
	// tenfold between runs; with one P, by 2%). Preemption signals come at
	// times no count repeats (and callgrind asserts on them). Valgrind
	// 3.19 does not decode RDTSCP, with which the runtime times its
	// contended locks. One P leaves out what waking the other core costs
	// a goroutine hand-off natively.
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1", "GODEBUG=asyncpreemptoff=1,cpu.rdtscp=off",
		instrChildEnv+"="+s.key, instrQueueEnv+"="+q, instrCountEnv+"="+strconv.Itoa(n))
	if o, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("side %s, %d messages, under valgrind: %v\n%s", s.key, n, err, o)
	}
	c, err := readCachegrind(out)
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// readCachegrind reads a cachegrind output file of the single event Ir.
func readCachegrind(path string) (instrCount, error) {
	f, err := os.Open(path)
	if err != nil {
		return instrCount{}, err
	}
	defer f.Close()
	c := instrCount{byFn: map[string]int64{}}
	fn := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "fn="):
			fn = line[3:]
		case strings.HasPrefix(line, "summary:"):
			c.total, err = strconv.ParseInt(strings.TrimSpace(line[len("summary:"):]), 10, 64)
			if err != nil {
				return c, fmt.Errorf("%s: %q: %w", path, line, err)
			}
		case line != "" && line[0] >= '0' && line[0] <= '9':
			f := strings.Fields(line)
			if len(f) != 2 {
				return c, fmt.Errorf("%s: %q: want a line and a count", path, line)
			}
			v, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return c, fmt.Errorf("%s: %q: %w", path, line, err)
			}
			c.byFn[fn] += v
		}
	}
	if err := sc.Err(); err != nil {
		return c, err
	}
	if c.total == 0 {
		return c, errors.New(path + ": no summary line")
	}
	return c, nil
}

// instrPart names where a function's instructions go.
func instrPart(fn string) string {
	for _, p := range []struct{ prefix, part string }{
		{"github.com/warrenmq/warren/bench.", "the bench's loop"},
		{"github.com/warrenmq/warren", "warren"},
		{"github.com/rabbitmq/amqp091-go", "amqp091-go"},
		{"github.com/ThreeDotsLabs/watermill-amqp", "watermill-amqp"},
		{"github.com/ThreeDotsLabs/watermill", "watermill"},
		{"runtime.", "Go runtime"},
		{"internal/runtime", "Go runtime"},
	} {
		if strings.HasPrefix(fn, p.prefix) {
			return p.part
		}
	}
	return "other (standard library, ...)"
}

func instrReport(perMsg map[string]float64, parts map[string]map[string]float64) {
	raw := perMsg["rawConsume"]
	fmt.Printf("\ninstructions per message, consumed (publish sides: published) (cachegrind, %d-%d messages):\n", instrSmall, instrLarge)
	fmt.Printf("%-62s %10s %8s  %s\n", "side", "instr/msg", "/raw", "by part")
	for _, s := range instrSides {
		if _, ok := perMsg[s.key]; !ok {
			continue // left out by WARREN_INSTR_ONLY
		}
		var ps []string
		for p, v := range parts[s.key] {
			if v >= 50 || v <= -50 {
				ps = append(ps, fmt.Sprintf("%s %.0f", p, v))
			}
		}
		sort.Strings(ps)
		ratio := fmt.Sprintf("%.3f", perMsg[s.key]/raw)
		if s.publishes || s.answered || raw == 0 {
			ratio = "-" // raw's is a consumed message's
		}
		fmt.Printf("%-62s %10.0f %8s  %s\n", s.name, perMsg[s.key], ratio, strings.Join(ps, ", "))
	}
	// The consume targets' ratios, counted: each against the targets'
	// baseline and against its reference (what the same shape costs raw).
	fmt.Println()
	for _, r := range []struct{ name, side, base string }{
		{"Subscriber MaxInFlight 1 / raw", "consume1", "rawConsume"},
		{"Subscriber MaxInFlight 64 / raw", "consume64", "rawConsume"},
		{"router MaxInFlight 1 / raw", "router1", "rawConsume"},
		{"router MaxInFlight 64 / raw", "router64", "rawConsume"},
		{"Subscriber MaxInFlight 1 / raw with Watermill's contract", "consume1", "rawContract1"},
		{"Subscriber MaxInFlight 64 / raw with Watermill's contract", "consume64", "rawContract64"},
		{"router MaxInFlight 64 / raw with 64 goroutines", "router64", "rawConsume64"},
		{"on a Watermill router, warren / watermill-amqp", "warrenOnWatermill", "watermillConsume"},
		{"request/reply, warren / raw direct reply-to", "rpcWarren", "rpcRaw"},
		{"request/reply, warren / raw sending a warren request", "rpcWarren", "rpcRawAsWarren"},
		{"request/reply, raw sending a warren request / raw direct reply-to", "rpcRawAsWarren", "rpcRaw"},
	} {
		if a, b := perMsg[r.side], perMsg[r.base]; a > 0 && b > 0 {
			fmt.Printf("INSTRUCTIONS name=%q ratio=%.3f (%.0f / %.0f)\n", r.name, a/b, a, b)
		}
	}
	// Telemetry: what it adds to a routed message and to a published one,
	// against what the SDK's own calls in place add (the floor).
	for _, r := range []struct{ name, off, side, floor string }{
		{"telemetry sampled, added per consumed message", "telOff", "telSampled", "telFloorSampled"},
		{"telemetry not sampled, added per consumed message", "telOff", "telUnsampled", "telFloorUnsampled"},
		{"telemetry sampled, added per published message", "pubOff", "pubSampled", "pubFloorSampled"},
		{"telemetry not sampled, added per published message", "pubOff", "pubUnsampled", "pubFloorUnsampled"},
	} {
		off, w, f := perMsg[r.off], perMsg[r.side], perMsg[r.floor]
		if off > 0 && w > 0 && f > 0 {
			fmt.Printf("INSTRUCTIONS name=%q warren=%+.0f floor=%+.0f over the floor %+.0f\n", r.name, w-off, f-off, w-f)
		}
	}
}
