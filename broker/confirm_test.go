package broker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/connx"
	"github.com/warrenmq/warren/internal/rabbittest"
)

// Mandatory publishes find their returns without a header of warren's on
// the messages that reached a queue: a consumer that is not warren sees the
// message as it was published. Unroutable and routable messages are
// interleaved, some with the same message id and routing key (those, and
// only those, are told apart by a header), and each outcome must be the
// message's own.
func TestMandatoryReturnsFindTheirPublishWithoutHeaders(t *testing.T) {
	b := rabbittest.Shared(t)
	c, _ := setup(t, b.URL, broker.OpsConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q := b.Name("routed")
	raw := b.Dial()
	rch, err := raw.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rch.QueueDeclare(q, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	cc, err := broker.NewConfirmChannel(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()

	type sent struct {
		key, id string
		conf    *broker.Confirmation
	}
	var all []sent
	publish := func(key, id string) {
		conf, err := cc.Publish(ctx, "", key, true, amqp.Publishing{MessageId: id, Body: []byte(id), Headers: amqp.Table{"mine": "yes"}})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, sent{key, id, conf})
	}
	const n = 200
	for i := range n {
		switch i % 4 {
		case 0, 1:
			publish(q, fmt.Sprintf("routed-%d", i))
		case 2:
			publish(b.Prefix+"nowhere", fmt.Sprintf("lost-%d", i))
		case 3:
			// The same id and key, many times in flight at once.
			publish(b.Prefix+"nowhere", "same")
			publish(q, "same-routed")
		}
	}
	routed := 0
	for _, s := range all {
		select {
		case <-s.conf.Done():
		case <-ctx.Done():
			t.Fatalf("no outcome for %s", s.id)
		}
		want := broker.OutcomeReturned
		if s.key == q {
			want = broker.OutcomeAcked
			routed++
		}
		if got := s.conf.Outcome(); got != want {
			t.Fatalf("message %s to %q: outcome %v, want %v", s.id, s.key, got, want)
		}
		if want == broker.OutcomeReturned && s.conf.Return().MessageId != s.id {
			t.Fatalf("message %s got the return of %s", s.id, s.conf.Return().MessageId)
		}
	}
	deliveries, err := rch.Consume(q, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	tagged := 0
	for range routed {
		select {
		case d := <-deliveries:
			if d.Headers["mine"] != "yes" {
				t.Fatalf("user header lost: %v", d.Headers)
			}
			if v, ok := d.Headers["warren-publish-seq"]; ok {
				if d.MessageId != "same-routed" {
					t.Fatalf("message %s carries warren-publish-seq (%v) though no other publish shared its key", d.MessageId, v)
				}
				if _, isString := v.(string); !isString {
					t.Fatalf("warren-publish-seq is a %T; want a string any consumer decodes", v)
				}
				tagged++
			}
		case <-ctx.Done():
			t.Fatal("routed messages did not all arrive")
		}
	}
	t.Logf("%d routed messages, %d of them tagged (duplicates in flight)", routed, tagged)
}

// TestNewConfirmChannelSurvivesDrops: connections dropped while confirm
// channels are being opened never surface as errors; every channel returned
// is in confirm mode on a live connection.
func TestNewConfirmChannelSurvivesDrops(t *testing.T) {
	b := rabbittest.Shared(t)
	p := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	c, _ := setup(t, p.URL(b.Vhost), broker.OpsConfig{})
	const rounds = 30
	for i := 0; i < rounds; i++ {
		errs := make(chan error, 4)
		for g := 0; g < 4; g++ {
			go func() {
				ch, err := broker.NewConfirmChannel(ctxT(t, 20*time.Second), c)
				if err != nil {
					errs <- err
					return
				}
				defer ch.Close()
				// A channel not in confirm mode fails every Publish.
				_, err = ch.Publish(ctxT(t, 5*time.Second), "", "", false, amqp.Publishing{})
				if err != nil && !connx.LostWith(ch.Channel(), err) {
					errs <- err
					return
				}
				errs <- nil
			}()
		}
		if i%2 == 0 {
			if err := p.Drop(); err != nil { // a drop amid channel.open and confirm.select
				t.Fatal(err)
			}
		}
		for g := 0; g < 4; g++ {
			if err := <-errs; err != nil {
				t.Fatalf("round %d: %v", i, err)
			}
		}
	}
}
