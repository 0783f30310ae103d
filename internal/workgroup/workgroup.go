// Package workgroup lets a component start its goroutines through itself and
// wait for them in its Close: each goroutine has a name, so a Close whose
// deadline passes says exactly what is still running instead of returning
// with goroutines left behind.
package workgroup

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Group is a set of named goroutines of one owner. The zero value is ready.
type Group struct {
	mu      sync.Mutex
	closed  bool
	running []named // a few names at most: a slice costs less than a map
	wg      sync.WaitGroup
}

// named is a name and how many goroutines run under it. The name is kind
// and name apart ("consumer", a tag), joined only when reported: a
// goroutine per consumer would otherwise cost a string per consumer.
type named struct {
	kind, name string
	n          int
}

func (g *Group) add(kind, name string, d int) {
	for i := range g.running {
		if g.running[i].kind == kind && g.running[i].name == name {
			if g.running[i].n += d; g.running[i].n == 0 {
				g.running = append(g.running[:i], g.running[i+1:]...)
			}
			return
		}
	}
	g.running = append(g.running, named{kind, name, d})
}

// Go runs fn on a goroutine named name, unless the group was closed (then
// fn does not run and Go returns false).
func (g *Group) Go(name string, fn func()) bool { return g.GoAs("", name, fn) }

// GoAs is Go for a goroutine named kind and name ("consumer" and its tag),
// reported as "kind name".
func (g *Group) GoAs(kind, name string, fn func()) bool {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return false
	}
	g.add(kind, name, 1)
	g.wg.Add(1)
	g.mu.Unlock()
	go func() {
		defer func() {
			g.mu.Lock()
			g.add(kind, name, -1)
			g.mu.Unlock()
			g.wg.Done()
		}()
		fn()
	}()
	return true
}

// Close refuses new goroutines; the running ones go on.
func (g *Group) Close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

// Running names the goroutines still running, with a count where a name runs
// more than once ("consumer (3)").
func (g *Group) Running() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]string, 0, len(g.running))
	for _, r := range g.running {
		name := r.name
		if r.kind != "" {
			name = r.kind + " " + name
		}
		if r.n > 1 {
			name = fmt.Sprintf("%s (%d)", name, r.n)
		}
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// Wait blocks until every goroutine has ended, or ctx ends first: then the
// error names what is still running and wraps ctx.Err().
func (g *Group) Wait(ctx context.Context, owner string) error {
	done := make(chan struct{})
	go func() {
		g.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		if running := g.Running(); len(running) > 0 {
			return &StillRunningError{Owner: owner, Running: running, Err: ctx.Err()}
		}
		<-done // every goroutine is past its last line
		return nil
	}
}

// StillRunningError is a Close whose deadline passed with goroutines of its
// owner still running.
type StillRunningError struct {
	Owner   string
	Running []string
	Err     error
}

func (e *StillRunningError) Error() string {
	return fmt.Sprintf("%s: closed with goroutines still running: %s: %v", e.Owner, strings.Join(e.Running, ", "), e.Err)
}

func (e *StillRunningError) Unwrap() error { return e.Err }
