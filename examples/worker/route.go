package main

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/middleware"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/topology"
)

// jobs is the worker's state: which jobs finished.
type jobs struct {
	mu       sync.Mutex
	finished map[string]bool
}

func newJobs() *jobs { return &jobs{finished: map[string]bool{}} }

// handle does one job. Job 3 is broken and always fails.
func (j *jobs) handle(m *message.Message) error {
	if m.UUID == "job-3" {
		fmt.Printf("job-3 fails (attempt %d)\n", ack.Attempt(m))
		return errors.New("job 3 is broken")
	}
	j.mu.Lock()
	j.finished[m.UUID] = true
	j.mu.Unlock()
	return nil
}

func (j *jobs) done() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.finished)
}

// delayLevels are the worker's delay-queue retry tiers.
var delayLevels = []time.Duration{time.Second, 2 * time.Second}

// jobsRoute is the worker's one route: two in-process attempts, then the
// delay levels, then a copy to the dead-letter queue with diagnostics. The
// unit test runs exactly this route's stack (router/routertest); the
// integration test runs it on a real broker (warrentest).
func jobsRoute(queue string, j *jobs, onDead func(middleware.DeadLetterEvent)) router.Route {
	return router.Route{
		Name:         "jobs",
		Queue:        topology.QueueSpec{Name: queue, Durable: true},
		MaxInFlight:  4,
		Retry:        router.RetrySettings{RetryConfig: middleware.RetryConfig{MaxAttempts: 2, Backoff: retry.Backoff{InitialInterval: 20 * time.Millisecond}}},
		DelayedRetry: router.DelayedRetrySettings{Levels: delayLevels},
		DeadLetter:   router.DeadLetterSettings{Mode: middleware.PublishToDLQ, OnDeadLetter: onDead},
		Handler:      j.handle,
	}
}
