package conn

import (
	"log/slog"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// generation is one underlying AMQP connection. Every channel belongs to
// exactly one; when it is lost, its channels and their delivery tags are dead
// with it (PITFALLS 4).
type generation struct {
	id       uint64
	endpoint string
	amqp     *amqp.Connection
	log      *slog.Logger
	spawn    func(func()) bool

	lost     chan struct{} // closed when the AMQP connection is gone
	lostOnce sync.Once
	mu       sync.Mutex
	lostErr  error

	blocked      bool
	blockedSince time.Time
	unblocked    chan struct{} // closed when a block ends; replaced on block
	onUnblock    func(time.Duration)
}

func newGeneration(id uint64, ac *amqp.Connection, spawn func(func()) bool, log *slog.Logger, onUnblock func(time.Duration)) *generation {
	g := &generation{
		id:        id,
		onUnblock: onUnblock,
		amqp:      ac,
		log:       log,
		spawn:     spawn,
		lost:      make(chan struct{}),
		unblocked: make(chan struct{}),
	}
	close(g.unblocked)
	// Every notify channel is buffered and drained until amqp091 closes it,
	// so the library never blocks on us (PITFALLS 1).
	closeCh := ac.NotifyClose(make(chan *amqp.Error, 1))
	blockedCh := ac.NotifyBlocked(make(chan amqp.Blocking, 8))
	spawn(func() {
		e, ok := <-closeCh
		if ok && e != nil {
			g.markLost(e)
		} else {
			g.markLost(amqp.ErrClosed)
		}
	})
	spawn(func() {
		for b := range blockedCh {
			g.setBlocked(b.Active, b.Reason)
		}
	})
	return g
}

func (g *generation) markLost(err error) {
	g.lostOnce.Do(func() {
		g.mu.Lock()
		g.lostErr = err
		blocked, since := g.blocked, g.blockedSince
		g.mu.Unlock()
		if blocked && g.onUnblock != nil {
			g.onUnblock(time.Since(since)) // the block ends with the connection
		}
		close(g.lost)
	})
}

func (g *generation) err() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.lostErr
}

func (g *generation) isLost() bool {
	select {
	case <-g.lost:
		return true
	default:
		return false
	}
}

// close ends the AMQP connection, bounded: amqp091's Close has no timeout of
// its own (PITFALLS 2).
func (g *generation) close(timeout time.Duration) {
	_ = g.amqp.CloseDeadline(time.Now().Add(timeout))
	g.markLost(amqp.ErrClosed)
}

// broken is called when an RPC on this connection timed out: the broker may
// still apply the call later, so nothing on this connection can be trusted.
func (g *generation) broken(timeout time.Duration) {
	g.log.Warn("conn: an AMQP call timed out; dropping the connection", "generation", g.id)
	if !g.spawn(func() { g.close(timeout) }) {
		g.markLost(ErrTimeout)
	}
}

func (g *generation) setBlocked(active bool, reason string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if active == g.blocked {
		return
	}
	g.blocked = active
	if active {
		g.blockedSince = time.Now()
		g.unblocked = make(chan struct{})
		g.log.Warn("conn: blocked by the broker", "reason", reason, "generation", g.id)
	} else {
		close(g.unblocked)
		g.log.Info("conn: unblocked", "generation", g.id)
		if g.onUnblock != nil {
			g.onUnblock(time.Since(g.blockedSince))
		}
	}
}

func (g *generation) blockState() (bool, <-chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.blocked, g.unblocked
}
