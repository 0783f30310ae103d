package main

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/components/delay"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/conn"
	levels "github.com/warrenmq/warren/internal/delay"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/middleware"
	"github.com/warrenmq/warren/telemetry"
	"github.com/warrenmq/warren/telemetry/telemetrytest"
)

// logBuffer is a logger's output, safe to read while it writes.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// TestScheduledToAnUnboundKeyIsKeptThenReplayed: a message scheduled through
// a topic exchange to a routing key no queue is bound to is not lost when
// it falls due: it is kept in warren.delay.unroutable with the reason and
// its exchange and routing key (no plumbing), counted and logged; once a
// queue is bound, `warren dlq replay` sends it on and it arrives once.
func TestScheduledToAnUnboundKeyIsKeptThenReplayed(t *testing.T) {
	url, _ := newVhost(t)
	var logs logBuffer
	rec := telemetrytest.New(t, telemetry.Config{})
	c := rabbittest.OpenConn(t, url, conn.Config{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Telemetry: rec.Telemetry})
	pub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: warren.TopicExchange{Exchange: "shop"}, Mandatory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	msg := message.NewMessage("sched-1", []byte(`{"order":1}`))
	msg.Metadata.Set("tenant", "acme")
	delay.Message(msg, delay.For(5*time.Second)) // still in the future when Publish looks, however loaded the machine
	if err := pub.Publish("order.created", msg); err != nil {
		t.Fatalf("Publish of a scheduled message: %v (its routing is checked when it is due)", err)
	}
	ch := dial(t, url)
	rabbittest.Eventually(t, 30*time.Second, "the due message kept in "+levels.ScheduleUnroutableQueue, func() bool {
		return depth(t, ch, levels.ScheduleUnroutableQueue) == 1
	})
	kept, ok, err := ch.Get(levels.ScheduleUnroutableQueue, false)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	h := kept.Headers
	if h[middleware.HeaderDLErrorType] != "unroutable" || h[middleware.HeaderDLExchange] != "shop" || h[middleware.HeaderDLRoutingKey] != "order.created" ||
		h["tenant"] != "acme" || kept.MessageId != "sched-1" {
		t.Fatalf("kept message: id %q, headers %v", kept.MessageId, h)
	}
	for k := range h {
		if strings.HasPrefix(k, "warren-delay-") || k == "warren-publish-seq" || k == "x-death" || strings.HasPrefix(k, "x-first-death") || strings.HasPrefix(k, "_watermill_delayed") {
			t.Errorf("the kept message carries plumbing %q", k)
		}
	}
	if err := kept.Nack(false, true); err != nil {
		t.Fatal(err)
	}
	if n := rec.Counter(t, telemetry.MetricScheduledUnroutable); n != 1 {
		t.Errorf("%s = %d, want 1", telemetry.MetricScheduledUnroutable, n)
	}
	if l := logs.String(); !strings.Contains(l, "level=WARN") || !strings.Contains(l, "no queue took it") || !strings.Contains(l, "sched-1") {
		t.Errorf("no warning logged for the unroutable due message:\n%s", l)
	}

	// An operator binds a queue and replays.
	if _, err := ch.QueueDeclare("created", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind("created", "order.created", "shop", false, nil); err != nil {
		t.Fatal(err)
	}
	r := cli(t, url, "", "dlq", "replay", levels.ScheduleUnroutableQueue)
	if r.code != 0 || !strings.Contains(r.stdout, `exchange "shop", routing key "order.created"`) {
		t.Fatalf("replay: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	rabbittest.Eventually(t, 10*time.Second, "the replayed message in its queue", func() bool { return depth(t, ch, "created") == 1 })
	got, ok, err := ch.Get("created", true)
	if err != nil || !ok || got.MessageId != "sched-1" || got.Headers["tenant"] != "acme" {
		t.Fatalf("replayed message: %q %v %v %v", got.MessageId, got.Headers, ok, err)
	}
	if n := depth(t, ch, levels.ScheduleUnroutableQueue); n != 0 {
		t.Fatalf("%d left in %s", n, levels.ScheduleUnroutableQueue)
	}
	if n := depth(t, ch, "created"); n != 0 {
		t.Fatalf("%d more in the queue: the message arrived more than once", n)
	}
}
