package main

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/spf13/cobra"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/middleware"
)

// commandPaths lists every command of the tree ("dlq replay", ...).
func commandPaths() [][]string {
	root := newRoot(os.Stdin, os.Stdout, os.Stderr, &scrubber{})
	var out [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		out = append(out, path)
		for _, sub := range c.Commands() {
			if sub.Hidden || sub.Name() == "help" {
				continue
			}
			walk(sub, append(append([]string(nil), path...), sub.Name()))
		}
	}
	walk(root, nil)
	return out
}

// TestPasswordNeverPrintedAnywhere: with a password in WARREN_URL or in
// --url (one that url-escaping changes, too), no command's --help, no
// error, no table and no JSON output holds it.
func TestPasswordNeverPrintedAnywhere(t *testing.T) {
	vurl, vhost := newVhost(t)
	for i, password := range []string{"s3cr3t", "p@ss/w0rd%x"} {
		user := []string{"svc", "svc2"}[i]
		rabbittest.AddUser(t, "", user, password, vhost, rabbittest.Permissions{Configure: ".*", Write: ".*", Read: ".*"})
		u, _ := url.Parse(vurl)
		u.User = url.UserPassword(user, password)
		good := u.String()
		u.Host = "127.0.0.1:1" // nothing listens: a connection error
		bad := u.String()
		check := func(what string, r result) {
			t.Helper()
			out := r.stdout + r.stderr
			for _, form := range []string{password, url.QueryEscape(password), url.PathEscape(password)} {
				if strings.Contains(out, form) {
					t.Fatalf("%s printed the password (%q):\n%s", what, form, out)
				}
			}
		}
		for _, path := range commandPaths() {
			args := append(append([]string(nil), path...), "--help")
			check("WARREN_URL "+strings.Join(args, " "), cli(t, good, "", args...))
			check("--url "+strings.Join(args, " "), cli(t, "", "", append(args, "--url", good)...))
		}
		ch := dial(t, vurl)
		warrenDeadLetters(t, ch, "card_declined")
		for _, args := range [][]string{
			{"dlq", "ls", "orders.dlq"}, {"dlq", "ls", "orders.dlq", "-o", "json"},
			{"dlq", "show", "orders.dlq"}, {"dlq", "show", "orders.dlq", "-o", "json"},
			{"dlq", "show", "no-such-queue"}, {"dlq", "replay", "orders.dlq", "--dry-run"},
			{"dlq", "replay", "orders.dlq", "--dry-run", "-o", "json"}, {"topology", "diff", "testdata/shop.yaml"},
			{"topology", "diff", "testdata/shop.yaml", "-o", "json"}, {"publish", "no-such-queue", "x"},
		} {
			for _, target := range []string{good, bad} {
				check("WARREN_URL "+strings.Join(args, " "), cli(t, target, "", args...))
				check("--url "+strings.Join(args, " "), cli(t, "", "", append(args, "--url", target)...))
			}
		}
		r := cli(t, bad, "", "dlq", "ls", "orders.dlq")
		if r.code != exitFailed || !strings.Contains(r.stderr, user+":***@") {
			t.Fatalf("a connection error names the user, not the password: exit %d, %q", r.code, r.stderr)
		}
	}
}

// TestTheTargetIsNeverAGuess: without --url or WARREN_URL the commands
// that change a broker refuse to run (naming what they would have acted
// on); the others name the host and vhost they read.
func TestTheTargetIsNeverAGuess(t *testing.T) {
	if binary == "" {
		t.Skip("-short: the command is not built")
	}
	for _, args := range [][]string{
		{"topology", "apply", "testdata/shop.yaml"}, {"dlq", "replay", "orders.dlq"}, {"dlq", "move", "orders.dlq", "parked"},
		{"dlq", "purge", "orders.dlq", "--yes"}, {"publish", "orders", "x"},
	} {
		r := cli(t, "", "", args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, "--url or WARREN_URL") {
			t.Errorf("%v without a broker named: exit %d, %q; want a refusal (exit %d)", args, r.code, r.stderr, exitUsage)
		}
	}
	url, _ := newVhost(t)
	dial(t, url).QueueDeclare("orders.dlq", true, false, false, false, nil)
	r := cli(t, url, "", "dlq", "ls", "orders.dlq")
	if r.code != 0 || !testVhost.MatchString(r.stdout) || !strings.Contains(r.stdout, "127.0.0.1:5672") {
		t.Fatalf("ls names no host and vhost: %s", r.stdout)
	}
}

