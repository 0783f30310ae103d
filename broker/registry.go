package broker

import (
	"log/slog"
	"slices"
	"sync"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/connx"
	"github.com/warrenmq/warren/topology"
)

type registryKey struct{}

// RegistryOf returns the registry of c, made on first use. A connection has
// exactly one: every Ops, Publisher, Subscriber and Router built on c
// shares it, its one restore run (in the order exchanges, queues, queue
// bindings, exchange bindings, consumers, across all of them), its channel
// pool and its consumer channels.
//
// A nil connection has none: nil.
func RegistryOf(c *conn.Conn) *Registry {
	if c == nil {
		return nil
	}
	return connx.Attachment(c, registryKey{}, func() any { return newRegistry(c) }).(*Registry)
}

// Registry records what was declared on one connection with restore (the
// default) and restores it after every reconnect. Declarations are keyed
// (exchanges and queues by name, bindings by their whole tuple, consumers
// by tag): declaring what is already recorded and declared on the current
// connection costs no network call, and declaring a name with other
// properties fails before the network with a *ConflictError naming the
// field. Deleting, unbinding and stopping forget entities, and so does the
// broker's own removal of auto-delete ones, so no stale record makes every
// later restore fail (PITFALLS 11).
type Registry struct {
	conn     *conn.Conn
	log      *slog.Logger
	pool     *chanPool
	channels *channelSet

	mu        sync.Mutex
	exchanges ordered[*record[topology.ExchangeSpec]]
	queues    ordered[*record[topology.QueueSpec]]
	bindings  ordered[*record[topology.BindSpec]]
	consumers ordered[*Consumer]
	epoch     uint64
	// verified holds exchanges that nobody here declared but a passive
	// check found, with the generation it found them on.
	verified map[string]uint64
	// maxMessageSize is the broker's limit once a refusal taught it, 0
	// while unknown.
	maxMessageSize int

	hookMu  sync.Mutex
	hookSeq uint64
	hooks   []namedReportHook
	last    *RestoreReport
	runs    uint64
}

// record is a spec and the connection generation it was last declared (or
// restored) on; 0 when it must be declared again before it can be trusted.
// A weak record was made with IfMissing: whoever declared it needs the
// entity to exist, not to own its properties. It is restored by a check,
// declared only when missing, and a declaration of the name with other
// properties replaces it instead of conflicting with it.
type record[T any] struct {
	spec T
	gen  uint64
	weak bool
}

// setGen is called under the registry's lock.
func (r *record[T]) setGen(gen uint64) { r.gen = gen }

type namedReportHook struct {
	name uint64
	fn   func(RestoreReport)
}

// maxVerified bounds the cache of passively checked exchanges.
const maxVerified = 4096

func newRegistry(c *conn.Conn) *Registry {
	r := &Registry{conn: c, log: connx.Logger(c), verified: map[string]uint64{}}
	r.pool = &chanPool{conn: c, max: poolIdle}
	r.channels = &channelSet{conn: c, perChannel: consumersPerChannel}
	c.OnRestore(r.restore)
	connx.BeforeClose(c, r.channels.flushAcks)
	return r
}

// Snapshot returns the topology that would be restored, in restore order
// (bindings: queue bindings, then exchange bindings); the consumers come
// back after it.
func (r *Registry) Snapshot() topology.Topology {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := topology.Topology{Exchanges: specs(r.exchanges.values()), Queues: specs(r.queues.values())}
	for _, kind := range []topology.BindKind{topology.BindQueue, topology.BindExchange} {
		for _, b := range r.bindings.values() {
			if b.spec.Kind == kind {
				t.Bindings = append(t.Bindings, b.spec)
			}
		}
	}
	return t
}

func specs[T any](rs []*record[T]) []T {
	out := make([]T, len(rs))
	for i, rec := range rs {
		out[i] = rec.spec
	}
	return out
}

// Epoch grows whenever an entity is forgotten or found missing on the
// broker. A cache of "this is declared" answers (the Publisher's route
// cache) stays valid while the epoch stays the same.
func (r *Registry) Epoch() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.epoch
}

