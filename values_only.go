package warren

import (
	"context"
	"time"
)

// valuesOnly is a context with its parent's values and never a
// cancellation: context.WithoutCancel's meaning, as a pointer. The standard
// library's is a struct value that every Value lookup reaching it copies
// into an interface (an allocation per lookup): every message's context
// derives from a subscription's valuesOnly, and a lookup that misses (a span
// when tracing is off, a logger's key) reaches it at least once a message.
//
// Unlike the standard library's, it does not hide its parent's cancellation
// from context.Cause (the key Cause looks up is unexported): only contexts
// with a cancellation of their own derive from it here (every message's
// context is a WithCancel or WithTimeout of it), and their Cause is theirs.
type valuesOnly struct{ parent context.Context }

func withoutCancel(parent context.Context) *valuesOnly { return &valuesOnly{parent: parent} }

func (*valuesOnly) Deadline() (time.Time, bool) { return time.Time{}, false }

// Done is nil: a context derived from it registers with nothing.
func (*valuesOnly) Done() <-chan struct{} { return nil }

func (*valuesOnly) Err() error { return nil }

func (v *valuesOnly) Value(key any) any { return v.parent.Value(key) }

func (*valuesOnly) String() string { return "warren.withoutCancel" }
