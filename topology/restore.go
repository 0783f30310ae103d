package topology

import (
	"context"
	"errors"
	"time"

	"github.com/cenkalti/backoff/v4"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/conn"
)

// EntityKind names a kind of entity in restore reports and errors.
type EntityKind string

const (
	KindExchange EntityKind = "exchange"
	KindQueue    EntityKind = "queue"
	KindBinding  EntityKind = "binding"
	KindConsumer EntityKind = "consumer"
)

// Entity is one restored entity.
type Entity struct {
	Kind EntityKind
	// Name is the exchange or queue name, the binding's label or the
	// consumer's tag.
	Name string
}

// RestoreReport is what one restore run did, in order.
type RestoreReport struct {
	// Run counts the restore runs of the connection, from 1.
	Run uint64
	// Generation is the connection the run restored onto.
	Generation uint64
	Started    time.Time
	Duration   time.Duration
	// Restored lists the entities put back, in the order they were.
	Restored []Entity
	// Failed are the entities that could not be restored; the rest were.
	Failed []*RestoreError
	// Err is set when the connection failed under the run: the connection
	// runs it again on the next one.
	Err error
}

// OK reports a run that restored everything.
func (r RestoreReport) OK() bool { return r.Err == nil && len(r.Failed) == 0 }

// restoreRetries is how often an entity is retried during restore on 405
// RESOURCE_LOCKED (an exclusive queue the broker still holds for the dead
// connection) and 404 NOT_FOUND (an auto-delete entity vanishing between
// declare and bind), with a backoff from 50ms.
const restoreRetries = 5

// restore is the connection's one restore hook: it puts back everything
// recorded, in order, on the new connection (ctx is bound to it). One
// entity's failure is reported and the rest continue; a lost connection
// aborts the run (the connection runs it again on the next one).
func (r *Registry) restore(ctx context.Context) error {
	r.mu.Lock()
	empty := r.exchanges.len() == 0 && r.queues.len() == 0 && r.bindings.len() == 0 && r.consumers.len() == 0
	r.mu.Unlock()
	if empty {
		return nil
	}
	ch, err := r.pool.get(ctx)
	if err != nil {
		return err
	}
	gen := ch.Generation()
	r.pool.put(ch)
	rep := RestoreReport{Generation: gen, Started: time.Now()}
	err = r.restoreAll(ctx, gen, &rep)
	rep.Err = err
	rep.Duration = time.Since(rep.Started)
	r.report(rep)
	return err
}

