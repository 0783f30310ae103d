// Package valuesonly is context.WithoutCancel as a pointer. The standard
// library's is a struct value that every Value lookup reaching it through a
// context type of another package copies into an interface: an allocation
// per lookup. Every consumed message's context derives from one (a
// subscription's values outlive Subscribe's cancellation, and a router's
// route outlives Run's), and a lookup that misses (a span when tracing is
// off, a logger's key) reaches it at least once a message.
package valuesonly

import (
	"context"
	"time"
)

// From returns a context with parent's values and never a cancellation.
//
// Unlike context.WithoutCancel, it does not hide parent's cancellation from
// context.Cause (the key Cause looks up is unexported). Derive only
// contexts with a cancellation of their own from it (a message's context
// is a WithCancel or WithTimeout of it; a route's subscription derives its
// messages' contexts): their Cause is then theirs.
func From(parent context.Context) context.Context { return &valuesOnly{parent: parent} }

type valuesOnly struct{ parent context.Context }

func (*valuesOnly) Deadline() (time.Time, bool) { return time.Time{}, false }

// Done is nil: a context derived from it registers with nothing.
func (*valuesOnly) Done() <-chan struct{} { return nil }

func (*valuesOnly) Err() error { return nil }

func (v *valuesOnly) Value(key any) any { return v.parent.Value(key) }

func (*valuesOnly) String() string { return "valuesonly.From" }
