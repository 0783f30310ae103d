package conn

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"sync/atomic"

	"github.com/warrenmq/warren/internal/instrument"
	"github.com/warrenmq/warren/telemetry"
)

// connSeq numbers the connections of the process, for client ids.
var connSeq atomic.Uint64

// newClientID is messaging.client.id for a connection named name: unique
// per connection, and readable ("orders@host-1@4242@3").
func newClientID(name string) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return fmt.Sprintf("%s@%s@%d@%d", name, host, os.Getpid(), connSeq.Add(1))
}

// telemetry is the connection's telemetry (Config.Telemetry), the default
// of every component on it.
func (c *Conn) telemetry() *telemetry.Telemetry { return c.cfg.Telemetry }

// peerNow is the broker the connection is on now and the client's id, for
// telemetry; the last broker it was on while it reconnects. Cheap: read on
// every message.
func (c *Conn) peerNow() instrument.Peer {
	if p := c.peer.Load(); p != nil {
		return *p
	}
	return instrument.Peer{ClientID: c.clientID}
}

// setPeer records ep as the broker the connection is on.
func (c *Conn) setPeer(ep endpoint) {
	host, port := ep.host, 0
	if h, p, err := net.SplitHostPort(ep.host); err == nil {
		host = h
		port, _ = strconv.Atoi(p)
	}
	c.peer.Store(&instrument.Peer{Address: host, Port: port, ClientID: c.clientID})
}
