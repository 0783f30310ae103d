package topology

import (
	"slices"
	"sync"
)

// Registry records what Ops declared with restore, in declaration order, and
// is what Ops restores after every reconnect: exchanges, queues, queue
// bindings, exchange bindings, consumers. Redeclaring a name replaces its
// record; deleting, unbinding and stopping forget it, and so does the
// broker's own removal of auto-delete entities (an auto-delete exchange
// losing its last binding, an auto-delete queue its last consumer), so no
// stale record makes every later restore fail (PITFALLS 11).
type Registry struct {
	mu        sync.Mutex
	exchanges ordered[ExchangeSpec]
	queues    ordered[QueueSpec]
	bindings  ordered[BindSpec]
	consumers ordered[*Consumer]
}

func newRegistry() *Registry { return &Registry{} }

// Snapshot returns what would be restored, in restore order (bindings:
// queue bindings, then exchange bindings).
func (r *Registry) Snapshot() Topology {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := Topology{Exchanges: r.exchanges.values(), Queues: r.queues.values()}
	for _, kind := range []BindKind{BindQueue, BindExchange} {
		for _, b := range r.bindings.values() {
			if b.Kind == kind {
				t.Bindings = append(t.Bindings, b)
			}
		}
	}
	for _, c := range r.consumers.values() {
		t.Consumers = append(t.Consumers, c.spec)
	}
	return t
}

func (r *Registry) putExchange(s ExchangeSpec) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.exchanges.set(s.Name, s)
}

func (r *Registry) putQueue(s QueueSpec) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.queues.set(s.Name, s)
}

func (r *Registry) putBinding(s BindSpec) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bindings.set(s.key(), s)
}

func (r *Registry) putConsumer(c *Consumer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.consumers.set(c.spec.Tag, c)
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

func (r *Registry) readOnly(name string, exchange bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if exchange {
		s, ok := r.exchanges.get(name)
		return ok && s.IsReadOnly()
	}
	s, ok := r.queues.get(name)
	return ok && s.ReadOnly
}

// bindingsOf lists the recorded bindings that deleting the entity would
// delete with it.
func (r *Registry) bindingsOf(name string, exchange bool) []BindSpec {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []BindSpec
	for _, b := range r.bindings.values() {
		if touches(b, name, exchange) {
			out = append(out, b)
		}
	}
	return out
}

func touches(b BindSpec, name string, exchange bool) bool {
	if exchange {
		return b.Source == name || (b.Kind == BindExchange && b.Destination == name)
	}
	return b.Kind == BindQueue && b.Destination == name
}

func (r *Registry) forgetBindingsOfLocked(name string, exchange bool) {
	for _, b := range r.bindings.values() {
		if touches(b, name, exchange) {
			r.bindings.delete(b.key())
		}
	}
}

func (r *Registry) forgetExchange(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.exchanges.delete(name)
	r.forgetBindingsOfLocked(name, true)
}

// forgetQueue forgets a queue and its bindings and returns its consumers,
// forgotten too.
func (r *Registry) forgetQueue(name string) []*Consumer {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.queues.delete(name)
	r.forgetBindingsOfLocked(name, false)
	var gone []*Consumer
	for _, c := range r.consumers.values() {
		if c.spec.Queue == name {
			gone = append(gone, c)
			r.consumers.delete(c.spec.Tag)
		}
	}
	return gone
}

func (r *Registry) forgetBinding(s BindSpec) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bindings.delete(s.key())
	// The broker deletes an auto-delete exchange when its last binding as a
	// source goes.
	if x, ok := r.exchanges.get(s.Source); ok && x.AutoDelete {
		for _, b := range r.bindings.values() {
			if b.Source == s.Source {
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
	if !ok || !q.AutoDelete {
		return
	}
	for _, other := range r.consumers.values() {
		if other.spec.Queue == q.Name {
			return
		}
	}
	r.queues.delete(q.Name)
	r.forgetBindingsOfLocked(q.Name, false)
}

// ordered is a map that remembers insertion order; set on an existing key
// replaces the value in place.
type ordered[T any] struct {
	keys []string
	m    map[string]T
}

func (o *ordered[T]) set(k string, v T) {
	if o.m == nil {
		o.m = map[string]T{}
	}
	if _, ok := o.m[k]; !ok {
		o.keys = append(o.keys, k)
	}
	o.m[k] = v
}

func (o *ordered[T]) get(k string) (T, bool) {
	v, ok := o.m[k]
	return v, ok
}

func (o *ordered[T]) delete(k string) {
	if _, ok := o.m[k]; !ok {
		return
	}
	delete(o.m, k)
	o.keys = slices.DeleteFunc(o.keys, func(x string) bool { return x == k })
}

func (o *ordered[T]) values() []T {
	out := make([]T, 0, len(o.keys))
	for _, k := range o.keys {
		out = append(out, o.m[k])
	}
	return out
}
