package bench

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/payload"
)

// BenchmarkPayload prints, for 1 KiB and 1 MiB bodies, the throughput and
// the client CPU per message of publishing and consuming through each
// payload step (and all three) against the plain path, in the same run,
// medians of interleaved rounds:
//
//	cd bench && go test -run '^$' -bench Payload -benchtime 1x
func BenchmarkPayload(b *testing.B) {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	keys, err := payload.NewStaticKeys("k", map[string][]byte{"k": key})
	if err != nil {
		b.Fatal(err)
	}
	store := payload.DirStore{Dir: b.TempDir()}
	steps := []struct {
		name string
		cfg  payload.Config
	}{
		{"plain", payload.Config{}},
		{"gzip", payload.Config{Compression: &payload.Compression{Threshold: 1}}},
		{"aes-256-gcm", payload.Config{Encryption: &payload.Encryption{Keys: keys}}},
		{"claim check (directory)", payload.Config{ClaimCheck: &payload.ClaimCheck{Store: store, Threshold: 1}}},
		{"all three", payload.Config{Compression: &payload.Compression{Threshold: 1}, Encryption: &payload.Encryption{Keys: keys},
			ClaimCheck: &payload.ClaimCheck{Store: store, Threshold: 1}}},
	}
	sizes := []struct {
		name string
		size int
		n    int
	}{{"1 KiB", 1 << 10, 2000}, {"1 MiB", 1 << 20, 60}}
	for range b.N {
		var all [][]row
		for range 3 {
			var rows []row
			for _, sz := range sizes {
				body := orderLike(sz.size)
				for _, st := range steps {
					m, err := payload.NewMarshaler(st.cfg)
					if err != nil {
						b.Fatal(err)
					}
					rows = append(rows, payloadRound(b, "payload "+sz.name, st.name, m, sz.n, body))
				}
			}
			all = append(all, rows)
		}
		rows := medians(all)
		fmt.Printf("\n%-16s %-26s %9s %8s %13s %8s\n", "group", "step", "msg/s", "x plain", "client us/msg", "x plain")
		var base row
		for _, r := range rows {
			if r.name == "plain" {
				base = r
			}
			fmt.Printf("%-16s %-26s %9.0f %8.2f %13.1f %8.2f\n", r.group, r.name, r.rate(), r.rate()/base.rate(), r.cpuPerMsg(), r.cpuPerMsg()/base.cpuPerMsg())
		}
	}
}

// orderLike is a body of size bytes that compresses as JSON does.
func orderLike(size int) []byte {
	var sb strings.Builder
	for i := 0; sb.Len() < size; i++ {
		fmt.Fprintf(&sb, `{"line":%d,"sku":"%s","qty":%d},`, i, watermill.NewShortUUID(), i%7)
	}
	return []byte(sb.String()[:size])
}

// payloadRound publishes n messages of body through m and consumes them
// through m, on a fresh queue; the row is the whole round trip.
func payloadRound(b *testing.B, group, name string, m warren.Marshaler, n int, body []byte) row {
	q := "bench-payload-" + watermill.NewShortUUID()
	freshQueue(b, q)
	defer dropQueue(q)
	c := openWarren(b, conn.Config{})
	defer c.Close(context.Background())
	pub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: warren.ExistingQueues{}, Marshaler: m})
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	sub, err := warren.NewSubscriber(c, warren.SubscriberConfig{Mapping: warren.ExistingQueues{}, Marshaler: m, MaxInFlight: 16})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	got := make(chan struct{}, n)
	if err := sub.SubscribeFunc(ctx, q, func(msg *message.Message) error {
		if len(msg.Payload) != len(body) {
			b.Errorf("a body of %d bytes, want %d", len(msg.Payload), len(body))
		}
		got <- struct{}{}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	return timedRow(group, name, "", n, func() {
		batchOf := 50
		for i := 0; i < n; i += batchOf {
			msgs := make([]*message.Message, 0, batchOf)
			for j := i; j < min(i+batchOf, n); j++ {
				msgs = append(msgs, message.NewMessage(watermill.NewUUID(), body))
			}
			if err := pub.Publish(q, msgs...); err != nil {
				b.Fatal(err)
			}
		}
		for range n {
			<-got
		}
	})
}
