package main

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/warrentest"
)

func TestMain(m *testing.M) { warrentest.Main(m) }

// TestWorkerOnARealBroker runs the worker's route on RabbitMQ, in a vhost
// of the test's own: good jobs finish, job 3 goes through every retry to
// the dead-letter queue with its reason.
func TestWorkerOnARealBroker(t *testing.T) {
	b := warrentest.New(t)
	rec := warrentest.NewRecorder()
	j := newJobs()
	r := b.Router(router.Config{Output: warren.PublisherConfig{Mapping: warren.ExistingQueues{}}})
	if err := r.AddRoute(rec.Route(jobsRoute("jobs", j, nil))); err != nil {
		t.Fatal(err)
	}
	warrentest.Start(t, r)
	for i := 1; i <= 5; i++ {
		if err := r.Publisher().Publish("jobs", message.NewMessage("job-"+strconv.Itoa(i), []byte("work"))); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"job-1", "job-2", "job-4", "job-5"} {
		rec.WaitConsumed(t, id, 30*time.Second)
	}
	dead := rec.WaitDeadLettered(t, "job-3", 30*time.Second)
	if !strings.Contains(dead.Err.Error(), "job 3 is broken") {
		t.Fatalf("dead-lettered because %v", dead.Err)
	}
	// Two in-process attempts on each of three deliveries: the first and
	// one from each delay level.
	rec.WaitRetried(t, "job-3", len(delayLevels), 0)
	rec.WaitAttempts(t, "job-3", 2*(1+len(delayLevels)), 0)
	if j.done() != 4 {
		t.Fatalf("finished %d jobs", j.done())
	}
}
