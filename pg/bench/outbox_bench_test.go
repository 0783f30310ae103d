// Package bench measures the outbox and the inbox beside their baselines,
// in the same run (medians of interleaved rounds):
//
//	cd pg && go test -run '^$' -bench . -benchtime 1x ./bench
package bench

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/pg/inbox"
	"github.com/warrenmq/warren/pg/internal/pgtest"
	"github.com/warrenmq/warren/pg/outbox"
	"github.com/warrenmq/warren/warrentest"
)

func TestMain(m *testing.M) { warrentest.Main(m) }

const (
	rounds    = 5
	messages  = 5000
	batchSize = 100
)

var body = make([]byte, 256)

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// machineCPU is the machine's CPU time so far, busy and in all, from
// /proc/stat (zero where there is none).
type cpuTimes struct{ busy, total float64 }

func machineCPU() cpuTimes {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	var t cpuTimes
	for i, f := range strings.Fields(line)[1:] {
		v, _ := strconv.ParseFloat(f, 64)
		t.total += v
		if i != 3 && i != 4 { // idle, iowait
			t.busy += v
		}
	}
	return t
}

// busyMicros is the machine's busy CPU time since t0, in microseconds
// (/proc/stat counts in USER_HZ, 100 a second on Linux).
func (t cpuTimes) busyMicros(t0 cpuTimes) float64 { return (t.busy - t0.busy) * 1e6 / 100 }

// busySince is the share of all cores busy since t0.
func (t cpuTimes) busySince(t0 cpuTimes) float64 {
	if t.total == t0.total {
		return 0
	}
	return (t.busy - t0.busy) / (t.total - t0.total)
}

