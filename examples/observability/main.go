// Observability: warren's metrics on a Prometheus /metrics endpoint,
// through the OpenTelemetry Prometheus exporter, and the Grafana dashboard
// for them (grafana/warren.json).
//
// It runs a small service (orders that succeed, one that fails once and is
// retried in process, one that always fails and is dead-lettered), makes
// the connection reconnect once, and prints the series a scrape shows. With
// -serve it keeps serving /metrics (and the service) until interrupted, for
// a Prometheus and a Grafana to look at.
//
// This example is a module of its own: the Prometheus exporter is not one
// of warren's dependencies.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/examples"
	"github.com/warrenmq/warren/middleware"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/telemetry"
	"github.com/warrenmq/warren/topology"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9464", "where /metrics is served")
	serve := flag.Bool("serve", false, "keep serving until interrupted")
	flag.Parse()
	limit := time.Minute
	if *serve {
		limit = 24 * time.Hour
	}
	ctx, cancel := examples.Context(limit)
	defer cancel()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	var serving func()
	if *serve {
		serving = func() { fmt.Println("serving until interrupted") }
	}
	if err := run(ctx, examples.URL(), ln, serving); err != nil {
		log.Fatal(err)
	}
}

// The example's queues.
const (
	orders = "example.observability.orders"
	dlq    = orders + ".dlq"
)

// run serves /metrics on ln while the service handles a few orders; it
// returns after printing the scrape, or, with serving, calls serving once
// every order is handled and returns when ctx ends.
func run(ctx context.Context, url string, ln net.Listener, serving func()) error {
	registry := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(registry))
	if err != nil {
		return err
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	defer mp.Shutdown(context.Background())
	tel, err := telemetry.New(telemetry.Config{MeterProvider: mp})
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: promhttp.HandlerFor(registry, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	fmt.Printf("metrics on http://%s/metrics\n", ln.Addr())

	c, err := conn.New(url, conn.Config{Telemetry: tel, ConnectionName: "observability-example"})
	if err != nil {
		return err
	}
	if err := c.Open(ctx); err != nil {
		return err
	}
	defer c.Close(context.Background())
	r, err := router.New(c, router.Config{})
	if err != nil {
		return err
	}
	handled := make(chan string, 16)
	err = r.AddRoute(router.Route{
		Name: "orders", Queue: topology.QueueSpec{Name: orders, Durable: true},
		Retry:        router.RetrySettings{RetryConfig: middleware.RetryConfig{MaxAttempts: 2, Backoff: retry.Backoff{InitialInterval: 10 * time.Millisecond}}},
		DelayedRetry: router.DelayedRetrySettings{Disabled: true},
		Handler:      handler(handled),
	})
	if err != nil {
		return err
	}
	runErr := make(chan error, 1)
	go func() { runErr <- r.Run(ctx) }()
	if err := r.WaitRunning(ctx); err != nil {
		return err
	}
	defer func() {
		_, _ = r.Ops().DeleteQueue(context.Background(), orders, broker.DeleteOptions{})
		_, _ = r.Ops().DeleteQueue(context.Background(), dlq, broker.DeleteOptions{})
	}()
	ids := []string{"order-1", "order-2", "flaky-3", "broken-4", "order-5"}
	for _, id := range ids {
		if err := r.Publisher().Publish(orders, message.NewMessage(id, []byte(`{}`))); err != nil {
			return err
		}
	}
	for range ids {
		select {
		case id := <-handled:
			fmt.Println("handled", id)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	// A new connection: a reconnect, and the topology and consumers
	// restored on it, both measured.
	if err := c.Refresh(ctx); err != nil {
		return err
	}
	if err := r.Publisher().Publish(orders, message.NewMessage("order-6", []byte(`{}`))); err != nil {
		return err
	}
	select {
	case id := <-handled:
		fmt.Println("handled", id, "after a reconnect")
	case <-ctx.Done():
		return ctx.Err()
	}
	if serving != nil {
		serving()
		<-ctx.Done()
	} else if err := printScrape(ctx, "http://"+ln.Addr().String()+"/metrics"); err != nil {
		return err
	}
	if err := r.Close(context.Background()); err != nil {
		return err
	}
	if err := <-runErr; err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// handler succeeds, except for "flaky-*" (fails its first attempt) and
// "broken-*" (always fails: dead-lettered). It reports each message once
// it is done with it.
func handler(handled chan<- string) func(*message.Message) error {
	flaked := map[string]bool{}
	return func(m *message.Message) error {
		switch {
		case strings.HasPrefix(m.UUID, "flaky") && !flaked[m.UUID]:
			flaked[m.UUID] = true
			return errors.New("inventory timed out")
		case strings.HasPrefix(m.UUID, "broken"):
			if attempt := ack.Attempt(m); attempt >= 2 {
				handled <- m.UUID + " (dead-lettered)"
			}
			return errors.New("malformed order")
		}
		handled <- m.UUID
		return nil
	}
}

// printScrape prints the warren and messaging series of one scrape.
func printScrape(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if (strings.HasPrefix(line, "messaging_") || strings.HasPrefix(line, "warren_")) && !strings.Contains(line, "_bucket{") {
			fmt.Println(line)
		}
	}
	return sc.Err()
}
