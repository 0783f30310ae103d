package middleware_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/middleware"
	kit "github.com/warrenmq/warren/middleware/middlewaretest"
)

// Unit-testing a handler with the whole stack and no broker: the test kit
// records the delayed retry and the disposition the Subscriber would apply.
func Example_testKit() {
	retries := &kit.Publisher{}
	delayed, _ := middleware.DelayedRetry(middleware.DelayedRetryConfig{Publisher: retries, Levels: []time.Duration{time.Second}})
	deadLetter, _ := middleware.DeadLetter(middleware.DeadLetterConfig{Publisher: retries})
	stack := []message.HandlerMiddleware{
		kit.Must(middleware.Ack(middleware.AckConfig{})), deadLetter, delayed,
		kit.Must(middleware.Retry(middleware.RetryConfig{MaxAttempts: 2, Sleep: (&kit.Sleeper{}).Sleep})),
	}
	handler := func(m *message.Message) error {
		if string(m.Payload) == "" {
			return ack.Permanent(errors.New("empty"))
		}
		return errors.New("payment service down")
	}
	h := func(m *message.Message) ([]*message.Message, error) { return nil, handler(m) }

	r := kit.Run(kit.NewMessage("order"), h, stack...)
	scheduled := retries.Published()[0]
	fmt.Println("failing order:", r.Disposition, "scheduled back to", scheduled.Topic, "in", scheduled.Msg.Metadata.Get("_watermill_delayed_for"))

	r = kit.Run(kit.NewMessage(""), h, stack...)
	dead := retries.Published()[1]
	fmt.Println("empty order:", r.Disposition, "dead-lettered to", dead.Topic, "because", dead.Msg.Metadata.Get(middleware.HeaderDLError))
	// Output:
	// failing order: ack scheduled back to work in 1s
	// empty order: ack dead-lettered to work.dlq because empty
}
