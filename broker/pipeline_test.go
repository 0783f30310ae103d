package broker_test

import (
	"errors"
	"fmt"
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
