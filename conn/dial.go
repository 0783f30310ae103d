package conn

import (
	"crypto/tls"
	"net"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// dialer is what amqp091-go dials with: its default dialer (TCP connect,
// and a deadline over the TLS and AMQP handshakes that amqp091-go clears
// once open), writes coalesced unless direct is set, the TLS handshake
// when tlsConfig is set (an amqps host), and the frame guard on top, where
// amqp091-go writes its frames.
//
// The TLS handshake is here rather than amqp091-go's (which it does for an
// amqps URL, over whatever the dialer returns) so that the guard reads
// AMQP frames, not TLS records.
func dialer(timeout time.Duration, direct bool, tlsConfig *tls.Config) func(network, addr string) (net.Conn, error) {
	dial := amqp.DefaultDial(timeout)
	return func(network, addr string) (net.Conn, error) {
		c, err := dial(network, addr)
		if err != nil {
			return nil, err
		}
		if !direct {
			c = newCoalescingConn(c)
		}
		if tlsConfig != nil {
			cfg := tlsConfig.Clone()
			if cfg.ServerName == "" {
				// As amqp091-go: the certificate is checked against the
				// host dialled.
				cfg.ServerName, _, _ = net.SplitHostPort(addr)
			}
			tc := tls.Client(c, cfg)
			if err := tc.Handshake(); err != nil {
				_ = c.Close()
				return nil, err
			}
			c = tc
		}
		return newFrameGuard(c), nil
	}
}
