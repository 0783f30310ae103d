package conn_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
)

// TestHeartbeatIsWhatTheBrokerNegotiates: the interval a connection asks
// for is the one the broker lists for it (rabbitmqctl list_connections
// timeout), and the URL's heartbeat=0 takes the broker's own, not
// amqp091-go's 10s default.
func TestHeartbeatIsWhatTheBrokerNegotiates(t *testing.T) {
	b := rabbittest.Shared(t)
	out, err := rabbittest.Ctl(ctxT(t, 30*time.Second), "", "eval", "application:get_env(rabbit, heartbeat).")
	if err != nil {
		t.Fatal(err)
	}
	// {ok,60}
	brokers := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(out), "{ok,"), "}")
	for _, tc := range []struct {
		name, query string
		cfg         conn.Config
		want        string
	}{
		{name: "default", want: "10"},
		{name: "config", cfg: conn.Config{Heartbeat: 3 * time.Second}, want: "3"},
		{name: "url", query: "&heartbeat=4", want: "4"},
		{name: "brokers", query: "&heartbeat=0", want: brokers},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := b.Prefix + "heartbeat-" + tc.name
			rabbittest.OpenConn(t, b.URL+"?connection_name="+name+tc.query, tc.cfg)
			if got := brokerSays(t, name, "timeout"); got != tc.want {
				t.Fatalf("the broker lists a heartbeat of %q s, want %q", got, tc.want)
			}
		})
	}
}

// TestHeartbeatInWholeSeconds: AMQP negotiates heartbeats in seconds, and
// amqp091-go truncates: a part of a second would silently be the broker's
// interval (60s by default), so New refuses it.
func TestHeartbeatInWholeSeconds(t *testing.T) {
	for _, hb := range []time.Duration{500 * time.Millisecond, 1500 * time.Millisecond, 65536 * time.Second} {
		_, err := conn.New("amqp://h", conn.Config{Heartbeat: hb})
		var ce *conn.ConfigError
		if !errors.As(err, &ce) || ce.Field != "conn.Config.Heartbeat" {
			t.Fatalf("Heartbeat %v: %v, want a ConfigError naming conn.Config.Heartbeat", hb, err)
		}
	}
	if _, err := conn.New("amqp://h", conn.Config{Heartbeat: 2 * time.Second}); err != nil {
		t.Fatalf("Heartbeat 2s: %v", err)
	}
}