// OnRestored registers fn to be told of every restore run with its report,
// and returns the function that unregisters it (idempotent). fn runs on the
// connection's loop goroutine, before callers waiting for the connection
// are released: it must not block. This is the one place a connection
// reports its restores.
func (r *Registry) OnRestored(fn func(RestoreReport)) (remove func()) {
	if fn == nil {
		return func() {}
	}
	r.hookMu.Lock()
	r.hookSeq++
	name := r.hookSeq
	r.hooks = append(r.hooks, namedReportHook{name, fn})
	r.hookMu.Unlock()
	return func() {
		r.hookMu.Lock()
		defer r.hookMu.Unlock()
		for i, h := range r.hooks {
			if h.name == name {
				r.hooks = slices.Delete(r.hooks, i, i+1)
				return
			}
		}
	}
}

// LastRestore is the report of the latest restore run, false before the
// first one: the health view of the connection's topology.
func (r *Registry) LastRestore() (RestoreReport, bool) {
	r.hookMu.Lock()
	defer r.hookMu.Unlock()
	if r.last == nil {
		return RestoreReport{}, false
	}
	return *r.last, true
}

// Restores counts the restore runs so far (one per new connection that
// found anything to restore).
func (r *Registry) Restores() uint64 {
	r.hookMu.Lock()
	defer r.hookMu.Unlock()
	return r.runs
}

// decide compares a declaration with the record of its name. It returns the
// spec to declare (the registered one with ifMissing), whether the network
// call can be skipped, or a *ConflictError.
func decide[T topology.ExchangeSpec | topology.QueueSpec | topology.BindSpec](rec *record[T], ok bool, s T, label string, op options, gen uint64) (T, bool, error) {
	if !ok {
		return s, false, nil
	}
	current := gen != 0 && rec.gen == gen
	if op.ifMissing {
		// It exists (or will, by whoever registered it): as it is.
		return rec.spec, current, nil
	}
	field, registered, requested := topology.FirstDifference(rec.spec, s)
	switch {
	case field == "":
		return s, current && !rec.weak, nil
	case rec.weak, op.force:
		// A weak record holds no claim on the properties: the broker says
		// whether the entity that exists is this one.
		return s, false, nil
	}
	return s, false, &ConflictError{Entity: label, Field: field, Registered: registered, Requested: requested}
}

func (r *Registry) decideExchange(s topology.ExchangeSpec, op options) (topology.ExchangeSpec, bool, error) {
	gen := r.conn.Generation()
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.exchanges.get(s.Name)
	return decide(rec, ok, s, s.String(), op, gen)
}

func (r *Registry) decideQueue(s topology.QueueSpec, op options) (topology.QueueSpec, bool, error) {
	gen := r.conn.Generation()
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.queues.get(s.Name)
	return decide(rec, ok, s, s.String(), op, gen)
}

// exchangeRecord is the record of an exchange: its spec, whether it is
// weak (IfMissing), and whether it was declared on the current connection.
func (r *Registry) exchangeRecord(name string) (spec topology.ExchangeSpec, weak, current, ok bool) {
	gen := r.conn.Generation()
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.exchanges.get(name)
	if !ok {
		return topology.ExchangeSpec{}, false, false, false
	}
	return rec.spec, rec.weak, gen != 0 && rec.gen == gen, true
}

// queueRecord is exchangeRecord for a queue.
func (r *Registry) queueRecord(name string) (spec topology.QueueSpec, weak, current, ok bool) {
	gen := r.conn.Generation()
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.queues.get(name)
	if !ok {
		return topology.QueueSpec{}, false, false, false
	}
	return rec.spec, rec.weak, gen != 0 && rec.gen == gen, true
}

func (r *Registry) decideBinding(s topology.BindSpec) bool {
	gen := r.conn.Generation()
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.bindings.get(s.Key())
	return ok && gen != 0 && rec.gen == gen
}

func (r *Registry) putExchange(s topology.ExchangeSpec, gen uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.exchanges.set(s.Name, &record[topology.ExchangeSpec]{spec: s, gen: gen})
}

func (r *Registry) putQueue(s topology.QueueSpec, gen uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.queues.set(s.Name, &record[topology.QueueSpec]{spec: s, gen: gen})
}

