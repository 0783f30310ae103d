package conn_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
)

// BenchmarkReconnectAfterCut measures the time from a connection cut (the
// fault proxy drops every connection) to Connected again with the default
// reconnect policy, over 20 cuts per iteration. It reports the median and
// the worst in ms; the goal is a median under 200ms (Java, .NET and
// amqp091-go's own recovery wait 5s by default).
//
//	go test -run '^$' -bench ReconnectAfterCut ./conn
func BenchmarkReconnectAfterCut(b *testing.B) {
	sh := rabbittest.Shared(b)
	p := rabbittest.NewProxy(b, rabbittest.SharedAddr)
	c, err := conn.New(p.URL(sh.Vhost), conn.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close(context.Background())
	connected := make(chan time.Time, 1)
	c.OnStateChange(func(ch conn.StateChange) {
		if ch.To == conn.StateConnected && ch.From == conn.StateReconnecting {
			connected <- time.Now()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Open(ctx); err != nil {
		b.Fatal(err)
	}
	var samples []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := 0; j < 20; j++ {
			start := time.Now()
			if err := p.Drop(); err != nil {
				b.Fatal(err)
			}
			select {
			case at := <-connected:
				samples = append(samples, at.Sub(start))
			case <-time.After(30 * time.Second):
				b.Fatal("no reconnect within 30s")
			}
		}
	}
	b.StopTimer()
	slices.Sort(samples)
	b.ReportMetric(float64(samples[len(samples)/2].Microseconds())/1000, "median-ms")
	b.ReportMetric(float64(samples[len(samples)-1].Microseconds())/1000, "max-ms")
	b.ReportMetric(200/(float64(samples[len(samples)/2].Microseconds())/1000), "x-under-goal")
}
