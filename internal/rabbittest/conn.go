package rabbittest

import (
	"context"
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/conn"
)

// OpenConn opens a warren connection to url with cfg, failing t if it
// cannot, and closes it when t ends.
func OpenConn(t testing.TB, url string, cfg conn.Config) *conn.Conn {
	t.Helper()
	c, err := conn.New(url, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	})
	return c
}

// RawChannel is a plain amqp091 channel on url, for looking at the broker
// from outside warren; its connection closes when t ends.
func RawChannel(t testing.TB, url string) *amqp.Channel {
	t.Helper()
	c, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// Eventually polls cond until it holds, failing t with what after within
// (and, given, what state says things are at then): the tests' one way to
// wait for the broker or a client to get somewhere, never a sleep that
// hopes it did.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool, state ...func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			msg := fmt.Sprintf("timed out after %s waiting for %s", within, what)
			for _, s := range state {
				msg += ": " + s()
			}
			t.Fatal(msg)
		}
		time.Sleep(pollInterval)
	}
}

// pollInterval is how often Eventually looks: often enough that a test
// waits no longer than it must, seldom enough to leave the CPU to the
// broker.
const pollInterval = 5 * time.Millisecond
