// Kubernetes: a long-running warren service as a Deployment would run it.
// It serves its liveness and readiness on :8080 (the probes of
// deployment.yaml), drains on SIGTERM within the pod's grace period, and a
// KEDA ScaledObject (scaledobject.yaml) scales it on its queue's length.
// The manifests are plain YAML; main_test.go parses them and checks them
// against this program, and runs the program's handlers on a broker.
package main

import (
	"context"
	"errors"
	"log"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/topology"
)

// What the manifests name: keep them equal (main_test.go checks).
const (
	queueName = "orders"
	httpAddr  = ":8080"
	livePath  = "/healthz"
	readyPath = "/readyz"
	// drainTimeout stays below the pod's terminationGracePeriodSeconds.
	drainTimeout = 25 * time.Second
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewJSONHandler(os.Stdout, nil))
	c, err := conn.New(os.Getenv("AMQP_URL"), conn.Config{Logger: log})
	if err != nil {
		fatal(err)
	}
	r, err := newService(c)
	if err != nil {
		fatal(err)
	}
	srv := &http.Server{Addr: httpAddr, Handler: probes(r), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fatal(err)
		}
	}()
	// Open retries until the broker answers; liveness stays 200 meanwhile.
	if err := c.Open(ctx); err != nil {
		fatal(err)
	}
	runErr := r.Run(ctx) // returns after draining on SIGTERM
	_ = srv.Shutdown(context.Background())
	_ = c.Close(context.Background())
	if runErr != nil {
		fatal(runErr)
	}
}

// newService is the router and its route.
func newService(c *conn.Conn) (*router.Router, error) {
	r, err := router.New(c, router.Config{CloseTimeout: drainTimeout})
	if err != nil {
		return nil, err
	}
	err = r.AddRoute(router.Route{
		Name:        "orders",
		Queue:       topology.QueueSpec{Name: queueName, Durable: true, Args: topology.QueueArgs{Type: topology.Quorum}},
		MaxInFlight: 8,
		Handler:     func(m *message.Message) error { return nil },
	})
	return r, err
}

// probes serves the router's liveness and readiness.
func probes(r *router.Router) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(livePath, r.LivenessHandler())
	mux.Handle(readyPath, r.ReadinessHandler())
	return mux
}

func fatal(err error) {
	log.Print(err)
	os.Exit(1)
}
