// Scheduled: messages delivered later, with Watermill's delay metadata and
// no broker plugin, narrated. warren's Publisher routes a message that is
// due later through binary delay levels on the broker: it arrives no
// earlier than due and at most a second after, survives a broker restart,
// and needs no process to stay up meanwhile.
package main

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/ThreeDotsLabs/watermill/components/delay"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/examples"
)

func say(format string, args ...any) { fmt.Printf("==> "+format+"\n", args...) }

const topic = "example.scheduled.reminders"

func main() {
	ctx, cancel := examples.Context(time.Minute)
	defer cancel()
	if err := run(ctx); err != nil {
		log.Fatal(err)
	}
	say("done")
}

func run(ctx context.Context) error {
	c, err := conn.New(examples.URL(), conn.Config{})
	if err != nil {
		return err
	}
	if err := c.Open(ctx); err != nil {
		return fmt.Errorf("is RabbitMQ running? (make broker): %w", err)
	}
	defer c.Close(context.WithoutCancel(ctx))
	mapping := warren.QueuePerTopic{}
	sub, err := warren.NewSubscriber(c, warren.SubscriberConfig{Mapping: mapping})
	if err != nil {
		return err
	}
	defer sub.Close()
	subCtx, stop := context.WithCancel(ctx)
	defer stop()
	out, err := sub.Subscribe(subCtx, topic)
	if err != nil {
		return err
	}
	pub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: mapping})
	if err != nil {
		return err
	}
	defer pub.Close()

	say("three reminders, published now, due in 4s, 1s and 2s")
	due := map[string]time.Time{}
	start := time.Now().Truncate(time.Second).Add(time.Second)
	for _, r := range []struct {
		id string
		in time.Duration
	}{{"water the plants", 4 * time.Second}, {"stand up", time.Second}, {"drink water", 2 * time.Second}} {
		due[r.id] = start.Add(r.in)
		m := message.NewMessage(r.id, []byte(r.id))
		delay.Message(m, delay.Until(due[r.id])) // Watermill's components/delay
		if err := pub.Publish(topic, m); err != nil {
			return err
		}
	}
	say("they arrive in due order, each no earlier than due and within a second of it")
	for range due {
		select {
		case m := <-out:
			late := time.Since(due[m.UUID])
			fmt.Printf("   %-17s due %s, arrived %+.2fs\n", m.UUID, due[m.UUID].Format("15:04:05"), late.Seconds())
			if late < 0 || late > 1500*time.Millisecond {
				return fmt.Errorf("%s arrived %v after its due time", m.UUID, late)
			}
			m.Ack()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	stop()
	ops, err := broker.NewOps(c, broker.OpsConfig{})
	if err != nil {
		return err
	}
	_, _ = ops.DeleteQueue(ctx, topic, broker.DeleteOptions{})
	say("the delay levels (warren.delay.*) stay in the vhost, shared by every service")
	return nil
}
