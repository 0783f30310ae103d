package rabbittest

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy is a TCP fault proxy in front of a broker: clients connect to Addr,
// the proxy forwards to the upstream broker, and the test cuts, drops,
// stalls or slows the traffic. It is a few hundred lines of the standard
// library (toxiproxy would bring gorilla/mux, zerolog and Prometheus into
// the build of every module that imports warrentest), and Close waits for
// every goroutine it started, so goleak needs no exceptions for it.
type Proxy struct {
	upstream string
	addr     string

	mu      sync.Mutex
	ln      net.Listener // nil while cut
	links   map[*link]struct{}
	stalled chan struct{} // non-nil while stalled; closed by Heal
	latency time.Duration
	closed  bool
	wg      sync.WaitGroup // the accept loops and the pipes
}

// link is one client connection and its upstream connection.
type link struct {
	client, server net.Conn
	once           sync.Once
	done           chan struct{}
}

func (l *link) close() {
	l.once.Do(func() {
		_ = l.client.Close()
		_ = l.server.Close()
		close(l.done)
	})
}

// upstreamDialTimeout bounds the proxy's dial of the broker for each client.
const upstreamDialTimeout = 10 * time.Second

// NewProxy starts a proxy to upstream ("127.0.0.1:5672") on a free loopback
// port; it is stopped when t ends.
func NewProxy(t testing.TB, upstream string) *Proxy {
	t.Helper()
	p, err := StartProxy(upstream)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// StartProxy starts a proxy outside a test; the caller must Close it.
func StartProxy(upstream string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("rabbittest: start proxy: %w", err)
	}
	p := &Proxy{upstream: upstream, addr: ln.Addr().String(), ln: ln, links: map[*link]struct{}{}}
	p.wg.Add(1)
	go p.accept(ln)
	return p, nil
}

// Addr is where clients connect ("127.0.0.1:PORT"). It stays the same across
// Cut/Restore.
func (p *Proxy) Addr() string { return p.addr }

// URL is an AMQP URL through the proxy to vhost.
func (p *Proxy) URL(vhost string) string {
	u := "amqp://guest:guest@" + p.Addr() + "/"
	if vhost != "/" && vhost != "" {
		u += vhost
	}
	return u
}

func (p *Proxy) accept(ln net.Listener) {
	defer p.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return // Cut or Close
		}
		up, err := net.DialTimeout("tcp", p.upstream, upstreamDialTimeout)
		if err != nil {
			_ = c.Close() // the broker is down: so is the path through the proxy
			continue
		}
		l := &link{client: c, server: up, done: make(chan struct{})}
		p.mu.Lock()
		if p.closed || p.ln != ln {
			p.mu.Unlock()
			l.close()
			continue
		}
		p.links[l] = struct{}{}
		p.wg.Add(2)
		p.mu.Unlock()
		go p.pipe(l, c, up)
		go p.pipe(l, up, c)
	}
}

// pipe forwards src to dst, holding each chunk while the proxy is stalled
// and delaying it while it is slow; the link closes when either side ends.
func (p *Proxy) pipe(l *link, src, dst net.Conn) {
	defer p.wg.Done()
	defer func() {
		l.close()
		p.mu.Lock()
		delete(p.links, l)
		p.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.flow(l) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF, or the link closed: either way the other side goes too
		}
	}
}

// flow waits while the proxy is stalled and for its latency; false when the
// link closed meanwhile.
func (p *Proxy) flow(l *link) bool {
	p.mu.Lock()
	stalled, latency := p.stalled, p.latency
	p.mu.Unlock()
	if stalled != nil {
		select {
		case <-stalled:
		case <-l.done:
			return false
		}
	}
	if latency > 0 {
		t := time.NewTimer(latency)
		defer t.Stop()
		select {
		case <-t.C:
		case <-l.done:
			return false
		}
	}
	return true
}

// dropLinks closes every live connection.
func (p *Proxy) dropLinks() {
	p.mu.Lock()
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	for _, l := range links {
		l.close()
	}
}

// Cut closes every live connection and refuses new ones until Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	ln := p.ln
	p.ln = nil
	p.mu.Unlock()
	if ln != nil {
		_ = ln.Close()
	}
	p.dropLinks()
}

// Restore accepts connections again after Cut (on the same address).
func (p *Proxy) Restore() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("rabbittest: restore a closed proxy")
	}
	if p.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		return fmt.Errorf("rabbittest: restore proxy: %w", err)
	}
	p.ln = ln
	p.wg.Add(1)
	go p.accept(ln)
	return nil
}

// Drop closes every live connection but keeps accepting new ones: a network
// blip.
func (p *Proxy) Drop() error {
	p.dropLinks()
	return nil
}

// Stall stops forwarding data in both directions while keeping connections
// open: a half-open network that only heartbeats can notice. What was sent
// meanwhile is held, and goes on after Heal.
func (p *Proxy) Stall() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stalled == nil {
		p.stalled = make(chan struct{})
	}
	return nil
}

// Slow adds latency (ms) to every chunk in both directions.
func (p *Proxy) Slow(ms int) error {
	if ms < 0 {
		return fmt.Errorf("rabbittest: negative latency %dms", ms)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.latency = time.Duration(ms) * time.Millisecond
	return nil
}

// Heal removes every stall and slow-down.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stalled != nil {
		close(p.stalled)
		p.stalled = nil
	}
	p.latency = 0
}

// Close stops the proxy for good and waits for its goroutines.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.Heal()
	p.Cut()
	p.wg.Wait()
}
