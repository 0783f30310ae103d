package rabbittest

import (
	"context"
	"fmt"
	"net/url"
	"testing"
)

// Permissions are a user's configure, write and read regular expressions
// in one vhost (RabbitMQ's set_permissions).
type Permissions struct {
	Configure, Write, Read string
}

// NewUser adds a user of the shared broker with perms in vhost, for tests of
// what the broker refuses, and deletes it when t ends. It returns the URL
// that logs in as that user to vhost.
func NewUser(t testing.TB, name, password, vhost string, perms Permissions) string {
	t.Helper()
	AddUser(t, "", name, password, vhost, perms)
	return fmt.Sprintf("amqp://%s:%s@%s/%s", url.PathEscape(name), url.PathEscape(password), SharedAddr, url.PathEscape(vhost))
}

// AddUser adds a user on node ("" is the machine's default node) with
// perms in vhost, deleted when t ends.
func AddUser(t testing.TB, node, name, password, vhost string, perms Permissions) {
	t.Helper()
	ctx := context.Background()
	if _, err := rabbitmqctl(ctx, node, "add_user", name, password); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := rabbitmqctl(context.Background(), node, "delete_user", name); err != nil {
			t.Log(err)
		}
	})
	if _, err := rabbitmqctl(ctx, node, "set_permissions", "-p", vhost, name, perms.Configure, perms.Write, perms.Read); err != nil {
		t.Fatal(err)
	}
}