func median[T int64 | float64 | time.Duration](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func printRow(name string, value, base float64, unit string) {
	if base == 0 {
		fmt.Printf("%-48s %12.2f %s\n", name, value, unit)
		return
	}
	fmt.Printf("%-48s %12.2f %12.2f %s  x %.2f\n", name, value, base, unit, value/base)
}

// target prints a TARGET line: value at least bound (atLeast) or at most.
func target(name string, value, bound float64, atLeast bool) {
	met := value <= bound
	if atLeast {
		met = value >= bound
	}
	fmt.Printf("TARGET name=%q value=%.3f bound=%.2f met=%t\n", name, value, bound, met)
}

// timedPublisher times each Publish call of a phase.
type timedPublisher struct {
	message.Publisher
	mu    sync.Mutex
	calls []time.Duration
}

func (p *timedPublisher) Publish(topic string, msgs ...*message.Message) error {
	start := time.Now()
	err := p.Publisher.Publish(topic, msgs...)
	p.mu.Lock()
	p.calls = append(p.calls, time.Since(start))
	p.mu.Unlock()
	return err
}

// take returns the mean of the calls since the last take and their sum,
// and starts over.
func (p *timedPublisher) take() (mean, sum time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.calls {
		sum += c
	}
	mean = sum / time.Duration(max(len(p.calls), 1))
	p.calls = p.calls[:0]
	return mean, sum
}

// BenchmarkOutbox prints: the relay's throughput against warren's direct
// publish of the same messages in the same batches; commit-to-publish
// latency; the inbox's client CPU per message against the same handler
// without it.
func BenchmarkOutbox(b *testing.B) {
	broker := warrentest.New(b)
	pool := pgtest.Pool(b, pgtest.Database(b))
	ctx := context.Background()
	pub := broker.Publisher(warren.PublisherConfig{Mapping: warren.ExistingQueues{}})
	sub := broker.Subscriber(warren.SubscriberConfig{})
	got, err := sub.Subscribe(ctx, "bench") // declares the queue; drains what is published
	if err != nil {
		b.Fatal(err)
	}
	var arrivedMu sync.Mutex
	arrived := map[string]time.Time{}
	var arrivals = make(chan struct{}, messages*2)
	go func() {
		for m := range got {
			arrivedMu.Lock()
			arrived[m.UUID] = time.Now()
			arrivedMu.Unlock()
			m.Ack()
			arrivals <- struct{}{}
		}
	}()
	awaitArrivals := func(n int) {
		for range n {
			<-arrivals
		}
	}
	ob, _ := outbox.New(outbox.Config{})
	if err := ob.Migrate(ctx, outbox.Pgx(pool)); err != nil {
		b.Fatal(err)
	}

	var direct, relayed, directBusy, relayBusy, directCPU, relayCPU []float64
	// How long one batch's Publish took, confirms included, on each side
	// (the relay records what was confirmed before and reads the next
	// batch while the broker confirms).
	timed := &timedPublisher{Publisher: pub}
	var directBatch, relayBatch, directInPublish, relayInPublish []float64
	directParts, relayParts := map[string][]float64{}, map[string][]float64{}
	addParts := func(to map[string][]float64, t0 partTicks) {
		for part, us := range readPartTicks().microsPerMessage(t0, messages) {
			to[part] = append(to[part], us)
		}
	}
	for r := range rounds {
		// Direct: Publish in batches, each confirmed.
		m0, p0 := machineCPU(), readPartTicks()
		start := time.Now()
		for i := 0; i < messages; i += batchSize {
			msgs := make([]*message.Message, batchSize)
			for j := range msgs {
				msgs[j] = message.NewMessage(fmt.Sprintf("d%d-%d", r, i+j), body)
			}
			if err := timed.Publish("bench", msgs...); err != nil {
				b.Fatal(err)
			}
		}
		elapsed := time.Since(start)
		direct = append(direct, float64(messages)/elapsed.Seconds())
		mean, sum := timed.take()
		directBatch = append(directBatch, mean.Seconds()*1000)
		directInPublish = append(directInPublish, 100*sum.Seconds()/elapsed.Seconds())
		directBusy = append(directBusy, machineCPU().busySince(m0))
		directCPU = append(directCPU, machineCPU().busyMicros(m0)/messages)
		addParts(directParts, p0)
		awaitArrivals(messages)

		// Relayed: the rows are committed first, then the relay drains them.
		for i := 0; i < messages; i += batchSize {
			tx, _ := pool.Begin(ctx)
			msgs := make([]*message.Message, batchSize)
			for j := range msgs {
				msgs[j] = message.NewMessage(fmt.Sprintf("o%d-%d", r, i+j), body)
			}
			if err := ob.Write(ctx, outbox.Pgx(tx), "bench", msgs...); err != nil {
				b.Fatal(err)
			}
			if err := tx.Commit(ctx); err != nil {
				b.Fatal(err)
			}
		}
		relay, _ := outbox.NewRelay(outbox.RelayConfig{Pool: pool, Publisher: timed, Batch: batchSize})
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		m0, p0 = machineCPU(), readPartTicks()
		start = time.Now()
		go func() { defer close(done); _ = relay.Run(rctx) }()
		deadline := time.Now().Add(5 * time.Minute)
		for relay.Stats().Published < messages {
			if time.Now().After(deadline) {
				b.Fatalf("relay published %d of %d in 5 minutes", relay.Stats().Published, messages)
			}
			time.Sleep(time.Millisecond) // polling the relay's counter, with a deadline
		}
		elapsed = time.Since(start)
		relayed = append(relayed, float64(messages)/elapsed.Seconds())
		mean, sum = timed.take()
		relayBatch = append(relayBatch, mean.Seconds()*1000)
		relayInPublish = append(relayInPublish, 100*sum.Seconds()/elapsed.Seconds())
		relayBusy = append(relayBusy, machineCPU().busySince(m0))
		relayCPU = append(relayCPU, machineCPU().busyMicros(m0)/messages)
		addParts(relayParts, p0)
		cancel()
		<-done
		awaitArrivals(messages)
	}
	fmt.Printf("%-48s %12s %12s\n", "row", "value", "baseline")
	printRow("outbox relay msg/s vs direct Publish (batches of 100)", median(relayed), median(direct), "msg/s")
	target("outbox relay msg/s / direct Publish", median(relayed)/median(direct), 0.9, true)
	// The broker, PostgreSQL and this process share the machine's cores:
	// how busy they all were says whether the relay waited on anything but
	// the CPU the database's work took from the broker.
	printRow("machine CPU busy, relay vs direct (% of all cores)", 100*median(relayBusy), 100*median(directBusy), "%")
	printRow("machine CPU per message (broker, database, client)", median(relayCPU), median(directCPU), "us")
	// Each part's share, from /proc (in clock ticks: 2 us a message at
	// 5,000 messages a round). With the cores the bound, the relay reaches
	// 0.9x direct publishing only if it costs the machine at most direct /
	// 0.9 a message: the allowance row is what that leaves over direct,
	// the reading and marking of the rows (the database's part and the
	// client's share of it) included.
	for _, part := range []string{partDatabase, partBroker, partClient, partOther} {
		fmt.Printf("%-48s %12.2f %12.2f us\n", "  "+part+" CPU per message", median(relayParts[part]), median(directParts[part]))
	}
	printRow("the 0.9 bound's allowance over direct (machine CPU per message)", median(directCPU)/0.9-median(directCPU), 0, "us")
	// Where the relay's time goes: a batch's Publish, confirms included,
	// and the share of the phase spent inside Publish (the relay records
	// and reads rows while the broker confirms; outside Publish are a
	// pass's first read, its last record, its commit and the hand-offs).
	printRow("one batch's Publish, confirms included, mean", median(relayBatch), median(directBatch), "ms")
	printRow("share of the phase inside Publish", median(relayInPublish), median(directInPublish), "%")

	// Commit-to-publish latency: one message per transaction at about 200/s
	// (5,000 of them, so that the p99 is 50 samples deep),
	// the relay woken by NOTIFY; latency to its arrival at a consumer.
	relay, _ := outbox.NewRelay(outbox.RelayConfig{Pool: pool, Publisher: pub})
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = relay.Run(rctx) }()
	const latencyN = 5000
	committed := map[string]time.Time{}
	tick := time.NewTicker(5 * time.Millisecond)
	for i := range latencyN {
		<-tick.C
		id := "lat-" + strconv.Itoa(i)
		tx, _ := pool.Begin(ctx)
		if err := ob.Write(ctx, outbox.Pgx(tx), "bench", message.NewMessage(id, body)); err != nil {
			b.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			b.Fatal(err)
		}
		committed[id] = time.Now()
	}
	tick.Stop()
	awaitArrivals(latencyN)
	cancel()
	<-done
	var lat []time.Duration
	arrivedMu.Lock()
	for id, c := range committed {
		lat = append(lat, arrived[id].Sub(c))
	}
	arrivedMu.Unlock()
	slices.Sort(lat)
	printRow("commit to consumer latency p50", float64(lat[len(lat)/2].Microseconds())/1000, 0, "ms")
	printRow("commit to consumer latency p99", float64(lat[len(lat)*99/100].Microseconds())/1000, 0, "ms")

	inboxOverhead(b, pool)
}

