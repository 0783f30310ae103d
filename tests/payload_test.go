package tests

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/payload"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/topology"
)

func aesKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// TestLargeBodyByClaimCheck: a broker whose maximum message size is 1 MiB
// (a node of the test's own) refuses a 64 MiB body; with a claim check the
// same body goes through the store, encrypted on the way, and arrives
// whole.
func TestLargeBodyByClaimCheck(t *testing.T) {
	t.Parallel()
	node := rabbittest.StartNode(t, rabbittest.NodeOptions{Config: []string{"max_message_size = 1048576"}})
	keys, err := payload.NewStaticKeys("k1", map[string][]byte{"k1": aesKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	m, err := payload.NewMarshaler(payload.Config{Encryption: &payload.Encryption{Keys: keys},
		ClaimCheck: &payload.ClaimCheck{Store: payload.DirStore{Dir: t.TempDir()}}})
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 64<<20)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	c := rabbittest.OpenConn(t, node.URL(), conn.Config{})
	sub, err := warren.NewSubscriber(c, warren.SubscriberConfig{Marshaler: m})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	out, err := sub.Subscribe(ctxT(t, 2*time.Minute), "big")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := warren.NewPublisher(c, warren.PublisherConfig{Marshaler: m, PublishTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := pub.Publish("big", message.NewMessage("claimed", big)); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-out:
		got.Ack()
		if got.UUID != "claimed" || !bytes.Equal(got.Payload, big) {
			t.Fatalf("received %s, %d bytes, want the 64 MiB body whole", got.UUID, len(got.Payload))
		}
	case <-time.After(time.Minute):
		t.Fatal("the claimed message never arrived")
	}
	// The same body without the claim check: the broker's limit is real.
	plainPub, err := warren.NewPublisher(rabbittest.OpenConn(t, node.URL(), conn.Config{}), warren.PublisherConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer plainPub.Close()
	if err := plainPub.Publish("big", message.NewMessage("too-big", big)); !errors.Is(err, broker.ErrMessageTooLarge) {
		t.Fatalf("64 MiB to a broker of 1 MiB without a claim check: %v, want ErrMessageTooLarge", err)
	}
	if err := plainPub.Publish("big", message.NewMessage("small", []byte("fits"))); err != nil {
		t.Fatalf("a publish after the refused one: %v", err)
	}
}

// TestEncryptedRouteAcrossAKeyRotation: a route and its producer share
// rotating keys; messages sealed before and after a rotation mid-stream are
// all handled with their bodies. A message sealed with a key the route is
// not given, and one whose blob is gone, are dead-lettered once each, as
// they are (still sealed: replayable once the key is back), never retried.
func TestEncryptedRouteAcrossAKeyRotation(t *testing.T) {
	t.Parallel()
	b := rabbittest.Shared(t)
	keys, err := payload.NewStaticKeys("k1", map[string][]byte{"k1": aesKey(t), "k2": aesKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	m, err := payload.NewMarshaler(payload.Config{Encryption: &payload.Encryption{Keys: keys},
		ClaimCheck: &payload.ClaimCheck{Store: payload.DirStore{Dir: dir}, Threshold: 100}})
	if err != nil {
		t.Fatal(err)
	}
	r := newRouter(t, b.URL, router.Config{})
	q := b.Name("sealed")
	b.Name("sealed.dlq")
	var mu sync.Mutex
	handled := map[string]string{}
	if err := r.AddRoute(router.Route{Name: "sealed", Queue: topology.QueueSpec{Name: q, Durable: true}, Marshaler: m, MaxInFlight: 4,
		Handler: func(msg *message.Message) error {
			mu.Lock()
			handled[msg.UUID] = string(msg.Payload)
			mu.Unlock()
			return nil
		}}); err != nil {
		t.Fatal(err)
	}
	startRouter(t, r)
	pub, err := warren.NewPublisher(openConn(t, b.URL), warren.PublisherConfig{Mapping: warren.ExistingQueues{}, Marshaler: m})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	for i := range 100 {
		if i == 50 {
			if err := keys.Rotate("k2"); err != nil {
				t.Fatal(err)
			}
		}
		if err := pub.Publish(q, message.NewMessage(fmt.Sprint(i), []byte(fmt.Sprintf("order %d", i)))); err != nil {
			t.Fatal(err)
		}
	}
	rabbittest.Eventually(t, 30*time.Second, "100 handled across the rotation", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(handled) == 100
	})
	mu.Lock()
	for i := range 100 {
		if handled[fmt.Sprint(i)] != fmt.Sprintf("order %d", i) {
			t.Errorf("message %d: %q", i, handled[fmt.Sprint(i)])
		}
	}
	mu.Unlock()

	// A key the route is not given: the producer's own.
	other, _ := payload.NewStaticKeys("elsewhere", map[string][]byte{"elsewhere": aesKey(t)})
	om, _ := payload.NewMarshaler(payload.Config{Encryption: &payload.Encryption{Keys: other}})
	opub, err := warren.NewPublisher(openConn(t, b.URL), warren.PublisherConfig{Mapping: warren.ExistingQueues{}, Marshaler: om})
	if err != nil {
		t.Fatal(err)
	}
	defer opub.Close()
	if err := opub.Publish(q, message.NewMessage("unknown-key", []byte("secret order"))); err != nil {
		t.Fatal(err)
	}
	// A blob that is gone by the time the message is handled.
	if err := r.Pause(ctxT(t, 10*time.Second), "sealed", "test"); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(q, message.NewMessage("blob-gone", bytes.Repeat([]byte("x"), 1000))); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		_ = os.Remove(filepath.Join(dir, e.Name()))
	}
	if err := r.Resume(ctxT(t, 10*time.Second), "sealed", "test"); err != nil {
		t.Fatal(err)
	}
	waitQueueDepth(t, b.URL, q+".dlq", 2, 20*time.Second)
	b.WaitSettled(t, q, 10*time.Second)
	waitQueueDepth(t, b.URL, q+".dlq", 2, time.Second)
	for range 2 {
		d := getOne(t, b.URL, q+".dlq")
		switch d.MessageId {
		case "unknown-key":
			if d.Headers[payload.HeaderKeyID] != "elsewhere" || bytes.Contains(d.Body, []byte("secret order")) {
				t.Errorf("the dead letter of a sealed message is not sealed as it was: %v", d.Headers)
			}
		case "blob-gone":
			if d.Headers[payload.HeaderClaimCheck] == nil {
				t.Errorf("the dead letter lost its claim check: %v", d.Headers)
			}
		default:
			t.Errorf("dead letter %q", d.MessageId)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if _, ok := handled["unknown-key"]; ok {
		t.Error("a message of an unknown key reached the handler")
	}
}

// TestOrphanBlobIsCleanedUp: a publish that fails after its body went to
// the store (here: unroutable, mandatory) leaves a blob nobody will fetch;
// the store's retention removes it.
func TestOrphanBlobIsCleanedUp(t *testing.T) {
	t.Parallel()
	b := rabbittest.Shared(t)
	store := payload.DirStore{Dir: t.TempDir()}
	m, _ := payload.NewMarshaler(payload.Config{ClaimCheck: &payload.ClaimCheck{Store: store, Threshold: 1}})
	pub, err := warren.NewPublisher(openConn(t, b.URL), warren.PublisherConfig{Mapping: warren.ExistingQueues{}, Mandatory: true, Marshaler: m})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := pub.Publish(b.Name("nobody-home"), message.NewMessage("lost", []byte("a body"))); !errors.Is(err, broker.ErrUnroutable) {
		t.Fatalf("publish: %v, want unroutable", err)
	}
	entries, _ := os.ReadDir(store.Dir)
	if len(entries) != 1 {
		t.Fatalf("%d blobs after the failed publish, want the orphan", len(entries))
	}
	n, err := store.Cleanup(ctxT(t, 5*time.Second), time.Now().Add(time.Second))
	if err != nil || n != 1 {
		t.Fatalf("cleanup removed %d (%v), want the orphan", n, err)
	}
}

// TestCompressedBodyAndANonWarrenClient: a compressed body says so in the
// content-encoding property another client reads (raw amqp091-go here
// gunzips it with the standard library), and a gzip body another client
// sent with that property reaches a warren handler as it was.
func TestCompressedBodyAndANonWarrenClient(t *testing.T) {
	t.Parallel()
	b := rabbittest.Shared(t)
	c := openConn(t, b.URL)
	q := b.Name("gzipped")
	m, _ := payload.NewMarshaler(payload.Config{Compression: &payload.Compression{Threshold: 10}})
	pub, err := warren.NewPublisher(c, warren.PublisherConfig{Marshaler: m})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	text := bytes.Repeat([]byte("compressible order line\n"), 200)
	if err := pub.Publish(q, message.NewMessage("from-warren", text)); err != nil {
		t.Fatal(err)
	}
	d := getOne(t, b.URL, q)
	if d.ContentEncoding != "gzip" || len(d.Body) >= len(text) {
		t.Fatalf("content-encoding %q, %d bytes of %d", d.ContentEncoding, len(d.Body), len(text))
	}
	zr, err := gzip.NewReader(bytes.NewReader(d.Body))
	if err != nil {
		t.Fatal(err)
	}
	if plain, err := io.ReadAll(zr); err != nil || !bytes.Equal(plain, text) {
		t.Fatalf("a raw client's gunzip: %v", err)
	}

	var zipped bytes.Buffer
	zw := gzip.NewWriter(&zipped)
	_, _ = zw.Write(text)
	_ = zw.Close()
	ch := rabbittest.RawChannel(t, b.URL)
	if err := ch.Publish("", q, false, false, amqp.Publishing{MessageId: "from-raw", ContentEncoding: "gzip", Body: zipped.Bytes()}); err != nil {
		t.Fatal(err)
	}
	if got := consumeOne(t, c, m, q); got.UUID != "from-raw" || !bytes.Equal(got.Payload, text) {
		t.Fatalf("got %s, %d bytes", got.UUID, len(got.Payload))
	}
}

// consumeOne subscribes to q with a Subscriber on c whose marshaler is m
// and returns the first message, acked.
func consumeOne(t *testing.T, c *conn.Conn, m warren.Marshaler, q string) *message.Message {
	t.Helper()
	sub, err := warren.NewSubscriber(c, warren.SubscriberConfig{Marshaler: m})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	out, err := sub.Subscribe(ctxT(t, 30*time.Second), q)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-out:
		got.Ack()
		return got
	case <-time.After(20 * time.Second):
		t.Fatalf("nothing arrived on %s", q)
		return nil
	}
}

// pikaScript reads one message of a queue with Python's pika, gunzips it
// when its content-encoding says gzip and prints it; then publishes a gzip
// body of its own with that property to another queue.
const pikaScript = `
import gzip, sys, pika
url, source, target = sys.argv[1], sys.argv[2], sys.argv[3]
conn = pika.BlockingConnection(pika.URLParameters(url))
ch = conn.channel()
method, props, body = ch.basic_get(source, auto_ack=True)
if method is None:
    sys.exit("no message")
if props.content_encoding == "gzip":
    body = gzip.decompress(body)
sys.stdout.write(props.content_encoding + "\n" + body.decode())
ch.queue_declare(target, durable=True)
ch.basic_publish("", target, gzip.compress(b"from pika " * 500),
                 pika.BasicProperties(content_encoding="gzip", message_id="from-pika", delivery_mode=2))
conn.close()
`

// TestPikaReadsAndWritesCompressedBodies: a Python service on pika reads a
// body warren compressed (by its content-encoding, with Python's own gzip)
// and sends one of its own that a warren handler receives decompressed.
func TestPikaReadsAndWritesCompressedBodies(t *testing.T) {
	t.Parallel()
	b := rabbittest.Shared(t)
	if err := exec.Command("/usr/bin/python3", "-c", "import pika").Run(); err != nil {
		t.Fatalf("Python's pika is missing (scripts/pika.sh installs it): %v", err)
	}
	c := openConn(t, b.URL)
	toPika, fromPika := b.Name("to-pika"), b.Name("from-pika")
	m, _ := payload.NewMarshaler(payload.Config{Compression: &payload.Compression{Threshold: 10}})
	pub, err := warren.NewPublisher(c, warren.PublisherConfig{Marshaler: m})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	text := bytes.Repeat([]byte("order line for python\n"), 100)
	if err := pub.Publish(toPika, message.NewMessage("for-pika", text)); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(t.TempDir(), "pika_interop.py")
	if err := os.WriteFile(script, []byte(pikaScript), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("/usr/bin/python3", script, b.URL, toPika, fromPika).CombinedOutput()
	if err != nil {
		t.Fatalf("pika: %v\n%s", err, out)
	}
	if want := "gzip\n" + string(text); string(out) != want {
		t.Fatalf("pika read %d bytes %q..., want the gzip-encoded body decompressed", len(out), out[:min(len(out), 40)])
	}
	if got := consumeOne(t, c, m, fromPika); got.UUID != "from-pika" || string(got.Payload) != string(bytes.Repeat([]byte("from pika "), 500)) {
		t.Fatalf("from pika: %s, %q", got.UUID, got.Payload[:min(len(got.Payload), 30)])
	}
}

// TestDeleteOnAckKeepsWhatDeadLettersNeed: with DeleteOnAck a handled
// message's blob goes once it is acked, and a dead-lettered message's blob
// goes too, while its dead letter (a copy claim-checked anew) stays
// readable; a poison delivery's dead letter, which shares the original's
// blob, keeps it.
func TestDeleteOnAckKeepsWhatDeadLettersNeed(t *testing.T) {
	t.Parallel()
	b := rabbittest.Shared(t)
	dir := t.TempDir()
	m, err := payload.NewMarshaler(payload.Config{ClaimCheck: &payload.ClaimCheck{Store: payload.DirStore{Dir: dir}, Threshold: 10, DeleteOnAck: true}})
	if err != nil {
		t.Fatal(err)
	}
	blobs := func() int {
		entries, _ := os.ReadDir(dir)
		return len(entries)
	}
	r := newRouter(t, b.URL, router.Config{})
	q := b.Name("deleted-on-ack")
	b.Name("deleted-on-ack.dlq")
	handled := make(chan string, 10)
	if err := r.AddRoute(router.Route{Name: "claims", Queue: topology.QueueSpec{Name: q, Durable: true}, Marshaler: m,
		Handler: func(msg *message.Message) error {
			if msg.UUID == "refused" {
				return ack.Permanent(errors.New("not this one"))
			}
			handled <- string(msg.Payload)
			return nil
		}}); err != nil {
		t.Fatal(err)
	}
	startRouter(t, r)
	pub, err := warren.NewPublisher(openConn(t, b.URL), warren.PublisherConfig{Mapping: warren.ExistingQueues{}, Marshaler: m})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	body := bytes.Repeat([]byte("a large order line "), 100)
	if err := pub.Publish(q, message.NewMessage("handled", body)); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-handled:
		if got != string(body) {
			t.Fatalf("handled %d bytes", len(got))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("never handled")
	}
	rabbittest.Eventually(t, 10*time.Second, "the acked message's blob deleted", func() bool { return blobs() == 0 })

	if err := pub.Publish(q, message.NewMessage("refused", body)); err != nil {
		t.Fatal(err)
	}
	waitQueueDepth(t, b.URL, q+".dlq", 1, 20*time.Second)
	b.WaitSettled(t, q, 10*time.Second)
	rabbittest.Eventually(t, 10*time.Second, "the original's blob deleted, the dead letter's kept", func() bool { return blobs() == 1 })
	d := getOne(t, b.URL, q+".dlq")
	back, err := m.Unmarshal(&d)
	if err != nil || !bytes.Equal(back.Payload, body) {
		t.Fatalf("the dead letter after the original's ack: %v", err)
	}

	// Poison: a delivery whose blob is there but whose encryption this
	// route does not know. Its dead letter is the delivery as it came,
	// sharing the blob, so its ack must not delete it.
	ref := "0123456789abcdef0123456789abcdef"
	if err := (payload.DirStore{Dir: dir}).Put(ctxT(t, 5*time.Second), ref, bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	ch := rabbittest.RawChannel(t, b.URL)
	if err := ch.Publish("", q, false, false, amqp.Publishing{MessageId: "poison",
		Headers: amqp.Table{payload.HeaderClaimCheck: ref, payload.HeaderEncryption: "rot13"}}); err != nil {
		t.Fatal(err)
	}
	waitQueueDepth(t, b.URL, q+".dlq", 1, 20*time.Second)
	// A message handled after the poison: once its blob is gone, the
	// poison's settlement is long over.
	if err := pub.Publish(q, message.NewMessage("handled-after", body)); err != nil {
		t.Fatal(err)
	}
	<-handled
	rabbittest.Eventually(t, 10*time.Second, "the later message's blob deleted", func() bool { return blobs() == 2 })
	if _, err := os.Stat(filepath.Join(dir, ref)); err != nil {
		t.Fatalf("the poison's blob, which its dead letter needs: %v", err)
	}
	if d := getOne(t, b.URL, q+".dlq"); d.Headers[payload.HeaderClaimCheck] != ref {
		t.Fatalf("the poison's dead letter: %v", d.Headers)
	}
}