// putWeakExchange records s as needed to exist (IfMissing), unless the name
// is registered already: a record of any kind says more.
func (r *Registry) putWeakExchange(s topology.ExchangeSpec, gen uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rec, ok := r.exchanges.get(s.Name); ok {
		if rec.gen != gen && rec.weak {
			rec.gen = gen
		}
		return
	}
	r.exchanges.set(s.Name, &record[topology.ExchangeSpec]{spec: s, gen: gen, weak: true})
}

// putWeakQueue is putWeakExchange for a queue.
func (r *Registry) putWeakQueue(s topology.QueueSpec, gen uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rec, ok := r.queues.get(s.Name); ok {
		if rec.gen != gen && rec.weak {
			rec.gen = gen
		}
		return
	}
	r.queues.set(s.Name, &record[topology.QueueSpec]{spec: s, gen: gen, weak: true})
}

func (r *Registry) putBinding(s topology.BindSpec, gen uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bindings.set(s.Key(), &record[topology.BindSpec]{spec: s, gen: gen})
}

// putConsumer records c, unless its tag is taken by another consumer.
func (r *Registry) putConsumer(c *Consumer) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cur, ok := r.consumers.get(c.spec.Tag); ok && cur != c {
		return false
	}
	r.consumers.set(c.spec.Tag, c)
	return true
}

func (r *Registry) consumerList() []*Consumer {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.consumers.values()
}

func (r *Registry) consumersOf(queue string) []*Consumer {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*Consumer
	for _, c := range r.consumers.values() {
		if c.spec.Queue == queue {
			out = append(out, c)
		}
	}
	return out
}

// QueueSpec is the registered spec of a queue, false when the registry holds
// none (a queue warren did not declare on this connection), or only a weak
// one (IfMissing: the queue that exists may have other arguments).
func (r *Registry) QueueSpec(name string) (topology.QueueSpec, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.queues.get(name)
	if !ok || rec.weak {
		return topology.QueueSpec{}, false
	}
	return rec.spec, true
}

// queueSpec is the registered spec of a queue.
func (r *Registry) queueSpec(name string) (topology.QueueSpec, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.queues.get(name)
	if !ok {
		return topology.QueueSpec{}, false
	}
	return rec.spec, true
}

// exchangeSpec is the registered spec of an exchange.
func (r *Registry) exchangeSpec(name string) (topology.ExchangeSpec, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.exchanges.get(name)
	if !ok {
		return topology.ExchangeSpec{}, false
	}
	return rec.spec, true
}

// exchangeKnown reports whether a publish to name is known to find the
// exchange on generation gen: declared or restored on it, or found by a
// passive check on it.
func (r *Registry) exchangeKnown(name string, gen uint64) (known, internal bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rec, ok := r.exchanges.get(name); ok {
		if rec.spec.Internal {
			return true, true
		}
		if rec.gen == gen {
			return true, false
		}
	}
	return r.verified[name] == gen, false
}

func (r *Registry) markVerified(name string, gen uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.verified) >= maxVerified {
		clear(r.verified)
	}
	r.verified[name] = gen
}

// exchangeMissing records that the broker says name does not exist: a
// registered exchange must be declared again before it is trusted.
func (r *Registry) exchangeMissing(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.verified, name)
	if rec, ok := r.exchanges.get(name); ok {
		rec.gen = 0
	}
	r.epoch++
}

// queueMissing is exchangeMissing for a queue (and its bindings, which went
// with it).
func (r *Registry) queueMissing(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rec, ok := r.queues.get(name); ok {
		rec.gen = 0
	}
	for _, b := range r.bindings.values() {
		if touches(b.spec, name, false) {
			b.gen = 0
		}
	}
	r.epoch++
}

func (r *Registry) messageLimit() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.maxMessageSize
}

func (r *Registry) learnMessageLimit(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.maxMessageSize = n
}

func (r *Registry) readOnly(name string, exchange bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if exchange {
		rec, ok := r.exchanges.get(name)
		return ok && rec.spec.IsReadOnly()
	}
	rec, ok := r.queues.get(name)
	return ok && rec.spec.ReadOnly
}

// bindingsOf lists the recorded bindings that deleting the entity would
// delete with it.
func (r *Registry) bindingsOf(name string, exchange bool) []topology.BindSpec {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []topology.BindSpec
	for _, b := range r.bindings.values() {
		if touches(b.spec, name, exchange) {
			out = append(out, b.spec)
		}
	}
	return out
}

