package conn

import (
	"fmt"
	"log/slog"
	"sync"
	"time"
)

type namedCallback struct {
	name string
	fn   func(StateChange)
}

// dispatcher delivers state changes to callbacks on one goroutine of its own,
// in order. The connection loop only appends to an unbounded queue, so a slow,
// blocking or panicking callback can never stall reconnecting.
type dispatcher struct {
	log *slog.Logger

	mu        sync.Mutex
	cond      *sync.Cond
	queue     []StateChange
	callbacks []namedCallback
	closed    bool
	started   bool
	done      chan struct{}
}

func newDispatcher(log *slog.Logger) *dispatcher {
	d := &dispatcher{log: log, done: make(chan struct{})}
	d.cond = sync.NewCond(&d.mu)
	return d
}

func (d *dispatcher) add(name string, fn func(StateChange)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, cb := range d.callbacks {
		if cb.name == name {
			d.callbacks[i].fn = fn
			return
		}
	}
	d.callbacks = append(d.callbacks, namedCallback{name, fn})
}

func (d *dispatcher) remove(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, cb := range d.callbacks {
		if cb.name == name {
			d.callbacks = append(d.callbacks[:i:i], d.callbacks[i+1:]...)
			return true
		}
	}
	return false
}

func (d *dispatcher) emit(ch StateChange) {
	d.mu.Lock()
	if !d.closed {
		d.queue = append(d.queue, ch)
		// Started by the first change, so a Conn that is made but never
		// opened owns no goroutine and needs no Close.
		if !d.started {
			d.started = true
			go d.run()
		}
		d.cond.Signal()
	}
	d.mu.Unlock()
}

func (d *dispatcher) run() {
	defer close(d.done)
	for {
		d.mu.Lock()
		for len(d.queue) == 0 && !d.closed {
			d.cond.Wait()
		}
		if len(d.queue) == 0 {
			d.mu.Unlock()
			return
		}
		ev := d.queue[0]
		d.queue = d.queue[1:]
		cbs := append([]namedCallback(nil), d.callbacks...)
		d.mu.Unlock()
		for _, cb := range cbs {
			d.call(cb, ev)
		}
	}
}

func (d *dispatcher) call(cb namedCallback, ev StateChange) {
	defer func() {
		if r := recover(); r != nil {
			d.log.Error("conn: state callback panicked", "callback", cb.name, "change", ev.String(), "panic", fmt.Sprint(r))
		}
	}()
	cb.fn(ev)
}

// close delivers what is queued, then stops. It waits at most wait for a
// callback that blocks; such a goroutine is left to finish on its own.
func (d *dispatcher) close(wait time.Duration) {
	d.mu.Lock()
	d.closed = true
	started := d.started
	d.cond.Signal()
	d.mu.Unlock()
	if !started {
		return
	}
	select {
	case <-d.done:
	case <-time.After(wait):
		d.log.Error("conn: a state callback is still running after Close; not waiting for it")
	}
}
