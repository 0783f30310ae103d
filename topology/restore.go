package topology

import (
	"context"
	"errors"
	"time"

	"github.com/cenkalti/backoff/v4"
	amqp "github.com/rabbitmq/amqp091-go"
)

// restore is Ops' conn restore hook: it puts back everything recorded, in
// order, on the new connection (ctx is bound to it). One entity's failure is
// reported and the rest continue; a lost connection aborts the cycle (the
// connection retries it on the next one).
func (o *Ops) restore(ctx context.Context) error {
	snap := o.reg.Snapshot()
	for _, s := range snap.Exchanges {
		if err := o.restoreEntity(ctx, "exchange", s.label(), func() error {
			if s.IsReadOnly() {
				return o.mustExist(ctx, s)
			}
			return o.declareExchange(ctx, s)
		}); err != nil {
			return err
		}
	}
	for _, s := range snap.Queues {
		if err := o.restoreEntity(ctx, "queue", s.label(), func() error {
			if s.ReadOnly {
				_, err := o.Inspect(ctx, s.Name)
				return err
			}
			_, err := o.declareQueue(ctx, s)
			return err
		}); err != nil {
			return err
		}
	}
	for _, s := range snap.Bindings {
		if err := o.restoreEntity(ctx, "binding", s.label(), func() error { return o.bind(ctx, s) }); err != nil {
			return err
		}
	}
	for _, c := range o.reg.consumerList() {
		if err := o.restoreEntity(ctx, "consumer", c.spec.label(), func() error { return c.resubscribe(ctx) }); err != nil {
			return err
		}
	}
	return ctx.Err()
}

func (o *Ops) mustExist(ctx context.Context, s ExchangeSpec) error {
	ok, err := o.ExchangeExists(ctx, s.Name)
	if err == nil && !ok {
		err = &ChannelError{Op: "check", Entity: s.label(), Code: amqp.NotFound, Text: "read-only exchange does not exist"}
	}
	return err
}

// restoreEntity runs fn, retrying the races of a fresh reconnect (405 for an
// exclusive queue the broker still holds for the dead connection, 404 for an
// auto-delete entity that vanished in between; PITFALLS 10), then reports a
// failure and returns nil so the next entity is restored. It returns an
// error only when the connection is gone.
func (o *Ops) restoreEntity(ctx context.Context, kind, entity string, fn func() error) error {
	b := backoff.WithMaxRetries(&backoff.ExponentialBackOff{
		InitialInterval: 50 * time.Millisecond, RandomizationFactor: 0.2, Multiplier: 2,
		MaxInterval: time.Second, Stop: backoff.Stop, Clock: backoff.SystemClock,
	}, uint64(o.cfg.RestoreRetries))
	b.Reset()
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return errors.Join(ctx.Err(), err)
		}
		code := replyCode(err)
		if connectionLevel(err) {
			// Either the connection is going (its loss cancels ctx any
			// moment now) or only the channel under this call died.
			t := time.NewTimer(time.Second)
			select {
			case <-ctx.Done():
				t.Stop()
				return errors.Join(ctx.Err(), err)
			case <-t.C:
			}
		}
		if code == amqp.ResourceLocked || code == amqp.NotFound || connectionLevel(err) {
			if wait := b.NextBackOff(); wait != backoff.Stop {
				t := time.NewTimer(wait)
				select {
				case <-t.C:
					continue
				case <-ctx.Done():
					t.Stop()
					return ctx.Err()
				}
			}
		}
		re := &RestoreError{Kind: kind, Entity: entity, Code: code, Err: err}
		o.cfg.Logger.Error("topology: could not restore", "kind", kind, "entity", entity, "code", code, "err", err)
		if o.cfg.OnRestoreError != nil {
			o.cfg.OnRestoreError(re)
		}
		return nil
	}
}

// connectionLevel reports errors that mean the connection (not one entity)
// failed.
func connectionLevel(err error) bool {
	if errors.Is(err, amqp.ErrClosed) {
		return true
	}
	var ae *amqp.Error
	if errors.As(err, &ae) {
		return !isChannelLevel(ae.Code)
	}
	return false
}
