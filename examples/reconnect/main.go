// Reconnect: state callbacks printed while the network to the broker is
// cut and restored (examples.Network, a relay in front of the broker).
package main

import (
	"fmt"
	"log"
	"time"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/examples"
	"github.com/warrenmq/warren/retry"
)

func main() {
	ctx, cancel := examples.Context(time.Minute)
	defer cancel()
	u, err := conn.ParseURL(examples.URL())
	if err != nil {
		log.Fatal(err)
	}
	network, err := examples.NewNetwork(u.Hosts[0])
	if err != nil {
		log.Fatal(err)
	}
	defer network.Close()
	c, err := conn.New("amqp://guest:guest@"+network.Addr()+"/", conn.Config{
		Reconnect: conn.RetryPolicy{FirstRetryImmediate: true, Backoff: retry.Backoff{InitialInterval: 100 * time.Millisecond, MaxInterval: time.Second}},
	})
	if err != nil {
		log.Fatal(err)
	}
	start := time.Now()
	c.OnStateChange(func(ch conn.StateChange) {
		fmt.Printf("%6.0fms  %s\n", float64(time.Since(start).Microseconds())/1000, ch)
	})
	if err := c.Open(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("-- cutting the network for 1s")
	network.Cut()
	time.Sleep(time.Second)
	if err := network.Restore(); err != nil {
		log.Fatal(err)
	}
	if err := c.WaitConnected(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("-- back; closing")
	if err := c.Close(ctx); err != nil {
		log.Fatal(err)
	}
}
