// Worker: a router with in-process retry, delay-queue retry tiers and a
// dead-letter queue. Job 3 always fails and ends in the dead-letter queue
// with diagnostic headers; the others succeed. SIGTERM drains it: handlers
// in flight finish before it exits.
package main

import (
	"fmt"
	"log"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/examples"
	"github.com/warrenmq/warren/middleware"
	"github.com/warrenmq/warren/router"
)

func main() {
	ctx, cancel := examples.Context(time.Minute)
	defer cancel()
	c, err := conn.New(examples.URL(), conn.Config{})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Open(ctx); err != nil {
		log.Fatal(err)
	}
	r, err := router.New(c, router.Config{Output: warren.PublisherConfig{Mapping: warren.ExistingQueues{}}})
	if err != nil {
		log.Fatal(err)
	}
	const q = "example.worker.jobs"
	j := newJobs()
	deadLettered := make(chan middleware.DeadLetterEvent, 1)
	err = r.AddRoute(jobsRoute(q, j, func(e middleware.DeadLetterEvent) { deadLettered <- e }))
	if err != nil {
		log.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- r.Run(ctx) }()
	if err := r.WaitRunning(ctx); err != nil {
		log.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		if err := r.Publisher().Publish(q, message.NewMessage("job-"+strconv.Itoa(i), []byte("work"))); err != nil {
			log.Fatal(err)
		}
	}
	select {
	case e := <-deadLettered:
		fmt.Printf("dead-lettered %s after %d attempts: %v\n", e.Msg.UUID, e.Attempts, e.Err)
	case <-ctx.Done():
		log.Fatal("job-3 never reached the dead-letter queue")
	}
	fmt.Printf("finished %d jobs\n", j.done())
	ops := r.Ops()
	info, _ := ops.Inspect(ctx, q+".dlq")
	fmt.Printf("dead-letter queue %s.dlq holds %d message(s)\n", q, info.Messages)
	for _, name := range []string{q + ".dlq", q} {
		_, _ = ops.DeleteQueue(ctx, name, broker.DeleteOptions{})
	}
	if err := r.Close(ctx); err != nil {
		log.Fatal(err)
	}
	if err := <-runErr; err != nil {
		log.Fatal(err)
	}
	_ = c.Close(ctx)
}
