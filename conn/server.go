package conn

import amqp "github.com/rabbitmq/amqp091-go"

// ServerVersion is the version the broker of the current connection
// reported in its server properties at connection.start ("3.10.7",
// "4.1.0"), the last one's while it reconnects, and "" before the first
// connection. A cluster's nodes may run different versions during an
// upgrade: each connection reports its node's.
func (c *Conn) ServerVersion() string {
	if v := c.serverVersion.Load(); v != nil {
		return *v
	}
	return ""
}

// setServerVersion records what ac's broker reported.
func (c *Conn) setServerVersion(ac *amqp.Connection) {
	var v string
	switch x := ac.Properties["version"].(type) {
	case string:
		v = x
	case []byte:
		v = string(x)
	}
	c.serverVersion.Store(&v)
}
