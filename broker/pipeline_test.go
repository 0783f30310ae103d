package broker_test

import (
	"errors"
	"fmt"
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

// TestRefusedPipelinedDeclarationKeepsTheConnection: a batch whose first
// declarations the broker refuses (queues another service holds
// exclusively, 405) while the rest are still being sent fails with the
// refusal, names the queue, and costs nothing else: the connection, and
// the consumer on it, stay. The broker used to close the whole connection
// now and then (504 "expected 'channel.open'"; PITFALLS 69).
func TestRefusedPipelinedDeclarationKeepsTheConnection(t *testing.T) {
	b := rabbittest.Shared(t)
	holder, err := b.Dial().Channel()
	if err != nil {
		t.Fatal(err)
	}
	c, ops := setup(t, b.URL, broker.OpsConfig{})
	var mu sync.Mutex
	var changes []conn.StateChange
	c.OnStateChange(func(ch conn.StateChange) {
		mu.Lock()
		changes = append(changes, ch)
		mu.Unlock()
	})
	gen := c.Generation()
	ctx := ctxT(t, 2*time.Minute)
	// Each of the pipeline's four lanes starts with a refused queue.
	top := topology.Topology{}
	for i := range 4 {
		q := fmt.Sprintf("%sheld.%d", b.Prefix, i)
		if _, err := holder.QueueDeclare(q, false, true, true, false, nil); err != nil {
			t.Fatal(err)
		}
		top.Queues = append(top.Queues, topology.QueueSpec{Name: q, Exclusive: true, AutoDelete: true})
	}
	for i := range 2000 {
		top.Queues = append(top.Queues, topology.QueueSpec{Name: b.Name(fmt.Sprintf("free.%d", i)), AutoDelete: true})
	}
	const rounds = 5
	for round := range rounds {
		err := ops.Apply(ctx, top)
		if !errors.Is(err, conn.ErrResourceLocked) || !strings.Contains(err.Error(), top.Queues[0].Name) {
			t.Fatalf("round %d: Apply: %v, want the 405 naming %s", round+1, err, top.Queues[0].Name)
		}
		if now := c.Generation(); now != gen {
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("round %d of %d: the connection went (generation %d, then %d): %v", round+1, rounds, gen, now, changes)
		}
	}
}

// debugOps opens a connection to url whose calls are bounded by bound and
// whose Debug lines are kept, and Ops on it, both closed with the test.
func debugOps(t *testing.T, url string, bound time.Duration) (*broker.Ops, func() string) {
	t.Helper()
	log, logged := textLogAt(slog.LevelDebug)
	_, ops := setupConn(t, url, conn.Config{OperationTimeout: bound, Logger: log}, broker.OpsConfig{}, nil)
	return ops, logged
}

// laneStopped is the Debug line of a pipelined lane that did not get
// through all its declarations.
const laneStopped = "a pipelined lane stopped"

// TestRefusalInALanesLaterChunkKeepsItsEarlierChunks: a lane waits at a
// barrier after each chunk of its declarations, and what a passed barrier
// vouched for stays done when a later chunk is refused. Of a batch of 256
// queues over four lanes in chunks of 16, lane 0's 41st declaration is
// refused (406): its first two chunks (32 queues) are done, its other 32
// go one at a time (where the 406 is found and named), and no other lane
// stops.
func TestRefusalInALanesLaterChunkKeepsItsEarlierChunks(t *testing.T) {
	b := rabbittest.Shared(t)
	broker.SetLaneChunk(t, 16)
	ops, logged := debugOps(t, b.URL, 15*time.Second)
	ctx := ctxT(t, time.Minute)
	top := topology.Topology{}
	for i := range 256 {
		// Exclusive: gone with the connection, nothing to delete one by one.
		top.Queues = append(top.Queues, topology.QueueSpec{Name: fmt.Sprintf("%schunked.%d", b.Prefix, i), Exclusive: true})
	}
	// Lane 0 takes steps 0, 4, 8, ...: its 41st is step 160. The queue
	// exists durable, and the batch declares it transient.
	refused := b.Name(fmt.Sprintf("chunked.%d", 160))
	top.Queues[160] = topology.QueueSpec{Name: refused}
	raw, err := b.Dial().Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.QueueDeclare(refused, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	err = ops.Apply(ctx, top)
	if !errors.Is(err, conn.ErrPreconditionFailed) || !strings.Contains(err.Error(), refused) {
		t.Fatalf("Apply: %v, want the 406 naming %s", err, refused)
	}
	lines := strings.Count(logged(), laneStopped)
	if lines != 1 || !strings.Contains(logged(), "done=32 undone=32") {
		t.Fatalf("want lane 0 alone stopped after its first two chunks (done=32 undone=32); the log:\n%s", logged())
	}
}

// TestLaneLongerThanOneBoundStaysPipelined: each chunk of a lane is
// bounded on its own, so a batch that takes the broker longer than
// OperationTimeout to read is not cut off at the bound (which sent it all
// again, one declaration and one round trip at a time). The broker is
// behind a proxy that forwards at most 32 KiB each 100 ms: 2,000
// declarations of 250-byte names (over 500 KB) take it more than 1.5 s to
// pass on, past the bound of 1 s, while a round of the lanes' chunks (64
// declarations each, 4 lanes: 2 reads) comes back within a few hundred ms.
// No lane stops.
func TestLaneLongerThanOneBoundStaysPipelined(t *testing.T) {
	b := rabbittest.Shared(t)
	broker.SetLaneChunk(t, 64)
	p := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	const bound = time.Second
	ops, logged := debugOps(t, p.URL(b.Vhost), bound)
	top := topology.Topology{}
	for i := range 2000 {
		name := fmt.Sprintf("%slong.%04d.", b.Prefix, i)
		name += strings.Repeat("x", 250-len(name))
		// Exclusive: gone with the connection, nothing to delete one by one.
		top.Queues = append(top.Queues, topology.QueueSpec{Name: name, Exclusive: true})
	}
	if err := p.Slow(100); err != nil {
		t.Fatal(err)
	}
	if err := ops.Apply(ctxT(t, 2*time.Minute), top); err != nil {
		t.Fatal(err)
	}
	p.Heal()
	if n := strings.Count(logged(), laneStopped); n != 0 {
		t.Fatalf("%d lanes stopped:\n%s", n, logged())
	}
}
