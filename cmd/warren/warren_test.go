package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"
	"go.yaml.in/yaml/v3"

	"github.com/warrenmq/warren/internal/delay"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/topology"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// binary is the warren command built for the tests: they run it as a user
// does, against the real broker.
var binary string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "warren-cli-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "warren")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build the warren command:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		// The tests' own connections are closed by then.
		if err := goleak.Find(rabbittest.LeakOptions()...); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines leaked:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// vhostSeq names the tests' vhosts.
var vhostSeq atomic.Int64

// newVhost is a vhost of the test's own, deleted when it ends.
func newVhost(t *testing.T) (url, name string) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs the broker")
	}
	name = fmt.Sprintf("warren-cli-%d-%d", os.Getpid(), vhostSeq.Add(1))
	url, remove, err := rabbittest.NewVhost(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(remove)
	return url, name
}

type result struct {
	stdout, stderr string
	code           int
}

// cli runs the command with WARREN_URL set to url and stdin as input.
func cli(t *testing.T, url, stdin string, args ...string) result {
	t.Helper()
	if binary == "" {
		t.Skip("-short: the command is not built")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(os.Environ(), "WARREN_URL="+url)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{out.String(), errOut.String(), code}
}

// testVhost matches the vhosts the tests make (newVhost): golden files say
// VHOST instead.
var testVhost = regexp.MustCompile(`warren-cli-[0-9]+-[0-9]+`)

// golden compares got with testdata/name.golden (-update rewrites it); the
// test's vhost reads VHOST.
func golden(t *testing.T, name, got string) {
	t.Helper()
	got = testVhost.ReplaceAllString(got, "VHOST")
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(want) != got {
		t.Errorf("%s differs from %s:\n--- got\n%s--- want\n%s", name, path, got, want)
	}
}

func dial(t *testing.T, url string) *amqp.Channel { return rabbittest.RawChannel(t, url) }

func depth(t *testing.T, ch *amqp.Channel, queue string) int {
	t.Helper()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return q.Messages
}

func TestValidateReportsEveryProblemAtItsLine(t *testing.T) {
	r := cli(t, "amqp://nobody:secret@127.0.0.1:1/", "", "topology", "validate", "testdata/invalid.yaml")
	if r.code != exitInvalidFile {
		t.Fatalf("exit code %d, want %d; stderr %s", r.code, exitInvalidFile, r.stderr)
	}
	golden(t, "validate-invalid", r.stdout)
	r = cli(t, "", "", "topology", "validate", "testdata/shop.yaml")
	if r.code != 0 || r.stdout != "testdata/shop.yaml: valid (1 exchanges, 3 queues, 2 bindings)\n" {
		t.Fatalf("a valid file: exit %d, %q", r.code, r.stdout)
	}
}

// TestValidateForARabbitMQVersion: a file valid for the library is checked
// by what RabbitMQ 4.3 refuses, and by what 3.10 lacks.
func TestValidateForARabbitMQVersion(t *testing.T) {
	if r := cli(t, "", "", "topology", "validate", "testdata/rabbitmq43.yaml"); r.code != 0 {
		t.Fatalf("without --rabbitmq: exit %d: %s", r.code, r.stdout)
	}
	r := cli(t, "", "", "topology", "validate", "testdata/rabbitmq43.yaml", "--rabbitmq", "4.3")
	if r.code != exitInvalidFile {
		t.Fatalf("--rabbitmq 4.3: exit %d", r.code)
	}
	golden(t, "validate-rabbitmq43", r.stdout)
	r = cli(t, "", "", "topology", "validate", "testdata/rabbitmq43.yaml", "--rabbitmq", "3.10")
	if r.code != exitInvalidFile {
		t.Fatalf("--rabbitmq 3.10: exit %d", r.code)
	}
	golden(t, "validate-rabbitmq310", r.stdout)
}

// TestDiffThenApply: a broker that differs from the file in three ways
// (an exchange missing, a queue missing, a queue with another TTL); diff
// names each and changes nothing; apply refuses the changed queue unless
// forced; after apply --force, diff shows nothing.
func TestDiffThenApply(t *testing.T) {
	url, _ := newVhost(t)
	ch := dial(t, url)
	if _, err := ch.QueueDeclare("orders", true, false, false, false, amqp.Table{"x-message-ttl": int64(30000),
		"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "orders.dlq"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("orders.dlq", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	r := cli(t, url, "", "topology", "diff", "testdata/shop.yaml")
	if r.code != exitDiffers {
		t.Fatalf("diff: exit %d, want %d; %s", r.code, exitDiffers, r.stderr)
	}
	golden(t, "diff-three-ways", r.stdout)
	if ttl := cli(t, url, "", "topology", "diff", "testdata/shop.yaml"); ttl.stdout != r.stdout {
		t.Fatal("diff changed the broker")
	}
	r = cli(t, url, "", "topology", "apply", "testdata/shop.yaml")
	if r.code != exitFailed || !strings.Contains(r.stderr, "x-message-ttl") {
		t.Fatalf("apply over a changed queue: exit %d, stderr %q; want a refusal naming x-message-ttl", r.code, r.stderr)
	}
	// The changed queue holds a message: recreating it would lose it.
	if err := ch.PublishWithContext(context.Background(), "", "orders", false, false, amqp.Publishing{Body: []byte("keep me")}); err != nil {
		t.Fatal(err)
	}
	rabbittest.Eventually(t, 10*time.Second, "the message in its queue", func() bool { return depth(t, ch, "orders") == 1 })
	r = cli(t, url, "", "topology", "apply", "testdata/shop.yaml", "--force")
	if r.code != exitRefused || depth(t, ch, "orders") != 1 {
		t.Fatalf("apply --force over a queue with a message: exit %d (want %d), %d left: %s", r.code, exitRefused, depth(t, ch, "orders"), r.stderr)
	}
	r = cli(t, url, "", "topology", "apply", "testdata/shop.yaml", "--force", "--accept-message-loss")
	if r.code != 0 {
		t.Fatalf("apply --force --accept-message-loss: exit %d: %s", r.code, r.stderr)
	}
	r = cli(t, url, "", "topology", "diff", "testdata/shop.yaml")
	if r.code != 0 || !strings.Contains(r.stdout, "\nno differences") {
		t.Fatalf("diff after apply: exit %d: %s", r.code, r.stdout)
	}
}

// deadLetter fills orders.dlq with n messages the broker dead-lettered from
// orders (rejected), each with a message id.
func deadLetter(t *testing.T, url string, n int) *amqp.Channel {
	t.Helper()
	ch := dial(t, url)
	if _, err := ch.QueueDeclare("orders.dlq", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("orders", true, false, false, false, amqp.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "orders.dlq"}); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		c, err := ch.PublishWithDeferredConfirm("", "orders", false, false, amqp.Publishing{MessageId: fmt.Sprintf("m-%04d", i),
			DeliveryMode: amqp.Persistent, ContentType: "application/json", Body: []byte(fmt.Sprintf(`{"order":%d}`, i))})
		if err != nil {
			t.Fatal(err)
		}
		if i == n-1 && !c.Wait() {
			t.Fatal("not confirmed")
		}
	}
	deliveries, err := ch.Consume("orders", "rejecter", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		d := <-deliveries
		if err := d.Reject(false); err != nil {
			t.Fatal(err)
		}
	}
	if err := ch.Cancel("rejecter", false); err != nil {
		t.Fatal(err)
	}
	rabbittest.Eventually(t, 20*time.Second, "every message in orders.dlq", func() bool { return depth(t, ch, "orders.dlq") == n })
	return ch
}

// TestReplaySurvivesTwoCuts: 1,000 dead letters replayed while the
// connection is cut twice all end in their original queue, none is left
// in the dead-letter queue, and the summary says how many may have been
// published twice.
func TestReplaySurvivesTwoCuts(t *testing.T) {
	url, vhost := newVhost(t)
	ch := deadLetter(t, url, 1000)
	proxy := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "dlq", "replay", "orders.dlq", "--rate", "400", "-o", "json")
	cmd.Env = append(os.Environ(), "WARREN_URL="+proxy.URL(vhost))
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	cuts := 0
	for _, below := range []int{700, 350} {
		for depth(t, ch, "orders.dlq") > below {
			select {
			case err := <-done:
				t.Fatalf("replay ended before cut %d: %v\n%s", cuts+1, err, errOut.String())
			case <-time.After(5 * time.Millisecond):
			}
		}
		proxy.Cut()
		if err := proxy.Restore(); err != nil {
			t.Fatal(err)
		}
		cuts++
	}
	if err := <-done; err != nil {
		t.Fatalf("replay: %v\n%s", err, errOut.String())
	}
	var sum replaySummary
	if err := json.Unmarshal(out.Bytes(), &sum); err != nil {
		t.Fatalf("summary %q: %v", out.String(), err)
	}
	if sum.Replayed != 1000 || sum.Reconnects < 2 {
		t.Fatalf("summary %+v: want 1000 replayed over 2 reconnects", sum)
	}
	if n := depth(t, ch, "orders.dlq"); n != 0 {
		t.Fatalf("%d left in the dead-letter queue", n)
	}
	ids := map[string]int{}
	total := depth(t, ch, "orders")
	for i := 0; i < total; i++ {
		d, ok, err := ch.Get("orders", true)
		if err != nil || !ok {
			t.Fatalf("get %d of %d: %v", i, total, err)
		}
		if _, dead := d.Headers["x-death"]; dead || d.Headers["warren-replayed-from"] != "orders.dlq" {
			t.Fatalf("replayed message headers %v", d.Headers)
		}
		ids[d.MessageId]++
	}
	if len(ids) != 1000 || total-1000 > sum.PossibleDuplicates {
		t.Fatalf("orders holds %d messages, %d distinct; %d possible duplicates printed", total, len(ids), sum.PossibleDuplicates)
	}
	t.Logf("1000 replayed through %d cuts: %d reconnects, %d possible duplicates printed, %d actual", cuts, sum.Reconnects, sum.PossibleDuplicates, total-1000)
}

// warrenDeadLetters puts n dead letters with warren's diagnostic headers
// into orders.dlq, reasons alternating.
func warrenDeadLetters(t *testing.T, ch *amqp.Channel, reasons ...string) {
	t.Helper()
	for _, q := range []string{"orders", "orders.dlq"} {
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	// Confirmed, so that the command sees every one of them.
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	for i, reason := range reasons {
		confirm, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), "", "orders.dlq", false, false, amqp.Publishing{
			MessageId: fmt.Sprintf("dl-%d", i), ContentType: "application/json", DeliveryMode: amqp.Persistent,
			Body: []byte(fmt.Sprintf(`{"order":%d,"lines":[{"sku":"tea","qty":2}]}`, i)),
			Headers: amqp.Table{"warren-dl-error": "payment declined: " + reason, "warren-dl-error-type": reason,
				"warren-dl-attempts": "6", "warren-dl-exchange": "", "warren-dl-routing-key": "orders", "warren-dl-queue": "orders",
				"warren-dl-handler": "charge", "warren-dl-first-failure": "2026-11-20T10:00:00Z", "warren-dl-last-failure": "2026-11-20T10:05:00Z",
				"warren-dl-trace-id": "4bf92f3577b34da6a3ce929d0e0e4736", "tenant": map[bool]string{true: "acme", false: "globex"}[i%2 == 0]},
		})
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := confirm.WaitContext(context.Background()); err != nil || !ok {
			t.Fatalf("dead letter %d not confirmed: %v", i, err)
		}
	}
}

