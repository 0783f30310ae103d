package router

import (
	"context"
	"sync"
	"time"

	"github.com/warrenmq/warren/internal/instrument"
)

// queueMetrics reads every route's queue depth and consumer count by a
// passive declaration every interval and reports them as
// warren.queue.messages and warren.queue.consumers: a signal to scale on
// (a KEDA ScaledObject, a HorizontalPodAutoscaler on an external metric)
// that needs no management plugin. It stops with stop.
type queueMetrics struct {
	mu     sync.Mutex
	depths map[string]instrument.QueueDepth
	stop   func()
	done   chan struct{}
}

// startQueueMetrics starts the readings of routes' queues, at once and then
// every r.cfg.QueueMetricsInterval, until Close.
func (r *Router) startQueueMetrics(routes []*activeRoute) error {
	if r.cfg.QueueMetricsInterval <= 0 {
		return nil
	}
	qm := &queueMetrics{depths: map[string]instrument.QueueDepth{}, done: make(chan struct{})}
	unregister, err := instrument.Of(r.cfg.Telemetry).ObserveQueues(qm.read)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	qm.stop = func() {
		cancel()
		<-qm.done
		unregister()
	}
	r.mu.Lock()
	if r.closed { // Close came first: it would not stop these
		r.mu.Unlock()
		cancel()
		unregister()
		return nil
	}
	r.queueMetrics = qm
	r.mu.Unlock()
	go func() {
		defer close(qm.done)
		t := time.NewTicker(r.cfg.QueueMetricsInterval)
		defer t.Stop()
		for {
			for _, rt := range routes {
				info, err := r.ops.Inspect(ctx, rt.Queue.Name)
				if err != nil {
					continue // not connected now, say: the last reading stands
				}
				qm.mu.Lock()
				qm.depths[rt.Queue.Name] = instrument.QueueDepth{Queue: rt.Queue.Name, Messages: int64(info.Messages), Consumers: int64(info.Consumers)}
				qm.mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return nil
}

func (qm *queueMetrics) read() []instrument.QueueDepth {
	qm.mu.Lock()
	defer qm.mu.Unlock()
	out := make([]instrument.QueueDepth, 0, len(qm.depths))
	for _, d := range qm.depths {
		out = append(out, d)
	}
	return out
}