// inboxOverhead: client CPU per message of a handler that writes its effect
// in a transaction of its own, against the same handler inside the inbox
// (whose transaction it uses), messages handed straight to the handler.
func inboxOverhead(b *testing.B, pool *pgxpool.Pool) {
	ctx := context.Background()
	if _, err := pool.Exec(ctx, "CREATE TABLE effects (id text PRIMARY KEY)"); err != nil {
		b.Fatal(err)
	}
	ib, _ := inbox.New(inbox.Config{Pool: pool, Consumer: "bench"})
	if err := ib.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	// applied writes the handler's effect in tx and commits it.
	applied := func(tx pgx.Tx, m *message.Message) ([]*message.Message, error) {
		defer func() { _ = tx.Rollback(ctx) }()
		if _, err := tx.Exec(m.Context(), "INSERT INTO effects (id) VALUES ($1)", m.UUID); err != nil {
			return nil, err
		}
		return nil, tx.Commit(m.Context())
	}
	plain := func(m *message.Message) ([]*message.Message, error) {
		tx, err := pool.Begin(m.Context())
		if err != nil {
			return nil, err
		}
		return applied(tx, m)
	}
	inTx := ib.Middleware(func(m *message.Message) ([]*message.Message, error) {
		_, err := inbox.Tx(m.Context()).Exec(m.Context(), "INSERT INTO effects (id) VALUES ($1)", m.UUID)
		return nil, err
	})
	// The floor under the bound: the handler's transaction with the
	// statements the inbox adds to it, written by hand (the record's
	// insert sent with the begin, in one round trip, as the inbox sends
	// it), and none of the inbox's code. What the with side costs over
	// it is the inbox's own; what it costs over the without side is the
	// database's work for the record, which no inbox does without.
	byHand := func(m *message.Message) ([]*message.Message, error) {
		conn, err := pool.Acquire(m.Context())
		if err != nil {
			return nil, err
		}
		defer conn.Release()
		tx, err := conn.Conn().BeginTx(m.Context(), pgx.TxOptions{BeginQuery: "BEGIN; INSERT INTO " + inbox.DefaultTable +
			" (consumer, message_id) VALUES ('bench-by-hand', '" + m.UUID + "')"})
		if err != nil {
			return nil, err
		}
		return applied(tx, m)
	}
	// More rounds than the relay's: each is short, and the median of a
	// few swung by a tenth between runs on a 2-core machine.
	const n, inboxRounds = 2000, 7
	var without, with, floor []float64
	for r := range inboxRounds {
		for _, v := range []struct {
			h   message.HandlerFunc
			out *[]float64
			tag string
		}{{plain, &without, "p"}, {inTx, &with, "i"}, {byHand, &floor, "h"}} {
			c0 := processCPU()
			for i := range n {
				if _, err := v.h(message.NewMessage(fmt.Sprintf("%s%d-%d", v.tag, r, i), nil)); err != nil {
					b.Fatal(err)
				}
			}
			*v.out = append(*v.out, float64((processCPU()-c0).Microseconds())/n)
		}
	}
	printRow("inbox: client CPU per message vs without", median(with), median(without), "us")
	target("inbox client CPU / without", median(with)/median(without), 1.2, false)
	printRow("inbox: the same statements by hand vs without (the floor)", median(floor), median(without), "us")
	printRow("inbox: client CPU per message vs the floor (its own)", median(with), median(floor), "us")
}
