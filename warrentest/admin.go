package warrentest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"time"

	"github.com/warrenmq/warren/internal/rabbittest"
)

// admin makes and removes what a test needs beside its own entities: its
// vhost and the users it asks for. Two kinds: the management plugin's HTTP
// API (a broker in a container, a managed broker) and rabbitmqctl on this
// machine (a local broker, the disposable nodes).
type admin interface {
	addVhost(ctx context.Context, vhost, user string) error
	deleteVhost(ctx context.Context, vhost string) error
	addUser(ctx context.Context, name, password, vhost string, perms Permissions) error
	deleteUser(ctx context.Context, name string) error
	String() string
}

// ctlAdmin is rabbitmqctl against node ("" is the machine's default node).
type ctlAdmin struct{ node string }

func (a ctlAdmin) addVhost(ctx context.Context, vhost, user string) error {
	return rabbittest.AddVhost(ctx, a.node, vhost, user)
}

func (a ctlAdmin) deleteVhost(ctx context.Context, vhost string) error {
	return rabbittest.DeleteVhost(ctx, a.node, vhost)
}

func (a ctlAdmin) addUser(ctx context.Context, name, password, vhost string, perms Permissions) error {
	if _, err := rabbittest.Ctl(ctx, a.node, "add_user", name, password); err != nil {
		return err
	}
	_, err := rabbittest.Ctl(ctx, a.node, "set_permissions", "-p", vhost, name, perms.Configure, perms.Write, perms.Read)
	return err
}

func (a ctlAdmin) deleteUser(ctx context.Context, name string) error {
	_, err := rabbittest.Ctl(ctx, a.node, "delete_user", name)
	return err
}

func (a ctlAdmin) String() string { return "rabbitmqctl" }

// httpAdmin is the management plugin's HTTP API at base (its user and
// password in the URL).
type httpAdmin struct {
	base   *url.URL
	client *http.Client
}

func newHTTPAdmin(raw string) (*httpAdmin, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("warrentest: %s %q: want http(s)://user:password@host:port", ManagementURLEnv, raw)
	}
	return &httpAdmin{base: u, client: &http.Client{Timeout: 30 * time.Second}}, nil
}

// do sends method to the API path (its segments escaped by the caller),
// with body as JSON when not nil, and fails on any status but 2xx.
func (a *httpAdmin) do(ctx context.Context, method, path string, body any) error {
	var r io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(raw)
	}
	u := *a.base
	u.User = nil
	u.Path, u.RawPath = "", ""
	req, err := http.NewRequestWithContext(ctx, method, u.String()+"/api/"+path, r)
	if err != nil {
		return err
	}
	if a.base.User != nil {
		pw, _ := a.base.User.Password()
		req.SetBasicAuth(a.base.User.Username(), pw)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return fmt.Errorf("warrentest: management API %s /api/%s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("warrentest: management API %s /api/%s: %s: %s", method, path, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

func (a *httpAdmin) addVhost(ctx context.Context, vhost, user string) error {
	if err := a.do(ctx, http.MethodPut, "vhosts/"+url.PathEscape(vhost), map[string]any{}); err != nil {
		return err
	}
	return a.do(ctx, http.MethodPut, "permissions/"+url.PathEscape(vhost)+"/"+url.PathEscape(user),
		map[string]string{"configure": ".*", "write": ".*", "read": ".*"})
}

func (a *httpAdmin) deleteVhost(ctx context.Context, vhost string) error {
	return a.do(ctx, http.MethodDelete, "vhosts/"+url.PathEscape(vhost), nil)
}

func (a *httpAdmin) addUser(ctx context.Context, name, password, vhost string, perms Permissions) error {
	if err := a.do(ctx, http.MethodPut, "users/"+url.PathEscape(name), map[string]string{"password": password, "tags": ""}); err != nil {
		return err
	}
	return a.do(ctx, http.MethodPut, "permissions/"+url.PathEscape(vhost)+"/"+url.PathEscape(name),
		map[string]string{"configure": perms.Configure, "write": perms.Write, "read": perms.Read})
}

func (a *httpAdmin) deleteUser(ctx context.Context, name string) error {
	return a.do(ctx, http.MethodDelete, "users/"+url.PathEscape(name), nil)
}

func (a *httpAdmin) String() string { return "the management API at " + a.base.Redacted() }

// answers reports whether the API answers at all (its overview, as the
// user given).
func (a *httpAdmin) answers(ctx context.Context) bool {
	return a.do(ctx, http.MethodGet, "overview", nil) == nil
}

// errNoAdmin: the broker at WARREN_TEST_URL offers no way to make a vhost.
var errNoAdmin = errors.New("warrentest: no way to make the test's vhost on the broker at " + URLEnv +
	": set " + ManagementURLEnv + " (its management API), run the tests where rabbitmqctl reaches it, or set " +
	IsolationEnv + "=prefix to share the URL's vhost, each test's entities named with Broker.Name")

// adminFor is how tests make vhosts on the broker at amqpURL: the
// management API named by ManagementURLEnv, else the one on the broker's
// host at the management plugin's default port when it answers with the
// URL's user, else rabbitmqctl when this machine has it.
func adminFor(ctx context.Context, amqpURL *url.URL, managementURL string) (admin, error) {
	if managementURL != "" {
		return newHTTPAdmin(managementURL)
	}
	probe := &url.URL{Scheme: "http", Host: net.JoinHostPort(amqpURL.Hostname(), "15672"), User: amqpURL.User}
	if amqpURL.Scheme == "amqps" {
		probe.Scheme, probe.Host = "https", net.JoinHostPort(amqpURL.Hostname(), "15671")
	}
	if probe.User == nil {
		probe.User = url.UserPassword("guest", "guest")
	}
	a := &httpAdmin{base: probe, client: &http.Client{Timeout: 3 * time.Second}}
	if a.answers(ctx) {
		a.client.Timeout = 30 * time.Second
		return a, nil
	}
	if _, err := exec.LookPath(ctlBinary()); err == nil {
		return ctlAdmin{}, nil
	}
	return nil, errNoAdmin
}

func ctlBinary() string { return "/usr/lib/rabbitmq/bin/rabbitmqctl" }
