package broker

import (
	"context"
	"errors"
	"time"

	"github.com/cenkalti/backoff/v4"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/connx"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/topology"
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
	gen := connx.ChannelGeneration(ch)
	r.pool.put(ch)
	rep := RestoreReport{Generation: gen, Started: time.Now()}
	err = r.restoreAll(ctx, gen, &rep)
	rep.Err = err
	rep.Duration = time.Since(rep.Started)
	r.report(rep)
	return err
}

// restoreItem is one entity of a restore run.
type restoreItem struct {
	kind EntityKind
	name string
	// step, when set, lets the entity go in a pipelined batch.
	step step
	// one restores it alone, waiting for the reply (the fallback, and the
	// way of entities that cannot be pipelined).
	one func() error
	// rec is its registry record, marked declared on the new connection
	// once it is.
	rec declaredRecord
}

// declaredRecord is a registry record of any kind (record.setGen).
type declaredRecord interface{ setGen(gen uint64) }

func (r *Registry) restoreAll(ctx context.Context, gen uint64, rep *RestoreReport) error {
	r.mu.Lock()
	exchanges, queues, bindings := r.exchanges.values(), r.queues.values(), r.bindings.values()
	consumers := r.consumers.len()
	r.mu.Unlock()
	// Sized once: a restore of 10,000 queues grew these slices a dozen
	// times each.
	batch := make([]restoreItem, 0, max(len(exchanges), len(queues), len(bindings)))
	rep.Restored = make([]Entity, 0, len(exchanges)+len(queues)+len(bindings)+consumers)
	for _, rec := range exchanges {
		s := rec.spec
		it := restoreItem{kind: KindExchange, name: s.Name, rec: rec}
		switch {
		case s.IsReadOnly():
			it.one = func() error { return r.checkExchange(ctx, s.Name) }
		case rec.weak:
			// Needed, not owned (IfMissing): declared only when missing.
			it.one = func() error {
				err := r.checkExchange(ctx, s.Name)
				if errors.Is(err, conn.ErrNotFound) {
					err = r.declareExchange(ctx, s)
				}
				return err
			}
		default:
			it.step, it.one = exchangeStep(s), func() error { return r.declareExchange(ctx, s) }
		}
		batch = append(batch, it)
	}
	if err := r.restoreBatch(ctx, gen, batch, rep); err != nil {
		return err
	}
	batch = batch[:0]
	for _, rec := range queues {
		s := rec.spec
		it := restoreItem{kind: KindQueue, name: s.Name, rec: rec}
		switch {
		case s.ReadOnly:
			it.one = func() error { _, err := r.inspect(ctx, s.Name); return err }
		case rec.weak:
			it.one = func() error {
				_, err := r.inspect(ctx, s.Name)
				if errors.Is(err, conn.ErrNotFound) {
					_, err = r.declareQueue(ctx, s)
				}
				return err
			}
		default:
			it.step, it.one = queueStep(s), func() error { _, err := r.declareQueue(ctx, s); return err }
		}
		batch = append(batch, it)
	}
	if err := r.restoreBatch(ctx, gen, batch, rep); err != nil {
		return err
	}
	// The consumers of queues this run just declared subscribe while the
	// bindings are put back: a consumer needs its queue, not the queue's
	// bindings, and publishing waits for the whole run anyway. A binding
	// that keeps failing (someone else's exchange gone) used to hold every
	// consumer back for its retries.
	ready, alone := r.consumersToRestore(ctx)
	early := make(chan trustedResult, 1)
	go func() { early <- r.subscribeTrusted(ctx, ready) }()
	for _, kind := range []topology.BindKind{topology.BindQueue, topology.BindExchange} {
		batch = batch[:0]
		for _, rec := range bindings {
			s := rec.spec
			if s.Kind != kind {
				continue
			}
			batch = append(batch, restoreItem{kind: KindBinding, name: s.String(), step: bindStep(s), rec: rec, one: func() error {
				err := r.bind(ctx, s)
				if errors.Is(err, conn.ErrNotFound) {
					// An auto-delete end restored a moment ago vanished (the
					// broker cleaned up after the dead connection late):
					// put it back, so that the retry finds it (PITFALLS 10).
					r.reviveEnds(ctx, s)
				}
				return err
			}})
		}
		if err := r.restoreBatch(ctx, gen, batch, rep); err != nil {
			<-early
			return err
		}
	}
	subscribed := <-early
	rep.Restored = append(rep.Restored, subscribed.restored...)
	if err := r.restoreAlone(ctx, append(alone, subscribed.missed...), rep); err != nil {
		return err
	}
	return ctx.Err()
}

