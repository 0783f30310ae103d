package rabbittest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"time"
)

// freePort picks a port that is free on loopback right now, below the
// kernel's ephemeral range. A port from that range (what a listen on port 0
// gives) can be taken, between this check and the node's own bind, as the
// local port of any outgoing connection, and the suites open thousands: a
// node then failed to boot with dist_port_already_used, more often the
// more suites ran side by side. Below the range only another listener
// competes, and boot tries again with other ports if one does.
func freePort() (int, error) {
	lo, hi := portsBelowEphemeral()
	for range 500 {
		p := lo + rand.IntN(hi-lo)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		return p, nil
	}
	return 0, fmt.Errorf("rabbittest: no free port in %d-%d", lo, hi)
}

// choosePort is freePort; a test replaces it to hand a node a taken port.
var choosePort = freePort

// portsBelowEphemeral is the range freePort draws from: from 10000 up to
// the start of the kernel's ephemeral range (32768 by default).
func portsBelowEphemeral() (lo, hi int) {
	lo, hi = 10000, 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var first, last int
		if _, err := fmt.Sscan(string(b), &first, &last); err == nil && first > lo+1000 {
			hi = first
		}
	}
	return lo, hi
}

// portTaken reports a node that could not boot because one of its ports was
// taken after freePort chose it (RabbitMQ's dist_port_already_used, or
// eaddrinuse for its listener): boot tries again with other ports.
func portTaken(err error) bool {
	s := err.Error()
	return strings.Contains(s, "already_used") || strings.Contains(s, "eaddrinuse")
}

// waitPort polls addr until it accepts a TCP connection or timeout passes.
func waitPort(addr string, timeout time.Duration, alive func() bool) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if alive != nil && !alive() {
			return fmt.Errorf("rabbittest: process exited before %s accepted connections", addr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("rabbittest: %s did not accept connections within %s", addr, timeout)
}