// TestShowThenFilteredReplay: show prints every dead letter with its
// diagnostics and takes nothing; a replay filtered by reason moves only the
// matching ones, the others stay in order; ls counts what is left.
func TestShowThenFilteredReplay(t *testing.T) {
	url, _ := newVhost(t)
	ch := dial(t, url)
	warrenDeadLetters(t, ch, "card_declined", "timeout", "card_declined", "timeout")
	r := cli(t, url, "", "dlq", "show", "orders.dlq")
	if r.code != 0 {
		t.Fatalf("show: exit %d: %s", r.code, r.stderr)
	}
	golden(t, "dlq-show", r.stdout)
	if n := depth(t, ch, "orders.dlq"); n != 4 {
		t.Fatalf("show took messages: %d left", n)
	}
	r = cli(t, url, "", "dlq", "replay", "orders.dlq", "--reason", "card_declined", "--dry-run")
	if r.code != 0 || depth(t, ch, "orders.dlq") != 4 {
		t.Fatalf("dry run: exit %d, %d left", r.code, depth(t, ch, "orders.dlq"))
	}
	golden(t, "dlq-replay-dry-run", r.stdout)
	r = cli(t, url, "", "dlq", "replay", "orders.dlq", "--reason", "card_declined")
	if r.code != 0 {
		t.Fatalf("replay: exit %d: %s", r.code, r.stderr)
	}
	golden(t, "dlq-replay-filtered", r.stdout)
	if strings.Contains(r.stderr, "replay orders.dlq") || strings.Contains(r.stderr, "it/s") {
		t.Errorf("a progress bar went to a pipe: %q", r.stderr)
	}
	if got := depth(t, ch, "orders"); got != 2 {
		t.Fatalf("orders holds %d, want the 2 card_declined", got)
	}
	for _, want := range []string{"dl-1", "dl-3"} {
		d, ok, err := ch.Get("orders.dlq", true)
		if err != nil || !ok || d.MessageId != want {
			t.Fatalf("left in the dead-letter queue: %q (%v), want %s in order", d.MessageId, err, want)
		}
	}
	warrenDeadLetters(t, ch, "timeout", "timeout", "card_declined")
	r = cli(t, url, "", "dlq", "replay", "orders.dlq", "--header", "tenant=globex")
	if r.code != 0 || depth(t, ch, "orders.dlq") != 2 {
		t.Fatalf("replay by header: exit %d, %d left, want 2", r.code, depth(t, ch, "orders.dlq"))
	}
	r = cli(t, url, "", "dlq", "ls", "orders.dlq", "-o", "json")
	var ls []queueSummary
	if err := json.Unmarshal([]byte(r.stdout), &ls); err != nil || len(ls) != 1 || ls[0].Messages != 2 || ls[0].TopReasons[0].Reason != "card_declined" && ls[0].TopReasons[0].Reason != "timeout" {
		t.Fatalf("ls: %s (%v)", r.stdout, err)
	}
}

