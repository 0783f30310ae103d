package valuesonly

import (
	"context"
	"errors"
	"testing"
)

type valuesKey struct{}

func TestFromKeepsValuesAndDropsTheCancellation(t *testing.T) {
	parent, cancel := context.WithCancelCause(context.WithValue(context.Background(), valuesKey{}, "v"))
	v := From(parent)
	cancel(errors.New("gone"))
	if got := v.Value(valuesKey{}); got != "v" {
		t.Fatalf("Value = %v, want the parent's value", got)
	}
	if v.Done() != nil || v.Err() != nil {
		t.Fatal("cancelled with its parent")
	}
	if _, ok := v.Deadline(); ok {
		t.Fatal("has a deadline")
	}
	// A message's context derives from it: cancelled by its own cancel
	// only, with its own cause.
	child, stop := context.WithCancel(v)
	if child.Err() != nil {
		t.Fatal("a child is cancelled by the parent's cancellation")
	}
	stop()
	if !errors.Is(context.Cause(child), context.Canceled) {
		t.Fatalf("child's cause = %v, want its own", context.Cause(child))
	}
}

func TestFromLookupsDoNotAllocate(t *testing.T) {
	// A context type of its own above it (ack's, the Process's) calls its
	// Value method; the standard library's WithoutCancel copies itself into
	// an interface there.
	lookup := func(base context.Context) func() {
		ctx := &delegating{base}
		return func() { _ = ctx.Value(missingKey{}) }
	}
	if n := testing.AllocsPerRun(100, lookup(From(context.Background()))); n != 0 {
		t.Fatalf("a lookup that reaches it allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, lookup(context.WithoutCancel(context.Background()))); n == 0 {
		t.Log("context.WithoutCancel no longer allocates per lookup: this package may go")
	}
}

type missingKey struct{}

// delegating is a context type that is not the standard library's, as
// ack's and instrument's are.
type delegating struct{ context.Context }

func (d *delegating) Value(key any) any { return d.Context.Value(key) }
