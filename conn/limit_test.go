package conn_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
)

// A vhost's connection limit refuses a connection for now, not for good:
// RabbitMQ says so with 530 NOT_ALLOWED, the code of a vhost the user may
// not enter. A reconnecting service that meets the limit (another instance
// took the last place during a rolling deploy, say) keeps trying, reports
// each refusal as ErrConnectionLimit, and connects once a place is free.
func TestConnectionLimitIsRetried(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// A vhost of the test's own: the limit reaches nobody else.
	vhost := fmt.Sprintf("warren-conn-limit-%d", os.Getpid())
	if err := rabbittest.AddVhost(ctx, "", vhost, "guest"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := rabbittest.DeleteVhost(context.Background(), "", vhost); err != nil {
			t.Errorf("delete the test's vhost: %v", err)
		}
	})
	if _, err := rabbittest.Ctl(ctx, "", "set_vhost_limits", "-p", vhost, `{"max-connections": 1}`); err != nil {
		t.Fatal(err)
	}
	p := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	c := open(t, p.URL(vhost), conn.Config{Reconnect: fast()})
	rec := record(c)

	// The service loses its connection, and another one takes the place.
	p.Cut()
	rabbittest.Eventually(t, 30*time.Second, "the broker to let the cut connection go", func() bool {
		out, err := rabbittest.Ctl(ctx, "", "list_connections", "vhost")
		return err == nil && !strings.Contains(out, vhost)
	})
	direct := "amqp://guest:guest@" + rabbittest.SharedAddr + "/" + vhost
	other, err := amqp.Dial(direct)
	if err != nil {
		t.Fatal(err)
	}
	// The broker counts a vhost's connections from events it handles after
	// the connection opened: on a loaded machine a dial right after
	// other's still got in (CI). Wait until the broker itself refuses a
	// dial at the limit, so that the service's next attempt meets it.
	rabbittest.Eventually(t, 20*time.Second, "the broker refusing a dial at the limit", func() bool {
		probe, err := amqp.Dial(direct)
		if err == nil {
			_ = probe.Close()
			return false
		}
		var ae *amqp.Error
		return errors.As(err, &ae) && ae.Code == amqp.NotAllowed
	})
	if err := p.Restore(); err != nil {
		t.Fatal(err)
	}
	refused := rec.waitFor(t, 20*time.Second, "a refusal at the limit", func(ch conn.StateChange) bool {
		return errors.Is(ch.Err, conn.ErrConnectionLimit) || ch.To.Terminal()
	})
	if !errors.Is(refused.Err, conn.ErrConnectionLimit) || conn.IsAuthError(refused.Err) {
		t.Fatalf("at the connection limit: %v, want ErrConnectionLimit (and no login refusal)", refused)
	}
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, 20*time.Second, "connected once a place is free", func(ch conn.StateChange) bool {
		return ch.To == conn.StateConnected && ch.From == conn.StateReconnecting
	})
}