func (r *Registry) restoreAll(ctx context.Context, gen uint64, rep *RestoreReport) error {
	r.mu.Lock()
	exchanges, queues, bindings := r.exchanges.values(), r.queues.values(), r.bindings.values()
	r.mu.Unlock()
	step := func(kind EntityKind, name string, fn func() error, ok func()) error {
		failed, err := r.restoreEntity(ctx, kind, name, fn)
		if err != nil {
			return err
		}
		if failed != nil {
			rep.Failed = append(rep.Failed, failed)
			return nil
		}
		if ok != nil {
			ok()
		}
		rep.Restored = append(rep.Restored, Entity{kind, name})
		return nil
	}
	for _, rec := range exchanges {
		s := rec.spec
		if err := step(KindExchange, s.Name, func() error {
			if s.IsReadOnly() {
				return r.checkExchange(ctx, s.Name)
			}
			return r.declareExchange(ctx, s)
		}, func() { r.markDeclared(func() { rec.gen = gen }) }); err != nil {
			return err
		}
	}
	for _, rec := range queues {
		s := rec.spec
		if err := step(KindQueue, s.Name, func() error {
			if s.ReadOnly {
				_, err := r.inspect(ctx, s.Name)
				return err
			}
			_, err := r.declareQueue(ctx, s)
			return err
		}, func() { r.markDeclared(func() { rec.gen = gen }) }); err != nil {
			return err
		}
	}
	for _, kind := range []BindKind{BindQueue, BindExchange} {
		for _, rec := range bindings {
			s := rec.spec
			if s.Kind != kind {
				continue
			}
			if err := step(KindBinding, s.label(), func() error {
				err := r.bind(ctx, s)
				if errors.Is(err, ErrNotFound) {
					// An auto-delete end restored a moment ago vanished (the
					// broker cleaned up after the dead connection late):
					// put it back, so that the retry finds it (PITFALLS 10).
					r.reviveEnds(ctx, s)
				}
				return err
			}, func() { r.markDeclared(func() { rec.gen = gen }) }); err != nil {
				return err
			}
		}
	}
	for _, c := range r.consumerList() {
		if err := step(KindConsumer, c.spec.Tag, func() error { return c.resubscribe(ctx) }, nil); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// reviveEnds declares a binding's registered source and destination again.
// Failures are left to the binding's own retry to report.
func (r *Registry) reviveEnds(ctx context.Context, b BindSpec) {
	if x, ok := r.exchangeSpec(b.Source); ok && !x.IsReadOnly() {
		_ = r.declareExchange(ctx, x)
	}
	if b.Kind == BindExchange {
		if x, ok := r.exchangeSpec(b.Destination); ok && !x.IsReadOnly() {
			_ = r.declareExchange(ctx, x)
		}
		return
	}
	if q, ok := r.queueSpec(b.Destination); ok && !q.ReadOnly {
		_, _ = r.declareQueue(ctx, q)
	}
}

// markDeclared updates a record under the registry's lock.
func (r *Registry) markDeclared(update func()) {
	r.mu.Lock()
	update()
	r.mu.Unlock()
}

func (r *Registry) report(rep RestoreReport) {
	r.hookMu.Lock()
	r.runs++
	rep.Run = r.runs
	r.last = &rep
	hooks := append([]namedReportHook(nil), r.hooks...)
	r.hookMu.Unlock()
	if !rep.OK() {
		r.mu.Lock()
		r.epoch++ // cached "declared" answers may be wrong now
		r.mu.Unlock()
	}
	for _, h := range hooks {
		func() {
			defer func() {
				if p := recover(); p != nil {
					r.log.Error("topology: restore hook panicked", "hook", h.name, "panic", p)
				}
			}()
			h.fn(rep)
		}()
	}
}

// restoreEntity runs fn, retrying the races of a fresh reconnect (405 for an
// exclusive queue the broker still holds for the dead connection, 404 for an
// auto-delete entity that vanished in between; PITFALLS 10). A failure that
// remains is returned as a *RestoreError (the run goes on with the next
// entity); err is non-nil only when the connection is gone.
func (r *Registry) restoreEntity(ctx context.Context, kind EntityKind, entity string, fn func() error) (*RestoreError, error) {
	b := backoff.WithMaxRetries(&backoff.ExponentialBackOff{
		InitialInterval: 50 * time.Millisecond, RandomizationFactor: 0.2, Multiplier: 2,
		MaxInterval: time.Second, Stop: backoff.Stop, Clock: backoff.SystemClock,
	}, restoreRetries)
	b.Reset()
	for {
		err := fn()
		if err == nil {
			return nil, nil
		}
		if ctx.Err() != nil {
			return nil, errors.Join(ctx.Err(), err)
		}
		code := replyCode(err)
		if code == amqp.ResourceLocked || code == amqp.NotFound || connectionLevel(err) {
			if wait := b.NextBackOff(); wait != backoff.Stop {
				t := time.NewTimer(wait)
				select {
				case <-t.C:
					continue
				case <-ctx.Done():
					t.Stop()
					return nil, errors.Join(ctx.Err(), err)
				}
			}
		}
		re := &RestoreError{Kind: kind, Entity: entity, Code: code, Err: err}
		r.log.Error("topology: could not restore", "kind", string(kind), "entity", entity, "code", code, "err", err)
		return re, nil
	}
}

// connectionLevel reports errors that mean the connection (not one entity)
// failed, or a channel under one call died of it.
func connectionLevel(err error) bool {
	if errors.Is(err, amqp.ErrClosed) || errors.Is(err, conn.ErrTimeout) {
		return true
	}
	var ae *amqp.Error
	if errors.As(err, &ae) {
		return !isChannelLevel(ae.Code)
	}
	return false
}
