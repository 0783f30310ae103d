package conn_test

import (
	"testing"
	"time"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
)

// TestLoginWithTheMechanismTheURLNames: a URL's auth_mechanism is what the
// connection logs in with, as the broker itself reports the connection
// (rabbitmqctl list_connections auth_mechanism); the first the broker offers
// wins, and without one it is PLAIN.
func TestLoginWithTheMechanismTheURLNames(t *testing.T) {
	b := rabbittest.Shared(t)
	for _, tc := range []struct{ name, query, want string }{
		{"default", "", "PLAIN"},
		{"amqplain", "&auth_mechanism=amqplain", "AMQPLAIN"},
		{"amqplain-then-plain", "&auth_mechanism=amqplain&auth_mechanism=plain", "AMQPLAIN"},
		{"plain-then-amqplain", "&auth_mechanism=plain&auth_mechanism=amqplain", "PLAIN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := b.Prefix + "login-" + tc.name
			c := rabbittest.OpenConn(t, b.URL+"?connection_name="+name+tc.query, conn.Config{})
			ctx := ctxT(t, 30*time.Second)
			ch, err := c.Channel(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ch.QueueDeclare(ctx, "", false, true, true, false, nil); err != nil {
				t.Fatalf("a channel's call after logging in with %s: %v", tc.want, err)
			}
			if got := brokerSays(t, name, "auth_mechanism"); got != tc.want {
				t.Fatalf("the broker says the connection logged in with %q, want %q", got, tc.want)
			}
		})
	}
}
