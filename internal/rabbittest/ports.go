package rabbittest

import (
	"fmt"
	"net"
	"time"
)

// freePort asks the kernel for a port that is free on loopback right now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("rabbittest: no free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
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
