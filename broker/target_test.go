package broker_test

import (
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/topology"
)

// TestRulesOfRabbitMQVersions: what each RabbitMQ version refuses or does
// differently is refused by ValidateFor before it reaches the broker
// (release notes 4.0.1 and 4.3.0; 3.12 and 3.13 for the arguments they
// introduced). This broker is 3.10: the 4.x rules are checked here, as
// validation.
func TestRulesOfRabbitMQVersions(t *testing.T) {
	quorum := topology.QueueArgs{Type: topology.Quorum}
	for _, c := range []struct {
		name   string
		spec   topology.QueueSpec
		target topology.Target
		field  string // "" when valid
	}{
		{"transient non-exclusive on 4.3", topology.QueueSpec{Name: "q"}, topology.RabbitMQ43, "Durable"},
		{"transient non-exclusive on 4.0", topology.QueueSpec{Name: "q"}, topology.RabbitMQ40, ""},
		{"transient exclusive on 4.3", topology.QueueSpec{Name: "q", Exclusive: true}, topology.RabbitMQ43, ""},
		{"server-named on 4.3", topology.QueueSpec{}, topology.RabbitMQ43, ""},
		{"x-queue-mode on 4.3", topology.QueueSpec{Name: "q", Durable: true, Args: topology.QueueArgs{QueueMode: "lazy"}}, topology.RabbitMQ43, "Args.QueueMode"},
		{"x-queue-mode on 3.13", topology.QueueSpec{Name: "q", Durable: true, Args: topology.QueueArgs{QueueMode: "lazy"}}, topology.RabbitMQ313, ""},
		{"x-queue-version 1 on 4.3", topology.QueueSpec{Name: "q", Durable: true, Args: topology.QueueArgs{Extra: map[string]any{"x-queue-version": int64(1)}}}, topology.RabbitMQ43, "Args.Extra"},
		{"x-queue-master-locator on 4.3", topology.QueueSpec{Name: "q", Durable: true, Args: topology.QueueArgs{Extra: map[string]any{"x-queue-master-locator": "min-masters"}}}, topology.RabbitMQ43, "Args.Extra"},
		{"leader locator on a quorum queue", topology.QueueSpec{Name: "q", Durable: true, Args: topology.QueueArgs{Type: topology.Quorum, LeaderLocator: topology.Balanced}}, topology.RabbitMQ43, ""},
		{"leader locator on a classic queue", topology.QueueSpec{Name: "q", Durable: true, Args: topology.QueueArgs{Type: topology.Classic, LeaderLocator: topology.Balanced}}, topology.RabbitMQ43, "Args.LeaderLocator"},
		// An empty type is the vhost's default type (quorum on many 4.x
		// deployments), not classic.
		{"leader locator, the vhost's default type", topology.QueueSpec{Name: "q", Durable: true, Args: topology.QueueArgs{LeaderLocator: topology.Balanced}}, topology.RabbitMQ43, ""},
		{"delivery limit, the vhost's default type", topology.QueueSpec{Name: "q", Durable: true, Args: topology.QueueArgs{DeliveryLimit: 10}}, topology.RabbitMQ43, ""},
		{"delivery limit -1 on 4.0", topology.QueueSpec{Name: "q", Durable: true, Args: topology.QueueArgs{Type: topology.Quorum, DeliveryLimit: -1}}, topology.RabbitMQ40, ""},
		{"delivery limit -1 on 3.13", topology.QueueSpec{Name: "q", Durable: true, Args: topology.QueueArgs{Type: topology.Quorum, DeliveryLimit: -1}}, topology.RabbitMQ313, "Args.DeliveryLimit"},
		{"delivery limit -2", topology.QueueSpec{Name: "q", Durable: true, Args: topology.QueueArgs{Type: topology.Quorum, DeliveryLimit: -2}}, topology.RabbitMQ43, "Args.DeliveryLimit"},
		{"consumer timeout on 3.10", topology.QueueSpec{Name: "q", Durable: true, Args: topology.QueueArgs{ConsumerTimeout: time.Minute}}, topology.RabbitMQ310, "Args.ConsumerTimeout"},
		{"consumer timeout on 3.12", topology.QueueSpec{Name: "q", Durable: true, Args: topology.QueueArgs{ConsumerTimeout: time.Minute}}, topology.RabbitMQ312, ""},
		{"stream filter on 3.10", topology.QueueSpec{Name: "s", Durable: true, Args: topology.QueueArgs{Type: topology.Stream, StreamFilterSizeBytes: 32}}, topology.RabbitMQ310, "Args.StreamFilterSizeBytes"},
		{"stream filter on 3.13", topology.QueueSpec{Name: "s", Durable: true, Args: topology.QueueArgs{Type: topology.Stream, StreamFilterSizeBytes: 32}}, topology.RabbitMQ313, ""},
		{"max age on a classic queue", topology.QueueSpec{Name: "q", Durable: true, Args: topology.QueueArgs{Type: topology.Classic, MaxAge: time.Hour}}, topology.RabbitMQ43, "Args.Type"},
		{"max age in milliseconds", topology.QueueSpec{Name: "s", Durable: true, Args: topology.QueueArgs{Type: topology.Stream, MaxAge: 1500 * time.Millisecond}}, topology.RabbitMQ43, "Args.MaxAge"},
		{"initial group size on a classic queue", topology.QueueSpec{Name: "q", Durable: true, Args: topology.QueueArgs{Type: topology.Classic, QuorumInitialGroupSize: 3}}, topology.RabbitMQ40, "Args.QuorumInitialGroupSize"},
		{"quorum, every rule met", topology.QueueSpec{Name: "q", Durable: true, Args: quorum}, topology.RabbitMQ43, ""},
	} {
		err := c.spec.ValidateFor(c.target)
		var se *topology.SpecError
		switch {
		case c.field == "" && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case c.field != "" && !errors.As(err, &se):
			t.Errorf("%s: accepted (%v), want a SpecError on %s", c.name, err, c.field)
		case c.field != "" && !hasField(err, c.field):
			t.Errorf("%s: %v, want the error on %s", c.name, err, c.field)
		}
	}
	// RabbitMQ never implemented basic.qos prefetch-size.
	if err := (broker.ConsumerSpec{Queue: "q", PrefetchSize: 4096}).Validate(); !hasField(err, "PrefetchSize") {
		t.Errorf("a prefetch size accepted: %v", err)
	}
}

