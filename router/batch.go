package router

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/internal/instrument"
	"github.com/warrenmq/warren/internal/valuesonly"
	"github.com/warrenmq/warren/middleware"
	"github.com/warrenmq/warren/telemetry"
)

// BatchHandler handles several messages in one call. Its error is each
// message's outcome: nil acks them all; a *BatchError gives each its own
// (nil, a retryable error, ack.Permanent, ack.AsRequeue, as a Handler's);
// any other error is the outcome of every message of the batch.
type BatchHandler func(ctx context.Context, msgs []*message.Message) error

// BatchError is the outcome of each message of a batch: Errs[i] is
// msgs[i]'s (nil: handled). Its length must be the batch's; a BatchError of
// another length is the outcome of every message.
type BatchError struct {
	Errs []error
}

func (e *BatchError) Error() string {
	failed := 0
	for _, err := range e.Errs {
		if err != nil {
			failed++
		}
	}
	return fmt.Sprintf("router: %d of %d messages of the batch failed", failed, len(e.Errs))
}

// Unwrap gives the failures.
func (e *BatchError) Unwrap() []error {
	return slices.DeleteFunc(slices.Clone(e.Errs), func(err error) bool { return err == nil })
}

// BatchSettings make a route's handler a batch handler: up to Size
// messages, or those that arrived within Wait of the first, in one call.
// Each message keeps everything a single message has: its own attempts,
// in-process retries (a retried message joins a later batch), delayed
// retries, dead letter, process span and settlement on the channel it
// came on (a batch whose channel died is never acked on a new one: the
// broker delivers it again).
type BatchSettings struct {
	// Handler handles a batch. Set it instead of Route.Handler.
	Handler BatchHandler
	// Size is the most messages of one call. Default: 100. The route's
	// MaxInFlight and Prefetch are at least Size (each message waits in the
	// process for its batch).
	Size int
	// Wait is how long a batch waits for more after its first message.
	// Default: 50ms.
	Wait time.Duration
}

// batcher gathers messages that reach the end of their stack into batches
// and runs the route's BatchHandler on each.
type batcher struct {
	cfg   BatchSettings
	queue string
	tel   *telemetry.Telemetry

	mu      sync.Mutex
	pending []*batchItem
	timer   *time.Timer
}

type batchItem struct {
	msg  *message.Message
	done chan error
	// taken is set (under the batcher's mu) once the item is in a batch
	// that runs: a message whose context ends after that waits for it.
	taken bool
}

func newBatcher(cfg BatchSettings, queue string, tel *telemetry.Telemetry) *batcher {
	return &batcher{cfg: cfg, queue: queue, tel: tel}
}

// handle is the innermost handler of each message of a batch route: it
// joins the pending batch and returns the message's outcome once the batch
// ran.
func (b *batcher) handle(msg *message.Message) ([]*message.Message, error) {
	it := &batchItem{msg: msg, done: make(chan error, 1)}
	b.mu.Lock()
	b.pending = append(b.pending, it)
	var full []*batchItem
	switch {
	case len(b.pending) >= b.cfg.Size:
		full = b.takeLocked()
	case len(b.pending) == 1:
		b.timer = time.AfterFunc(b.cfg.Wait, b.flush)
	}
	b.mu.Unlock()
	if full != nil {
		b.run(full)
	}
	select {
	case err := <-it.done:
		return nil, err
	case <-msg.Context().Done():
	}
	b.mu.Lock()
	if !it.taken {
		b.pending = slices.DeleteFunc(b.pending, func(x *batchItem) bool { return x == it })
		b.mu.Unlock()
		return nil, ack.AsRequeue(fmt.Errorf("router: the message's context ended before its batch ran: %w", msg.Context().Err()))
	}
	b.mu.Unlock()
	return nil, <-it.done // in a batch that runs: its outcome is coming
}

// flush runs what is pending when Wait has passed.
func (b *batcher) flush() {
	b.mu.Lock()
	batch := b.takeLocked()
	b.mu.Unlock()
	if len(batch) > 0 {
		b.run(batch)
	}
}

// takeLocked takes up to Size pending items (b.mu held); what is left
// waits for its own timer.
func (b *batcher) takeLocked() []*batchItem {
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	n := min(len(b.pending), b.cfg.Size)
	batch := slices.Clone(b.pending[:n])
	b.pending = slices.Delete(b.pending, 0, n)
	for _, it := range batch {
		it.taken = true
	}
	if len(b.pending) > 0 {
		b.timer = time.AfterFunc(b.cfg.Wait, b.flush)
	}
	return batch
}

// run calls the handler on batch and gives each message its outcome.
func (b *batcher) run(batch []*batchItem) {
	msgs := make([]*message.Message, len(batch))
	md := make([]map[string]string, len(batch))
	for i, it := range batch {
		msgs[i], md[i] = it.msg, it.msg.Metadata
	}
	ctx, cancel := b.context(msgs)
	defer cancel()
	ctx, end := instrument.Of(b.tel).StartBatchProcess(ctx, b.queue, md)
	err := b.call(ctx, msgs)
	end(err)
	var be *BatchError
	if errors.As(err, &be) && len(be.Errs) == len(batch) {
		for i, it := range batch {
			it.done <- be.Errs[i]
		}
		return
	}
	for _, it := range batch {
		it.done <- err
	}
}

// call runs the handler, a panic becoming the permanent failure of every
// message.
func (b *batcher) call(ctx context.Context, msgs []*message.Message) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = ack.Permanent(&middleware.PanicError{Value: r, Stack: string(debug.Stack())})
		}
	}()
	return b.cfg.Handler(ctx, msgs)
}

// context is the batch's: it keeps the first message's values and ends
// when any message's context ends (its deadline, or the shutdown's
// deadline that abandons the messages in flight).
func (b *batcher) context(msgs []*message.Message) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(valuesonly.From(msgs[0].Context()))
	stops := make([]func() bool, 0, len(msgs))
	for _, m := range msgs {
		stops = append(stops, context.AfterFunc(m.Context(), cancel))
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
}
