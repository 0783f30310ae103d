package tests

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/topology"
	"github.com/warrenmq/warren/warrentest"
)

// TestAccessRefusedHasItsOwnName: a user without permission on an entity
// gets errors that match ErrAccessRefused (the same value in conn, topology
// and the root package) on declare, publish and consume, and never
// IsAuthError; a wrong password is IsAuthError and not ErrAccessRefused.
func TestAccessRefusedHasItsOwnName(t *testing.T) {
	t.Parallel()
	b := warrentest.New(t) // a vhost of its own on a disposable node
	// The user may configure, write and read only what is named "mine.*":
	// not the default exchange, not the guest's "theirs.q".
	userURL := b.User("limited", "secret", warrentest.Permissions{Configure: "^mine\\.", Write: "^mine\\.", Read: "^mine\\."})
	adminURL := b.URL

	admin := openConn(t, adminURL)
	adminOps, err := broker.NewOps(admin, broker.OpsConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := adminOps.DeclareQueue(ctxT(t, 10*time.Second), topology.QueueSpec{Name: "theirs.q", Durable: true}); err != nil {
		t.Fatal(err)
	}

	c := openConn(t, userURL)
	refused := func(t *testing.T, op string, err error) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s: no error, want access refused", op)
		}
		for _, target := range []error{conn.ErrAccessRefused, conn.ErrAccessRefused, conn.ErrAccessRefused} {
			if !errors.Is(err, target) {
				t.Errorf("%s: %v does not match %v", op, err, target)
			}
		}
		if conn.IsAuthError(err) {
			t.Errorf("%s: %v is IsAuthError, but the login succeeded", op, err)
		}
		if errors.Is(err, conn.ErrNotFound) || errors.Is(err, conn.ErrPreconditionFailed) {
			t.Errorf("%s: %v matches another refusal's sentinel", op, err)
		}
	}

	t.Run("declare", func(t *testing.T) {
		ops, err := broker.NewOps(c, broker.OpsConfig{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = ops.DeclareQueue(ctxT(t, 10*time.Second), topology.QueueSpec{Name: "theirs.other", Durable: true})
		refused(t, "declare", err)
		// The refusal cost the connection nothing: what is allowed works.
		if _, err := ops.DeclareQueue(ctxT(t, 10*time.Second), topology.QueueSpec{Name: "mine.q", Durable: true}); err != nil {
			t.Fatalf("allowed declare after a refusal: %v", err)
		}
	})

	t.Run("publish", func(t *testing.T) {
		pub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: warren.ExistingQueues{}})
		if err != nil {
			t.Fatal(err)
		}
		defer pub.Close()
		// The default exchange is not "mine.*": no write permission.
		refused(t, "publish", pub.Publish("theirs.q", message.NewMessage("m1", []byte("x"))))
	})

	t.Run("consume", func(t *testing.T) {
		sub, err := warren.NewSubscriber(c, warren.SubscriberConfig{Mapping: warren.ExistingQueues{}})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		_, err = sub.Subscribe(ctxT(t, 10*time.Second), "theirs.q")
		refused(t, "consume", err)
	})

	t.Run("wrong password", func(t *testing.T) {
		bad, err := conn.New(strings.Replace(userURL, ":secret@", ":wrong@", 1), conn.Config{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err = bad.Open(ctx)
		defer bad.Close(context.Background())
		if !conn.IsAuthError(err) {
			t.Fatalf("wrong password: %v is not IsAuthError", err)
		}
		if errors.Is(err, conn.ErrAccessRefused) {
			t.Fatalf("wrong password: %v matches ErrAccessRefused, an operation's refusal", err)
		}
	})
}
