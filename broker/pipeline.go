package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"

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

// laneChunk is how many of a lane's steps go out before the lane waits at
// a barrier. Each chunk's sends and its barrier are bounded on their own
// (OperationTimeout), so a lane the broker takes longer than one bound to
// work through (10,000 durable queues on a loaded broker) stays pipelined
// instead of going one at a time, and a refusal in a later chunk leaves the
// earlier chunks done (PITFALLS 70). A chunk's barrier costs one round
// trip, against the broker's work on 256 declarations (restore at N=10,000
// measured the same with it: MEASUREMENTS.md, "A thirty-first pass").
var laneChunk = 256

// step is one declaration of a batch: it sends the declaration on the raw
// channel without waiting for the broker's reply (NoWait); the pipeline's
// barrier finds a refusal.
type step func(ch *amqp.Channel) error

// errNotPipelined marks steps the pipeline did not send (a batch too
// small, or no channel): the caller runs them one at a time.
var errNotPipelined = errors.New("broker: not pipelined")

// pipeline sends steps without waiting for each reply (NoWait) on up to
// pipelineWidth channels, each waiting at a barrier after every laneChunk
// of its steps. errs[i] is nil when step i certainly happened; otherwise it
// is why its channel failed. A step the broker refuses closes its channel,
// and the broker discards what was sent on it afterwards, so every step of
// a channel after its last passed barrier is left undone: the caller sends
// those again, or runs them one at a time (then a failure fails only its
// own step, and says which). Nothing inside a batch may depend on anything
// else in it (callers batch one kind at a time), since the channels run
// side by side.
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
	for i := range steps {
		owned[i%len(lanes)] = append(owned[i%len(lanes)], i)
	}
	var wg sync.WaitGroup
	for l, ch := range lanes {
		wg.Add(1)
		go func() { // waited for below: owned by this call
			defer wg.Done()
			done, err := sendLane(ctx, ch, steps, owned[l])
			r.pool.put(ch)
			if connx.ChannelGeneration(ch) != gen {
				done, err = 0, errors.New("broker: connection replaced during the batch")
			}
			for _, i := range owned[l][done:] {
				errs[i] = err
			}
			if err != nil {
				r.log.Debug("broker: a pipelined lane stopped; its undone declarations are sent again or one at a time",
					"done", done, "undone", len(owned[l])-done, "error", err)
			}
		}()
	}
	wg.Wait()
	return errs, gen
}

// sendLane sends the steps mine on ch, laneChunk at a time, each chunk
// followed by its barrier, and returns how many of mine (a prefix) the
// barriers vouched for and, when that is not all, why the rest failed.
func sendLane(ctx context.Context, ch *conn.Channel, steps []step, mine []int) (done int, err error) {
	for done < len(mine) {
		chunk := mine[done:min(done+laneChunk, len(mine))]
		if err := sendChunk(ctx, ch, steps, chunk); err != nil {
			return done, err
		}
		done += len(chunk)
	}
	return done, nil
}

// sendChunk sends the steps chunk on ch and waits at its barrier. The
// sends go out in one bounded call: one goroutine and one timer for all of
// them, where a call each made a restore of 10,000 queues start 20,000
// goroutines and timers (issue 33: restore at N=10,000). A send fails only
// once the channel is closing: the broker's refusal, found when the
// channel closes, says why (a 405 or 404 of a fresh reconnect is retried;
// a 406 is not).
func sendChunk(ctx context.Context, ch *conn.Channel, steps []step, chunk []int) error {
	err := connx.Call(ch, ctx, func(c *amqp.Channel) error {
		for _, i := range chunk {
			if err := steps[i](c); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		return barrier(ctx, ch)
	}
	select {
	case <-ch.Done():
		if refused := ch.Err(); refused != nil {
			return refused
		}
	case <-ctx.Done():
	}
	return err
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
