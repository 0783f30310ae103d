package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/connx"
)

// pipelineWidth is how many channels a pipelined batch spreads over: the
// broker runs each channel in a process of its own, so a few channels let
// it work on a batch in parallel.
const pipelineWidth = 4

// pipelineMin is the smallest batch worth pipelining; below it one call
// after the other is as fast.
const pipelineMin = 4

// step is one declaration of a batch: send sends it on ch, without waiting
// for the broker's reply when noWait is set.
type step struct {
	label string
	send  func(ctx context.Context, ch *conn.Channel, noWait bool) error
}

// errNotPipelined marks steps the pipeline did not send (a batch too
// small, or no channel): the caller runs them one at a time.
var errNotPipelined = errors.New("broker: not pipelined")

// pipeline sends steps without waiting for each reply (NoWait) on up to
// pipelineWidth channels, then waits once per channel. errs[i] is nil when
// step i certainly happened; otherwise it is why its channel failed. A step
// the broker refuses closes its channel, and the broker discards what was
// sent on it afterwards, so every step of a channel whose wait failed is
// left undone: the caller sends those again, or runs them one at a time
// (then a failure fails only its own step, and says which). Nothing inside
// a batch may depend on anything else in it (callers batch one kind at a
// time), since the channels run side by side.
//
// gen is the connection generation the done steps happened on.
func (r *Registry) pipeline(ctx context.Context, steps []step) (errs []error, gen uint64) {
	errs = make([]error, len(steps))
	notSent := func() ([]error, uint64) {
		for i := range errs {
			errs[i] = errNotPipelined
		}
		return errs, 0
	}
	if len(steps) < pipelineMin {
		return notSent()
	}
	lanes := r.lanes(ctx, min(pipelineWidth, (len(steps)+pipelineMin-1)/pipelineMin))
	if len(lanes) == 0 {
		return notSent()
	}
	gen = connx.ChannelGeneration(lanes[0])
	owned := make([][]int, len(lanes))
	for i, s := range steps {
		l := i % len(lanes)
		owned[l] = append(owned[l], i)
		if lanes[l].IsOpen() {
			_ = s.send(ctx, lanes[l], true) // a refusal shows at the barrier
		}
	}
	// One synchronous call per channel: its reply comes after the replies
	// (or the refusal) of everything sent on the channel before it.
	for l, ch := range lanes {
		err := barrier(ctx, ch)
		r.pool.put(ch)
		if err == nil && connx.ChannelGeneration(ch) != gen {
			err = errors.New("broker: connection replaced during the batch")
		}
		for _, i := range owned[l] {
			errs[i] = err
		}
	}
	return errs, gen
}

// lanes takes up to n pool channels, opening the missing ones side by side
// (each open is a round trip).
func (r *Registry) lanes(ctx context.Context, n int) []*conn.Channel {
	got := make([]*conn.Channel, n)
	var wg sync.WaitGroup
	for i := range got {
		wg.Add(1)
		go func() { // waited for below: owned by this call
			defer wg.Done()
			if ch, err := r.pool.get(ctx); err == nil {
				got[i] = ch
			}
		}()
	}
	wg.Wait()
	lanes := got[:0]
	for _, ch := range got {
		if ch != nil {
			lanes = append(lanes, ch)
		}
	}
	return lanes
}

// barrier waits until the broker has handled everything sent on ch before
// it: a passive declare of amq.direct, which every vhost has.
func barrier(ctx context.Context, ch *conn.Channel) error {
	if !ch.IsOpen() {
		if err := ch.Err(); err != nil {
			return err
		}
		return errors.New("broker: channel closed")
	}
	if err := ch.ExchangeDeclarePassive(ctx, "amq.direct", "direct"); err != nil {
		return fmt.Errorf("broker: pipeline barrier: %w", err)
	}
	return nil
}