// restoreBatch restores one kind of entity: pipelined first, sent again
// while what failed looks like the races of a fresh reconnect (405 for
// exclusive queues the broker still holds for the dead connection, 404 for
// auto-delete ones vanishing; PITFALLS 10), then whatever is left one at a
// time with the per-entity retries, which find and report each failure. It
// returns an error only when the connection is gone.
func (r *Registry) restoreBatch(ctx context.Context, gen uint64, items []restoreItem, rep *RestoreReport) error {
	done := make([]bool, len(items))
	pending := make([]int, 0, len(items))
	for i, it := range items {
		if it.step != nil {
			pending = append(pending, i)
		}
	}
	b := restoreBackOff()
	for len(pending) >= pipelineMin {
		steps := make([]step, len(pending))
		for j, i := range pending {
			steps[j] = items[i].step
		}
		errs, _ := r.pipeline(ctx, steps)
		retry, transient := pending[:0], true
		for j, i := range pending {
			if errs[j] == nil {
				done[i] = true
				continue
			}
			retry = append(retry, i)
			if !errors.Is(errs[j], errNotPipelined) && !retriedInRestore(errs[j]) {
				transient = false
			}
		}
		pending = retry
		if len(pending) == 0 || !transient || ctx.Err() != nil {
			break
		}
		wait := b.NextBackOff()
		if wait == backoff.Stop {
			break
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	for i, it := range items {
		if !done[i] {
			failed, err := r.restoreEntity(ctx, it.kind, it.name, it.one)
			if err != nil {
				return err
			}
			if failed != nil {
				rep.Failed = append(rep.Failed, failed)
				continue
			}
		}
		done[i] = true
		rep.Restored = append(rep.Restored, Entity{it.kind, it.name})
	}
	r.mu.Lock()
	for i, it := range items {
		if done[i] {
			it.rec.setGen(gen)
		}
	}
	r.mu.Unlock()
	return nil
}

// restoreRetryBackoff paces the retries of a restore's races (a fresh
// reconnect's 404s and 405s clear within a second or so).
var restoreRetryBackoff = retry.Backoff{InitialInterval: 50 * time.Millisecond, Multiplier: 2, RandomizationFactor: 0.2, MaxInterval: time.Second}

// restoreBackOff paces the retries of a restore, up to restoreRetries of
// them.
func restoreBackOff() backoff.BackOff {
	b := backoff.WithMaxRetries(restoreRetryBackoff.BackOff(), restoreRetries)
	b.Reset()
	return b
}

// consumersToRestore splits the consumers to restore: those whose queues
// are vouched for on this connection (pipelined), and the rest (a consume
// of a missing queue would close a shared channel: checked first, alone).
func (r *Registry) consumersToRestore(ctx context.Context) (ready, alone []*Consumer) {
	for _, c := range r.consumerList() {
		if c.isStopped() || c.Paused() {
			continue
		}
		if c.queueTrusted(ctx) {
			ready = append(ready, c)
		} else {
			alone = append(alone, c)
		}
	}
	return ready, alone
}

// trustedResult is what subscribeTrusted did: the consumers it restored,
// and those it could not (restored alone next).
type trustedResult struct {
	restored []Entity
	missed   []*Consumer
}

// subscribeTrusted subscribes ready pipelined per consumer channel and
// hands each its subscription.
func (r *Registry) subscribeTrusted(ctx context.Context, ready []*Consumer) trustedResult {
	res := trustedResult{restored: make([]Entity, 0, len(ready))}
	if len(ready) == 0 {
		return res
	}
	specs := make([]ConsumerSpec, len(ready))
	for i, c := range ready {
		specs[i] = c.spec
	}
	subs := r.channels.subscribeMany(ctx, specs)
	for i, c := range ready {
		if subs[i] == nil {
			res.missed = append(res.missed, c)
			continue
		}
		c.handOff(subs[i])
		res.restored = append(res.restored, Entity{KindConsumer, c.spec.Tag})
	}
	return res
}

// restoreAlone restores consumers one at a time, each with the per-entity
// retries, which find and report its failure.
func (r *Registry) restoreAlone(ctx context.Context, alone []*Consumer, rep *RestoreReport) error {
	for _, c := range alone {
		failed, err := r.restoreEntity(ctx, KindConsumer, c.spec.Tag, func() error { return c.resubscribe(ctx) })
		if err != nil {
			return err
		}
		if failed != nil {
			rep.Failed = append(rep.Failed, failed)
			continue
		}
		rep.Restored = append(rep.Restored, Entity{KindConsumer, c.spec.Tag})
	}
	return nil
}

// reviveEnds declares a binding's registered source and destination again.
// Failures are left to the binding's own retry to report.
func (r *Registry) reviveEnds(ctx context.Context, b topology.BindSpec) {
	if x, ok := r.exchangeSpec(b.Source); ok && !x.IsReadOnly() {
		_ = r.declareExchange(ctx, x)
	}
	if b.Kind == topology.BindExchange {
		if x, ok := r.exchangeSpec(b.Destination); ok && !x.IsReadOnly() {
			_ = r.declareExchange(ctx, x)
		}
		return
	}
	if q, ok := r.queueSpec(b.Destination); ok && !q.ReadOnly {
		_, _ = r.declareQueue(ctx, q)
	}
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
					r.log.Error("broker: restore hook panicked", "hook", h.name, "panic", p)
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
	b := restoreBackOff()
	for {
		err := fn()
		if err == nil {
			return nil, nil
		}
		if ctx.Err() != nil {
			return nil, errors.Join(ctx.Err(), err)
		}
		if retriedInRestore(err) {
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
		code := replyCode(err)
		re := &RestoreError{Kind: kind, Entity: entity, Code: code, Err: err}
		r.log.Error("broker: could not restore", "kind", string(kind), "entity", entity, "code", code, "error", err)
		return re, nil
	}
}

// retriedInRestore reports whether a failure during restore is one of the
// races of a fresh reconnect, worth another try: 405 RESOURCE_LOCKED (an
// exclusive queue the broker still holds for the dead connection), 404
// NOT_FOUND (an auto-delete entity that vanished in between; also what
// RabbitMQ 4.x answers when its metadata store times out on a queue: "failed
// to perform operation on queue ... due to timeout"), and a connection-level
// error, which includes 541 INTERNAL_ERROR, RabbitMQ 4.x's answer when its
// metadata store (Khepri) times out on a declare, delete or binding.
func retriedInRestore(err error) bool {
	code := replyCode(err)
	return code == amqp.ResourceLocked || code == amqp.NotFound || connectionLevel(err)
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
