package rabbittest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Proxy is a TCP fault proxy in front of a broker: clients connect to
// Addr, the proxy forwards to the upstream broker, and the test can cut,
// stall or slow the traffic. It is toxiproxy, used in-process.
type Proxy struct {
	p *toxiproxy.Proxy

	mu     sync.Mutex
	toxics []string
}

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
	server := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(server, "rabbittest", "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		return nil, fmt.Errorf("rabbittest: start proxy: %w", err)
	}
	return &Proxy{p: p}, nil
}

// Addr is where clients connect ("127.0.0.1:PORT"). It stays the same across
// Cut/Restore.
func (p *Proxy) Addr() string { return p.p.Listen }

// URL is an AMQP URL through the proxy to vhost.
func (p *Proxy) URL(vhost string) string {
	u := "amqp://guest:guest@" + p.Addr() + "/"
	if vhost != "/" && vhost != "" {
		u += vhost
	}
	return u
}

// Cut closes every live connection and refuses new ones until Restore.
func (p *Proxy) Cut() { p.p.Stop() }

// Restore accepts connections again after Cut (on the same address).
func (p *Proxy) Restore() error {
	if err := p.p.Start(); err != nil && err != toxiproxy.ErrProxyAlreadyStarted {
		return fmt.Errorf("rabbittest: restore proxy: %w", err)
	}
	return nil
}

// Drop closes every live connection but keeps accepting new ones: a network
// blip.
func (p *Proxy) Drop() error {
	p.Cut()
	return p.Restore()
}

// Stall stops forwarding data in both directions while keeping connections
// open: a half-open network that only heartbeats can notice. Unstall ends it.
func (p *Proxy) Stall() error {
	return p.addToxic("stall", `{"type":"timeout","attributes":{"timeout":0}}`)
}

// Slow adds latency (ms) to every chunk in both directions.
func (p *Proxy) Slow(ms int) error {
	return p.addToxic("slow", fmt.Sprintf(`{"type":"latency","attributes":{"latency":%d}}`, ms))
}

// Heal removes every stall and slow-down.
func (p *Proxy) Heal() {
	p.mu.Lock()
	names := p.toxics
	p.toxics = nil
	p.mu.Unlock()
	for _, n := range names {
		_ = p.p.Toxics.RemoveToxic(context.Background(), n)
	}
}

func (p *Proxy) addToxic(kind, body string) error {
	for _, stream := range []string{"upstream", "downstream"} {
		name := kind + "_" + stream
		js := strings.Replace(body, "{", fmt.Sprintf(`{"name":%q,"stream":%q,`, name, stream), 1)
		if _, err := p.p.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
			return fmt.Errorf("rabbittest: toxic %s: %w", name, err)
		}
		p.mu.Lock()
		p.toxics = append(p.toxics, name)
		p.mu.Unlock()
	}
	return nil
}

// Close stops the proxy for good.
func (p *Proxy) Close() {
	p.Heal()
	p.p.Stop()
}
