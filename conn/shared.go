package conn

import (
	"context"
	"fmt"
	"strings"
	"sync"
)

// SharedConn is a handle on a connection shared by every handle made with
// the same URL and options: one underlying Conn, reference-counted. A handle
// counts once it is opened; the last handle to close closes the connection.
// Closing a handle twice, or one that was never opened, affects nobody else
// (rmqaio's SharedConnection closed everyone's connection in that case).
type SharedConn struct {
	key string
	url string
	cfg Config

	mu     sync.Mutex
	entry  *sharedEntry
	closed bool
}

type sharedEntry struct {
	conn *Conn
	refs int
}

var sharedConns = struct {
	sync.Mutex
	m map[string]*sharedEntry
}{m: map[string]*sharedEntry{}}

// Shared returns a handle on the connection shared by url and cfg. Handles
// share a connection when the URL and these Config fields are equal:
// AlternateURLs, ShuffleHosts, the retry policies' descriptions, TLS (the same
// pointer), Heartbeat, DialTimeout, DirectWrites, OperationTimeout,
// ConnectionName and Properties. The Logger, Telemetry and Credentials
// provider of the first handle to open are the ones used (functions cannot
// be compared: two handles with different providers share the first's).
func Shared(url string, cfg Config) (*SharedConn, error) {
	// Everything New refuses is refused here, not at Open (New only
	// checks: it dials nothing and starts nothing); its Config, defaults
	// applied, is what the key compares.
	c, err := New(url, cfg)
	if err != nil {
		return nil, err
	}
	probe := c.cfg
	key := strings.Join([]string{
		url,
		strings.Join(cfg.AlternateURLs, " "),
		fmt.Sprint(cfg.ShuffleHosts, cfg.FirstConnect, cfg.Reconnect),
		fmt.Sprintf("%p", cfg.TLS),
		fmt.Sprint(probe.Heartbeat, probe.DialTimeout, probe.DirectWrites, probe.OperationTimeout, probe.CloseTimeout),
		probe.ConnectionName,
		fmt.Sprint(cfg.Properties),
	}, "\x00")
	return &SharedConn{key: key, url: url, cfg: cfg}, nil
}

// Open takes a reference on the shared connection (creating and opening it
// for the first handle) and waits like Conn.Open. Opening an opened handle
// only waits. After Close it returns ErrClosed.
func (s *SharedConn) Open(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if s.entry == nil {
		sharedConns.Lock()
		e := sharedConns.m[s.key]
		if e == nil || e.conn.State().Terminal() {
			// A connection that gave up stays with the handles that hold it;
			// new handles get a fresh one.
			c, err := New(s.url, s.cfg)
			if err != nil {
				sharedConns.Unlock()
				s.mu.Unlock()
				return err
			}
			e = &sharedEntry{conn: c}
			sharedConns.m[s.key] = e
		}
		e.refs++
		s.entry = e
		sharedConns.Unlock()
	}
	c := s.entry.conn
	s.mu.Unlock()
	return c.Open(ctx)
}

// Conn is the shared connection, nil before Open. Do not Close it directly:
// close the handle.
func (s *SharedConn) Conn() *Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.entry == nil {
		return nil
	}
	return s.entry.conn
}

// Refs is how many opened handles share this handle's connection (0 before
// Open and after Close).
func (s *SharedConn) Refs() int {
	s.mu.Lock()
	e, closed := s.entry, s.closed
	s.mu.Unlock()
	if e == nil || closed {
		return 0
	}
	sharedConns.Lock()
	defer sharedConns.Unlock()
	return e.refs
}

// Close releases the handle's reference; the last one closes the connection,
// waiting like Conn.Close. Idempotent; a handle never opened releases nothing.
func (s *SharedConn) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	e := s.entry
	s.mu.Unlock()
	if e == nil {
		return nil
	}
	sharedConns.Lock()
	e.refs--
	last := e.refs == 0
	if last && sharedConns.m[s.key] == e {
		delete(sharedConns.m, s.key)
	}
	sharedConns.Unlock()
	if last {
		return e.conn.Close(ctx)
	}
	return nil
}
