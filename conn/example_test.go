package conn_test

import (
	"context"
	"fmt"
	"time"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/retry"
)

// A connection with a reconnect policy of its own, a state callback and a
// restore hook.
func Example() {
	c, err := conn.New("amqp://guest:guest@127.0.0.1:5672/", conn.Config{
		Reconnect: conn.RetryPolicy{FirstRetryImmediate: true, Backoff: retry.Backoff{MaxInterval: 2 * time.Second}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	c.OnStateChange(func(ch conn.StateChange) { fmt.Println(ch.From, "->", ch.To) })
	c.OnRestore(func(ctx context.Context) error {
		ch, err := c.Channel(ctx) // bound to the new connection: does not wait
		if err != nil {
			return err
		}
		_, err = ch.QueueDeclare(context.Background(), "", false, true, true, false, nil)
		return err
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Open(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close(ctx)
	fmt.Println(c.State())
}

// Bad URLs fail in New, naming the parameter at fault; the password is never
// shown.
func ExampleParseURL() {
	_, err := conn.ParseURL("amqp://user:secret@h1,h2/vh?heartbeat=often")
	fmt.Println(err)
	u, _ := conn.ParseURL("amqp://user:secret@h1,h2:5673/vh?connection_timeout=500")
	fmt.Println(u, u.Options.ConnectionTimeout)
	// Output:
	// conn: invalid URL heartbeat "often": want seconds 0-65535
	// amqp://user:xxxxx@h1:5672,h2:5673/vh 500ms
}
