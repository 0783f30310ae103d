package main

import (
	"strings"
	"testing"
	"time"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/middleware"
	kit "github.com/warrenmq/warren/middleware/middlewaretest"
	"github.com/warrenmq/warren/router/routertest"
)

// TestJobsRouteStack runs the worker's production stack on each kind of
// job, without a broker and without waiting: the answer is what the route
// would do with the delivery and what it would publish.
func TestJobsRouteStack(t *testing.T) {
	const q = "jobs"
	tests := []struct {
		name      string
		job       string
		round     int
		disp      ack.Disposition
		calls     int
		published string
		delay     time.Duration // the retry's delay, when published is the work queue
	}{
		{name: "a good job is acked", job: "job-1", disp: ack.Ack, calls: 1},
		{name: "job 3, first delivery: two attempts, then back to its queue in 1s", job: "job-3", disp: ack.Ack, calls: 2, published: q, delay: delayLevels[0]},
		{name: "job 3 back from the first delay: again in 2s", job: "job-3", round: 1, disp: ack.Ack, calls: 2, published: q, delay: delayLevels[1]},
		{name: "job 3 after every delay: a copy to the dead-letter queue", job: "job-3", round: 2, disp: ack.Ack, calls: 2, published: q + ".dlq"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var dead []middleware.DeadLetterEvent
			j := newJobs()
			res, err := routertest.Run(jobsRoute(q, j, func(e middleware.DeadLetterEvent) { dead = append(dead, e) }),
				kit.NewMessage("work", kit.WithUUID(tc.job), kit.WithQueue(q), kit.WithRetryRound(tc.round)))
			if err != nil {
				t.Fatal(err)
			}
			if res.Disposition != tc.disp || res.Calls != tc.calls {
				t.Fatalf("disposition %v after %d calls (%v), want %v after %d", res.Disposition, res.Calls, res.Err, tc.disp, tc.calls)
			}
			if tc.published == "" {
				if len(res.Published) != 0 || j.done() != 1 {
					t.Fatalf("published %v, finished %d", res.Published, j.done())
				}
				return
			}
			if len(res.Published) != 1 || res.Published[0].Topic != tc.published {
				t.Fatalf("published %v, want one copy to %s", res.Published, tc.published)
			}
			if tc.delay > 0 {
				if got := res.Published[0].Msg.Metadata.Get("_watermill_delayed_for"); got != tc.delay.String() {
					t.Fatalf("retry scheduled in %q, want %v", got, tc.delay)
				}
			}
			if len(res.Waits) != 1 {
				t.Fatalf("waits %v, want the one between the two in-process attempts (recorded, not slept)", res.Waits)
			}
			if tc.published == q+".dlq" && (len(dead) != 1 || !strings.Contains(res.Published[0].Msg.Metadata.Get(middleware.HeaderDLError), "job 3 is broken")) {
				t.Fatalf("dead letter %v with headers %v", dead, res.Published[0].Msg.Metadata)
			}
		})
	}
}