// TestReplayRestoresWhatTheCopyMoved: a dead-letter copy moved the user id
// and the TTL to headers; a replay by that user restores both, a replay by
// another user keeps the user id in its header (the broker would refuse
// it) and restores the TTL.
func TestReplayRestoresWhatTheCopyMoved(t *testing.T) {
	url, _ := newVhost(t)
	ch := dial(t, url)
	for _, q := range []string{"orders", "orders.dlq"} {
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct{ id, user string }{{"mine", "guest"}, {"alices", "alice"}} {
		if err := ch.Publish("", "orders.dlq", false, false, amqp.Publishing{MessageId: c.id, Body: []byte("x"), Headers: amqp.Table{
			middleware.HeaderDLErrorType: "_OTHER", middleware.HeaderDLRoutingKey: "orders",
			ack.HeaderOriginalUserID: c.user, ack.HeaderOriginalExpiration: "600000"}}); err != nil {
			t.Fatal(err)
		}
	}
	rabbittest.Eventually(t, 10*time.Second, "2 dead letters", func() bool { return depth(t, ch, "orders.dlq") == 2 })
	if r := cli(t, url, "", "dlq", "replay", "orders.dlq"); r.code != 0 {
		t.Fatalf("replay: exit %d: %s", r.code, r.stderr)
	}
	rabbittest.Eventually(t, 10*time.Second, "2 replayed", func() bool { return depth(t, ch, "orders") == 2 })
	got := map[string]amqp.Delivery{}
	for range 2 {
		d, ok, err := ch.Get("orders", true)
		if err != nil || !ok {
			t.Fatal(ok, err)
		}
		got[d.MessageId] = d
	}
	mine, alices := got["mine"], got["alices"]
	if mine.UserId != "guest" || mine.Headers[ack.HeaderOriginalUserID] != nil || mine.Expiration != "600000" || mine.Headers[ack.HeaderOriginalExpiration] != nil {
		t.Errorf("replayed by its user: user id %q, expiration %q, headers %v; want both restored", mine.UserId, mine.Expiration, mine.Headers)
	}
	if alices.UserId != "" || alices.Headers[ack.HeaderOriginalUserID] != "alice" || alices.Expiration != "600000" {
		t.Errorf("replayed by another user: user id %q, expiration %q, headers %v; want the user id kept in its header", alices.UserId, alices.Expiration, alices.Headers)
	}
	for _, d := range got {
		for k := range d.Headers {
			if strings.HasPrefix(k, "warren-dl-") || strings.HasPrefix(k, "x-") || k == "warren-publish-seq" {
				t.Errorf("replayed %s carries %q", d.MessageId, k)
			}
		}
	}
}

// TestShowJSONKeepsByteArrays: a byte-array header is shown whole, base64
// with its AMQP type, never as text with replacement characters.
func TestShowJSONKeepsByteArrays(t *testing.T) {
	url, _ := newVhost(t)
	ch := dial(t, url)
	if _, err := ch.QueueDeclare("orders.dlq", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	raw := []byte{0xff, 0x00, 0xfe, 'a'}
	if err := ch.Publish("", "orders.dlq", false, false, amqp.Publishing{MessageId: "b", Body: []byte("x"), Headers: amqp.Table{"sig": raw}}); err != nil {
		t.Fatal(err)
	}
	rabbittest.Eventually(t, 10*time.Second, "the dead letter", func() bool { return depth(t, ch, "orders.dlq") == 1 })
	r := cli(t, url, "", "dlq", "show", "orders.dlq", "-o", "json")
	var out struct {
		Shown []struct {
			Headers map[string]map[string]any `json:"headers"`
		} `json:"shown"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || len(out.Shown) != 1 {
		t.Fatalf("show -o json: %v %s", err, r.stdout)
	}
	sig := out.Shown[0].Headers["sig"]
	if sig["amqp_type"] != "bytearray" || sig["base64"] != base64.StdEncoding.EncodeToString(raw) {
		t.Fatalf("byte array header shown as %v", sig)
	}
}

// TestShowEveryDialect: show reads a dead letter of each dialect (warren's
// headers, the broker's x-death through the delay levels, Watermill's
// poison metadata, a due scheduled message) and says where each came from;
// move keeps a dead letter whole. Golden files.
func TestShowEveryDialect(t *testing.T) {
	url, _ := newVhost(t)
	ch := dial(t, url)
	for _, q := range []string{"mixed.dlq", "parked"} {
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	at := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	for _, m := range []amqp.Publishing{
		{MessageId: "warren-1", Headers: amqp.Table{middleware.HeaderDLError: "card declined", middleware.HeaderDLErrorType: "card_declined",
			middleware.HeaderDLAttempts: "9", middleware.HeaderDLExchange: "shop", middleware.HeaderDLRoutingKey: "order.created",
			middleware.HeaderDLQueue: "orders", middleware.HeaderDLHandler: "charge", middleware.HeaderDLLastFail: at.Format(time.RFC3339)}},
		{MessageId: "broker-1", Headers: amqp.Table{ack.AttemptHeader: "6", "x-death": []any{
			amqp.Table{"queue": "billing", "reason": "rejected", "count": int64(1), "exchange": "warren.delay.deliver", "time": at,
				"routing-keys": []any{"0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.q.billing"}},
			amqp.Table{"queue": "warren.delay.01.wait", "reason": "expired", "count": int64(2), "exchange": "warren.delay.27", "time": at.Add(-time.Minute),
				"routing-keys": []any{"0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.q.billing"}},
		}}},
		{MessageId: "watermill-1", Headers: amqp.Table{"reason_poisoned": "cannot parse order", "topic_poisoned": "shipping", "handler_poisoned": "ship"}},
		{MessageId: "due-1", Headers: amqp.Table{"warren-delay-exchange": "shop", "warren-delay-routing-key": "order.remind"}},
	} {
		m.Body = []byte(`{"order":1}`)
		if err := ch.Publish("", "mixed.dlq", false, false, m); err != nil {
			t.Fatal(err)
		}
	}
	rabbittest.Eventually(t, 10*time.Second, "4 dead letters", func() bool { return depth(t, ch, "mixed.dlq") == 4 })
	r := cli(t, url, "", "dlq", "show", "mixed.dlq")
	if r.code != 0 {
		t.Fatalf("show: exit %d: %s", r.code, r.stderr)
	}
	golden(t, "dlq-show-dialects", r.stdout)
	r = cli(t, url, "", "dlq", "replay", "mixed.dlq", "--dry-run", "--topic-mapping", "fanout")
	golden(t, "dlq-replay-dialects-dry-run", r.stdout)
	r = cli(t, url, "", "dlq", "move", "mixed.dlq", "parked", "--reason", "card_declined")
	if r.code != 0 {
		t.Fatalf("move: exit %d: %s", r.code, r.stderr)
	}
	golden(t, "dlq-move", r.stdout)
	d, ok, err := ch.Get("parked", true)
	if err != nil || !ok || d.MessageId != "warren-1" || d.Headers[middleware.HeaderDLErrorType] != "card_declined" {
		t.Fatalf("moved: %v %v %q %v", ok, err, d.MessageId, d.Headers)
	}
	if r := cli(t, "", "", "topology", "schema"); r.code != 0 {
		t.Fatalf("schema: exit %d", r.code)
	} else {
		golden(t, "topology-schema", r.stdout)
	}
}