func TestPurgeAsksFirst(t *testing.T) {
	url, _ := newVhost(t)
	ch := dial(t, url)
	warrenDeadLetters(t, ch, "a", "b")
	r := cli(t, url, "n\n", "dlq", "purge", "orders.dlq")
	if r.code != exitRefused || depth(t, ch, "orders.dlq") != 2 {
		t.Fatalf("purge answered no: exit %d, %d left", r.code, depth(t, ch, "orders.dlq"))
	}
	r = cli(t, url, "y\n", "dlq", "purge", "orders.dlq")
	if r.code != 0 || depth(t, ch, "orders.dlq") != 0 || testVhost.ReplaceAllString(r.stdout, "VHOST") != "purged 2 message(s) from orders.dlq on 127.0.0.1:5672, vhost \"VHOST\"\n" {
		t.Fatalf("purge answered yes: exit %d, %q", r.code, r.stdout)
	}
}

// TestTailShowsALaterMessage: tail binds, then a message published with
// the command appears, decoded.
func TestTailShowsALaterMessage(t *testing.T) {
	url, _ := newVhost(t)
	ch := dial(t, url)
	if err := ch.ExchangeDeclare("shop", "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "tail", "shop", "order.*", "--count", "1")
	cmd.Env = append(os.Environ(), "WARREN_URL="+url)
	var out bytes.Buffer
	cmd.Stdout = &out
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make([]byte, 256)
	n, _ := stderr.Read(ready) // "tailing ..." once bound
	if !strings.Contains(string(ready[:n]), "tailing exchange") {
		t.Fatalf("tail said %q", ready[:n])
	}
	r := cli(t, url, "", "publish", "order.paid", "--exchange", "shop", `{"order":42}`, "-H", "tenant=acme", "--message-id", "m-42")
	if r.code != 0 {
		t.Fatalf("publish: exit %d: %s", r.code, r.stderr)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	got := regexp.MustCompile(`^\d\d:\d\d:\d\d\.\d{3}`).ReplaceAllString(out.String(), "HH:MM:SS.mmm")
	got = regexp.MustCompile(`amqp.timestamp: \S+`).ReplaceAllString(got, "amqp.timestamp: <publish time>")
	golden(t, "tail", got)
}

// TestPasswordNeverPrinted: a failed connection names the URL without its
// password; usage errors exit 2.
func TestPasswordNeverPrinted(t *testing.T) {
	r := cli(t, "amqp://admin:hunter2@127.0.0.1:1/", "", "dlq", "ls", "orders.dlq")
	if r.code != exitFailed || strings.Contains(r.stderr+r.stdout, "hunter2") || !strings.Contains(r.stderr, "admin:***@") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	if r := cli(t, "", "", "dlq", "show"); r.code != exitUsage {
		t.Fatalf("missing argument: exit %d", r.code)
	}
	if r := cli(t, "", "", "topology", "diff", "x.yaml", "--bogus"); r.code != exitUsage {
		t.Fatalf("unknown flag: exit %d", r.code)
	}
}

// TestExportFromDefinitions: the broker's definitions of a vhost (as
// rabbitmqctl exports them) become a topology file that validates and that
// diff finds equal to the broker; the Go form names the same specs.
// warren's own infrastructure (the delay levels a router declared) is left
// out unless asked for.
func TestExportFromDefinitions(t *testing.T) {
	url, vhost := newVhost(t)
	if r := cli(t, url, "", "topology", "apply", "testdata/shop.yaml"); r.code != 0 {
		t.Fatalf("apply: %s", r.stderr)
	}
	var levels bytes.Buffer
	if err := yaml.NewEncoder(&levels).Encode(fileOf(delay.ScheduleTopology(2))); err != nil {
		t.Fatal(err)
	}
	levelsPath := filepath.Join(t.TempDir(), "levels.yaml")
	if err := os.WriteFile(levelsPath, levels.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := cli(t, url, "", "topology", "apply", levelsPath); r.code != 0 {
		t.Fatalf("apply the delay levels: %s", r.stderr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	defs, err := rabbittest.Ctl(ctx, "", "export_definitions", "-", "--format", "json", "-q")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	defsPath := filepath.Join(dir, "defs.json")
	if err := os.WriteFile(defsPath, []byte(defs), 0o600); err != nil {
		t.Fatal(err)
	}
	r := cli(t, url, "", "topology", "export", defsPath, "--vhost", vhost)
	if r.code != 0 {
		t.Fatalf("export: exit %d: %s", r.code, r.stderr)
	}
	golden(t, "export-yaml", r.stdout)
	if !strings.Contains(r.stderr, "left out 14 of warren's own entities") || strings.Contains(r.stdout, "warren.") {
		t.Fatalf("export kept warren's own entities or did not say so: %s", r.stderr)
	}
	if all := cli(t, url, "", "topology", "export", defsPath, "--vhost", vhost, "--include-warren"); all.code != 0 ||
		!strings.Contains(all.stdout, "warren.delay.01.wait") || strings.Contains(all.stdout, "warren.delay.02") {
		t.Fatalf("export --include-warren: exit %d: %s%s", all.code, all.stdout, all.stderr)
	}
	exported := filepath.Join(dir, "exported.yaml")
	if err := os.WriteFile(exported, []byte(r.stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := cli(t, url, "", "topology", "diff", exported); r.code != 0 || !strings.Contains(r.stdout, "\nno differences") {
		t.Fatalf("diff of the export: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	r = cli(t, url, "", "topology", "export", defsPath, "--vhost", vhost, "--format", "go")
	if r.code != 0 {
		t.Fatalf("export --format go: exit %d: %s", r.code, r.stderr)
	}
	golden(t, "export-go", r.stdout)
}

// TestTopologyReferenceMatchesTheLoader: docs/TOPOLOGY.md's table of keys
// is made from the definitions the loader reads (-update rewrites it), and
// each of its examples is a valid file: the reference cannot drift from
// the format.
func TestTopologyReferenceMatchesTheLoader(t *testing.T) {
	const path = "../../docs/TOPOLOGY.md"
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	const startMark, endMark = "<!-- keys:", "<!-- end of keys -->"
	start, end := strings.Index(doc, startMark), strings.Index(doc, endMark)
	if start < 0 || end < start {
		t.Fatalf("%s has no generated keys section", path)
	}
	start += strings.Index(doc[start:], "\n") + 1
	want := "\n" + formatReference()
	if *update {
		if err := os.WriteFile(path, []byte(doc[:start]+want+doc[end:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if doc[start:end] != want {
		t.Errorf("%s's keys differ from the loader's definitions; go test ./cmd/warren -run TestTopologyReference -update", path)
	}
	examples := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(doc, -1)
	checked := 0
	for i, m := range examples {
		if !strings.Contains(m[1], "name:") && !strings.Contains(m[1], "source:") {
			continue // the schema comment
		}
		if _, problems, err := parseTopology(fmt.Sprintf("example %d", i), []byte(m[1]), topology.Target{}); err != nil {
			t.Errorf("%s: example %d is not a valid file: %v %v", path, i, err, problems)
		}
		checked++
	}
	if checked < 3 {
		t.Fatalf("%d examples checked, want one per entity at least", checked)
	}
	// The schema has exactly the keys the loader accepts.
	schema := topologySchema()
	for _, s := range formatSections {
		props := schema["properties"].(map[string]any)[s.key].(map[string]any)["items"].(map[string]any)["properties"].(map[string]any)
		for key := range keysOf(s.entry) {
			if _, ok := props[key]; !ok {
				t.Errorf("the schema lacks %s.%s", s.key, key)
			}
		}
		if len(props) != len(keysOf(s.entry)) {
			t.Errorf("the schema's %s has %d keys, the loader %d", s.key, len(props), len(keysOf(s.entry)))
		}
	}
}