func touches(b topology.BindSpec, name string, exchange bool) bool {
	if exchange {
		return b.Source == name || (b.Kind == topology.BindExchange && b.Destination == name)
	}
	return b.Kind == topology.BindQueue && b.Destination == name
}

func (r *Registry) forgetBindingsOfLocked(name string, exchange bool) {
	for _, b := range r.bindings.values() {
		if touches(b.spec, name, exchange) {
			r.bindings.delete(b.spec.Key())
		}
	}
}

func (r *Registry) forgetExchange(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.exchanges.delete(name)
	delete(r.verified, name)
	r.forgetBindingsOfLocked(name, true)
	r.epoch++
}

// forgetQueue forgets a queue and its bindings and returns its consumers,
// forgotten too.
func (r *Registry) forgetQueue(name string) []*Consumer {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.queues.delete(name)
	r.forgetBindingsOfLocked(name, false)
	r.epoch++
	var gone []*Consumer
	for _, c := range r.consumers.values() {
		if c.spec.Queue == name {
			gone = append(gone, c)
			r.consumers.delete(c.spec.Tag)
		}
	}
	return gone
}

func (r *Registry) forgetBinding(s topology.BindSpec) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bindings.delete(s.Key())
	r.epoch++
	// The broker deletes an auto-delete exchange when its last binding as a
	// source goes.
	if x, ok := r.exchanges.get(s.Source); ok && x.spec.AutoDelete {
		for _, b := range r.bindings.values() {
			if b.spec.Source == s.Source {
				return
			}
		}
		r.exchanges.delete(s.Source)
		r.forgetBindingsOfLocked(s.Source, true)
	}
}

// forgetConsumer forgets a stopped consumer; the broker deletes an
// auto-delete queue when its last consumer goes, so that is forgotten too.
func (r *Registry) forgetConsumer(c *Consumer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cur, ok := r.consumers.get(c.spec.Tag); !ok || cur != c {
		return
	}
	r.consumers.delete(c.spec.Tag)
	q, ok := r.queues.get(c.spec.Queue)
	if !ok || !q.spec.AutoDelete {
		return
	}
	for _, other := range r.consumers.values() {
		if other.spec.Queue == q.spec.Name {
			return
		}
	}
	r.queues.delete(q.spec.Name)
	r.forgetBindingsOfLocked(q.spec.Name, false)
	r.epoch++
}

// ordered is a map that remembers insertion order; set on an existing key
// replaces the value in place. Deleting is O(1): keys are tombstoned and
// compacted once they are half the slice, so forgetting N entities one by
// one stays linear in N. One map holds each value with its key's place in
// keys (a slot of keys is live when its key's entry points back at it),
// so an entity costs one map entry: the registry holds one per consumer.
type ordered[T any] struct {
	keys []string
	m    map[string]orderedEntry[T]
	dead int
}

type orderedEntry[T any] struct {
	v   T
	pos int
}

func (o *ordered[T]) set(k string, v T) {
	if o.m == nil {
		o.m = map[string]orderedEntry[T]{}
	}
	e, ok := o.m[k]
	if !ok {
		e.pos = len(o.keys)
		o.keys = append(o.keys, k)
	}
	e.v = v
	o.m[k] = e
}

func (o *ordered[T]) get(k string) (T, bool) {
	e, ok := o.m[k]
	return e.v, ok
}

func (o *ordered[T]) delete(k string) {
	e, ok := o.m[k]
	if !ok {
		return
	}
	delete(o.m, k)
	o.keys[e.pos] = ""
	o.dead++
	if o.dead > 32 && o.dead*2 > len(o.keys) {
		live := o.keys[:0]
		for i, key := range o.keys {
			if e, ok := o.m[key]; ok && e.pos == i {
				e.pos = len(live)
				o.m[key] = e
				live = append(live, key)
			}
		}
		clear(o.keys[len(live):])
		o.keys = live
		o.dead = 0
	}
}

func (o *ordered[T]) len() int { return len(o.m) }

func (o *ordered[T]) values() []T {
	out := make([]T, 0, len(o.m))
	for i, k := range o.keys {
		if e, ok := o.m[k]; ok && e.pos == i {
			out = append(out, e.v)
		}
	}
	return out
}
