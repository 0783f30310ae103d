// Cluster: a multi-host URL. The first host is down; the connection fails
// over to the next one. With a real cluster, list every node.
package main

import (
	"fmt"
	"log"
	"net"
	"time"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/examples"
)

func main() {
	ctx, cancel := examples.Context(time.Minute)
	defer cancel()
	u, err := conn.ParseURL(examples.URL())
	if err != nil {
		log.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0") // a port with no broker behind it
	if err != nil {
		log.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	url := fmt.Sprintf("amqp://guest:guest@%s,%s/", dead, u.Hosts[0])
	c, err := conn.New(url, conn.Config{FirstConnect: conn.RetryPolicy{MaxAttempts: 4, FirstRetryImmediate: true}})
	if err != nil {
		log.Fatal(err)
	}
	c.OnStateChange(func(ch conn.StateChange) { fmt.Println(ch) })
	if err := c.Open(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("connected to %s (URL %s)\n", c.Endpoint(), url[:len("amqp://guest:")]+"xxxxx@...")
	if err := c.Close(ctx); err != nil {
		log.Fatal(err)
	}
}
