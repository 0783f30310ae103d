// RPC: request/reply over RabbitMQ's direct reply-to, narrated. A router
// route answers with Respond; a Requester asks. Several requests are in
// flight at once; a failing request comes back as a typed error; a request
// nobody serves fails at once; nothing is left on the broker.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/examples"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/topology"
)

// notSold is an error that names its kind (ack.ErrorTyper): the requester
// sees that name as RemoteError.Type.
type notSold struct{ item string }

func (e notSold) Error() string     { return "we do not sell " + e.item + "s" }
func (e notSold) ErrorType() string { return "not_sold" }

func say(format string, args ...any) { fmt.Printf("==> "+format+"\n", args...) }

const queue = "example.rpc.quote"

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

	say("a router route answers quote requests with Respond")
	r, err := router.New(c, router.Config{})
	if err != nil {
		return err
	}
	if err := r.AddRoute(router.Route{
		Name: "quotes", Queue: topology.QueueSpec{Name: queue}, MaxInFlight: 8,
		Respond: func(m *message.Message) (*message.Message, error) {
			item := string(m.Payload)
			if item == "unicorn" {
				return nil, ack.Permanent(notSold{item})
			}
			price := 100 * len(item)
			return message.NewMessage(m.UUID, []byte(strconv.Itoa(price))), nil
		},
	}); err != nil {
		return err
	}
	runErr := make(chan error, 1)
	go func() { runErr <- r.Run(ctx) }()
	if err := r.WaitRunning(ctx); err != nil {
		return err
	}
	defer func() {
		ops := r.Ops()
		_, _ = ops.DeleteQueue(context.WithoutCancel(ctx), queue, broker.DeleteOptions{})
		_, _ = ops.DeleteQueue(context.WithoutCancel(ctx), queue+".dlq", broker.DeleteOptions{})
		_ = r.Close(context.WithoutCancel(ctx))
		<-runErr
	}()

	rq, err := warren.NewRequester(c, warren.RequesterConfig{})
	if err != nil {
		return err
	}
	defer rq.Close()

	say("four requests in flight at once, one reply channel, replies matched by correlation id")
	items := []string{"tea", "coffee", "biscuits", "jam"}
	answers := make([]string, len(items))
	var wg sync.WaitGroup
	var firstErr error
	var mu sync.Mutex
	for i, item := range items {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reply, err := rq.Request(ctx, queue, message.NewMessage("q-"+item, []byte(item)))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				firstErr = errors.Join(firstErr, err)
				return
			}
			answers[i] = fmt.Sprintf("%s costs %s", item, reply.Payload)
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	for _, a := range answers {
		fmt.Println("   " + a)
	}

	say("a request the handler refuses comes back as a typed error")
	_, err = rq.Request(ctx, queue, message.NewMessage("q-unicorn", []byte("unicorn")))
	var remote *warren.RemoteError
	if !errors.As(err, &remote) {
		return fmt.Errorf("want a *warren.RemoteError, got %v", err)
	}
	fmt.Printf("   remote error (%s): %s\n", remote.Type, remote.Text)

	say("a request nobody serves fails at once")
	start := time.Now()
	_, err = rq.Request(ctx, "example.rpc.nobody", message.NewMessage("q-x", []byte("x")))
	if !errors.Is(err, broker.ErrUnroutable) {
		return fmt.Errorf("want ErrUnroutable, got %v", err)
	}
	fmt.Printf("   unroutable after %s\n", time.Since(start).Round(10*time.Microsecond))

	say("direct reply-to declared no reply queue: nothing to clean up")
	return nil
}
