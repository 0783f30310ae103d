package conn_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/connx"
	"github.com/warrenmq/warren/internal/rabbittest"
)

// TestNoWaitSendsRacingAChannelCloseKeepTheConnection: four channels send
// NoWait declarations of queues another connection holds exclusively, as
// the pipelined declarations of a restore do when the broker has not yet
// let go of the last connection's exclusive queues. The broker refuses the
// first (405) and closes each channel while its sender is still writing.
// amqp091-go lets a frame out after it has answered the close, and the
// broker closed the whole connection for it (504 "expected
// 'channel.open'"): with raw amqp091-go, 24 of 200 such rounds lost their
// connection. Through warren none may (PITFALLS 69).
func TestNoWaitSendsRacingAChannelCloseKeepTheConnection(t *testing.T) {
	b := rabbittest.Shared(t)
	holder, err := b.Dial().Channel()
	if err != nil {
		t.Fatal(err)
	}
	held := make([]string, 4)
	for i := range held {
		held[i] = fmt.Sprintf("%sheld.%d", b.Prefix, i)
		if _, err := holder.QueueDeclare(held[i], false, true, true, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	// The guard sits over the coalesced writes and over direct ones.
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("DirectWrites=%v", direct), func(t *testing.T) {
			racingRounds(t, b.URL, held, conn.Config{DirectWrites: direct})
		})
	}
}

// racingRounds runs the rounds of four racing channels on a connection of
// cfg and fails if it is ever lost.
func racingRounds(t *testing.T, url string, held []string, cfg conn.Config) {
	c := open(t, url, cfg)
	rec := record(c)
	// The open's own change may reach the recorder after this; a loss is
	// a change away from connected.
	lost := func() []conn.StateChange {
		var out []conn.StateChange
		for _, ch := range rec.all() {
			if ch.From == conn.StateConnected {
				out = append(out, ch)
			}
		}
		return out
	}
	ctx := ctxT(t, 2*time.Minute)
	const rounds, sends = 100, 2000
	var cutShort atomic.Int32 // lanes the broker closed before their last send
	for round := range rounds {
		var wg sync.WaitGroup
		for lane := range 4 {
			ch, err := c.NewChannel(ctx)
			if err != nil {
				t.Fatalf("round %d: channel: %v; connection changes: %v", round, err, rec.all())
			}
			wg.Go(func() {
				sent := 0
				_ = connx.Call(ch, ctx, func(ac *amqp.Channel) error {
					for i := range sends {
						if _, err := ac.QueueDeclare(held[(lane+i)%4], false, true, true, true, nil); err != nil {
							return err
						}
						sent++
					}
					return nil
				})
				if sent < sends {
					cutShort.Add(1)
				}
			})
		}
		wg.Wait()
		if changes := lost(); len(changes) > 0 {
			t.Fatalf("round %d of %d: the connection went: %v", round+1, rounds, rec.all())
		}
	}
	// The connection still works, and was never lost.
	ch, err := c.NewChannel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(ctx, "", false, true, true, false, nil); err != nil {
		t.Fatal(err)
	}
	if changes := lost(); len(changes) > 0 {
		t.Fatalf("the connection went: %v", rec.all())
	}
	if cutShort.Load() == 0 {
		t.Fatal("no lane was closed while sending: the race was never run")
	}
	t.Logf("%d rounds, %d of %d lanes closed by the broker while still sending; the connection stayed", rounds, cutShort.Load(), 4*rounds)
}
