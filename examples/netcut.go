package examples

import (
	"io"
	"net"
	"sync"
)

// Network is a stand-in for the network between an example and its broker,
// which the example can cut: a TCP relay on a loopback port. Connect to
// Addr instead of the broker. (warren's own tests use a fuller fault proxy;
// this one is a few lines of the standard library, to be copied.)
type Network struct {
	upstream string
	addr     string

	mu    sync.Mutex
	ln    net.Listener // nil while cut
	conns []net.Conn
	wg    sync.WaitGroup
}

// NewNetwork starts a relay to upstream ("127.0.0.1:5672").
func NewNetwork(upstream string) (*Network, error) {
	n := &Network{upstream: upstream, addr: "127.0.0.1:0"}
	if err := n.Restore(); err != nil {
		return nil, err
	}
	return n, nil
}

// Addr is where to connect instead of the broker.
func (n *Network) Addr() string { return n.addr }

// Restore accepts connections again after Cut, on the same address.
func (n *Network) Restore() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", n.addr)
	if err != nil {
		return err
	}
	n.ln, n.addr = ln, ln.Addr().String()
	n.wg.Go(func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return // cut
			}
			server, err := net.Dial("tcp", n.upstream)
			if err != nil {
				client.Close()
				continue
			}
			n.mu.Lock()
			n.conns = append(n.conns, client, server)
			n.mu.Unlock()
			relay := func(dst, src net.Conn) {
				_, _ = io.Copy(dst, src)
				dst.Close() // one side gone: so is the other
				src.Close()
			}
			n.wg.Go(func() { relay(server, client) })
			n.wg.Go(func() { relay(client, server) })
		}
	})
	return nil
}

// Drop closes every live connection, as a network blip does; new ones are
// accepted.
func (n *Network) Drop() {
	n.mu.Lock()
	conns := n.conns
	n.conns = nil
	n.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// Cut drops every connection and refuses new ones until Restore.
func (n *Network) Cut() {
	n.mu.Lock()
	ln := n.ln
	n.ln = nil
	n.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	n.Drop()
}

// Close cuts the network for good and waits for the relay to end.
func (n *Network) Close() {
	n.Cut()
	n.wg.Wait()
}