func hasField(err error, field string) bool {
	for _, e := range flatten(err) {
		var se *topology.SpecError
		if errors.As(e, &se) && se.Field == field {
			return true
		}
	}
	return false
}

func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	if err == nil {
		return nil
	}
	return []error{err}
}

// TestQuorumQueueWithoutDeadLetterWarns: a quorum queue whose messages past
// the delivery limit would be dropped is declared, with a warning logged
// once.
func TestQuorumQueueWithoutDeadLetterWarns(t *testing.T) {
	b := rabbittest.Shared(t)
	log, logged := textLog()
	_, ops := setup(t, b.URL, broker.OpsConfig{Logger: log, Target: topology.RabbitMQ310})
	ctx := ctxT(t, 30*time.Second)
	name := b.Name("qq-no-dlx")
	spec := topology.QueueSpec{Name: name, Durable: true, Args: topology.QueueArgs{Type: topology.Quorum, DeliveryLimit: 5}}
	for range 2 {
		if _, err := ops.DeclareQueue(ctx, spec); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(logged(), "has no dead-letter target"); n != 1 {
		t.Fatalf("%d warnings, want 1:\n%s", n, logged())
	}
}

// TestNewArgumentsOnThisBroker: the typed arguments 3.10 knows are declared
// as the broker expects them (a second declaration with the same spec is
// accepted: the broker compares them).
func TestNewArgumentsOnThisBroker(t *testing.T) {
	b := rabbittest.Shared(t)
	_, ops := setup(t, b.URL, broker.OpsConfig{Target: topology.RabbitMQ310})
	ctx := ctxT(t, 30*time.Second)
	specs := []topology.QueueSpec{
		{Name: b.Name("qq-args"), Durable: true, Args: topology.QueueArgs{Type: topology.Quorum, LeaderLocator: topology.ClientLocal,
			QuorumInitialGroupSize: 1, DeliveryLimit: 5, DeadLetterRoutingKey: b.Name("qq-args.dlq")}},
		{Name: b.Name("stream-args"), Durable: true, Args: topology.QueueArgs{Type: topology.Stream, MaxAge: 24 * time.Hour,
			StreamMaxSegmentSizeBytes: 10 << 20}},
	}
	for _, s := range specs {
		if _, err := ops.DeclareQueue(ctx, s); err != nil {
			t.Fatalf("declare %s: %v", s.Name, err)
		}
		ch := rawChannel(t, b.URL)
		if _, err := ch.QueueDeclare(s.Name, true, false, false, false, s.Args.Table()); err != nil {
			t.Fatalf("the broker refuses the same arguments again for %s: %v", s.Name, err)
		}
	}
}

// textLog is a logger that keeps every record at Info and above as text,
// and what it has kept so far.
func textLog() (*slog.Logger, func() string) { return textLogAt(slog.LevelInfo) }

// textLogAt is textLog keeping the records of level and above.
func textLogAt(level slog.Level) (*slog.Logger, func() string) {
	var mu sync.Mutex
	var logged strings.Builder
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logged.Write(p)
	}), &slog.HandlerOptions{Level: level}))
	return log, func() string {
		mu.Lock()
		defer mu.Unlock()
		return logged.String()
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestParseTarget reads versions as users write them and as brokers report
// them.
func TestParseTarget(t *testing.T) {
	for _, c := range []struct {
		in   string
		want topology.Target
		ok   bool
	}{
		{"4.3", topology.RabbitMQ43, true},
		{"3.10.8", topology.RabbitMQ310, true},
		{"4.1.0-rc.1", topology.Target{Major: 4, Minor: 1}, true},
		{"3.13.7+1.g5bc9ea8", topology.RabbitMQ313, true},
		{"", topology.Target{}, false},
		{"4", topology.Target{}, false},
		{"2.8.1", topology.Target{}, false},
		{"four.three", topology.Target{}, false},
		{"4.x", topology.Target{}, false},
	} {
		got, ok := topology.ParseTarget(c.in)
		if got != c.want || ok != c.ok {
			t.Errorf("ParseTarget(%q) = %v, %v; want %v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

// TestTargetIsTheConnectedBroker: with no Target set, specs are checked by
// the rules of the version the broker reports (3.10 here): x-consumer-timeout,
// a 3.12 argument this broker would ignore, is refused before it is sent;
// an explicit Target overrides.
func TestTargetIsTheConnectedBroker(t *testing.T) {
	b := rabbittest.Shared(t)
	c, ops := setup(t, b.URL, broker.OpsConfig{})
	if got, ok := topology.ParseTarget(c.ServerVersion()); !ok || got != topology.RabbitMQ310 {
		t.Fatalf("the broker reported %q; this machine runs 3.10", c.ServerVersion())
	}
	ctx := ctxT(t, 30*time.Second)
	spec := topology.QueueSpec{Name: b.Name("consumer-timeout"), Durable: true, Args: topology.QueueArgs{ConsumerTimeout: time.Minute}}
	_, err := ops.DeclareQueue(ctx, spec)
	var se *topology.SpecError
	if !errors.As(err, &se) || se.Field != "Args.ConsumerTimeout" {
		t.Fatalf("declare with x-consumer-timeout on 3.10: %v, want a SpecError on Args.ConsumerTimeout", err)
	}
	if _, err := ops.Inspect(ctx, spec.Name); !errors.Is(err, conn.ErrNotFound) {
		t.Fatalf("the refused queue: %v, want it never declared (ErrNotFound)", err)
	}
	_, ops312 := setup(t, b.URL, broker.OpsConfig{Target: topology.RabbitMQ312})
	if _, err := ops312.DeclareQueue(ctx, spec); err != nil {
		t.Fatalf("with Target 3.12 set: %v", err)
	}
}
