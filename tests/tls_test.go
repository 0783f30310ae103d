package tests

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/retry"
)

type certPair struct{ cert, key string }

// pki writes a CA, and server and client certificates signed by it, as PEM
// files in dir.
func pki(t *testing.T, dir, name string) (ca string, server, client certPair) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	write := func(file string, blockType string, der []byte) string {
		p := filepath.Join(dir, file)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der}), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ca = write(name+"-ca.pem", "CERTIFICATE", caDER)
	issue := func(cn string, usage x509.ExtKeyUsage, serial int64) certPair {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, _ := x509.MarshalECPrivateKey(key)
		return certPair{write(name+"-"+cn+".pem", "CERTIFICATE", der), write(name+"-"+cn+".key", "EC PRIVATE KEY", keyDER)}
	}
	return ca, issue("server", x509.ExtKeyUsageServerAuth, 2), issue("client", x509.ExtKeyUsageClientAuth, 3)
}

func freeTCPPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_ = os.Chmod(filepath.Dir(dir), 0o711) // the node runs as the rabbitmq user
	_ = os.Chmod(dir, 0o755)
	ca, server, client := pki(t, dir, "good")
	otherCA, _, _ := pki(t, dir, "other")
	port := freeTCPPort(t)
	node := rabbittest.StartNode(t, rabbittest.NodeOptions{Config: []string{
		fmt.Sprintf("listeners.ssl.1 = 127.0.0.1:%d", port),
		"ssl_options.cacertfile = " + ca,
		"ssl_options.certfile = " + server.cert,
		"ssl_options.keyfile = " + server.key,
		"ssl_options.verify = verify_peer",
		"ssl_options.fail_if_no_peer_cert = false",
		// Logins: PLAIN, and EXTERNAL (the client certificate, its common
		// name the user) to a client that presents one; not AMQPLAIN.
		"auth_mechanisms.1 = PLAIN",
		"auth_mechanisms.2 = EXTERNAL",
		"ssl_cert_login_from = common_name",
	}, Plugins: []string{"rabbitmq_auth_mechanism_ssl"}})
	base := fmt.Sprintf("amqps://guest:guest@localhost:%d/", port)
	open := func(url string, cfg conn.Config) error {
		c, err := conn.New(url, cfg)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		err = c.Open(ctx)
		if err == nil {
			ch, cerr := c.Channel(ctx)
			if cerr == nil {
				_, cerr = ch.QueueDeclare(ctx, "", false, true, true, false, nil)
			}
			err = cerr
		}
		_ = c.Close(ctx)
		return err
	}
	// A wait for the TLS listener: it opens with the AMQP one, but give it
	// a moment on a slow machine.
	var dialErr error
	rabbittest.Eventually(t, 20*time.Second, "the TLS listener", func() bool {
		var c net.Conn
		if c, dialErr = net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); dialErr != nil {
			return false
		}
		c.Close()
		return true
	}, func() string { return dialErr.Error() })

	if err := open(base+"?cafile="+ca+"&certfile="+client.cert+"&keyfile="+client.key, conn.Config{}); err != nil {
		t.Fatalf("amqps with cafile, certfile and keyfile: %v", err)
	}
	if err := open(base+"?cafile="+ca, conn.Config{}); err != nil {
		t.Fatalf("amqps with cafile only: %v", err)
	}
	// RabbitMQ's URI spec's names (amqp091-go's): a URL written for it.
	if err := open(base+"?cacertfile="+ca+"&server_name_indication=localhost", conn.Config{}); err != nil {
		t.Fatalf("amqps with cacertfile and server_name_indication: %v", err)
	}
	if err := open(base+"?cacertfile="+ca+"&server_name_indication=elsewhere.example", conn.Config{}); err == nil {
		t.Fatal("server_name_indication was not the name the certificate was checked against")
	}
	// Verification is on by default: the system roots do not know our CA.
	err := open(base, conn.Config{})
	var ua x509.UnknownAuthorityError
	if !errors.As(err, &ua) || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("amqps without our CA: %v, want an unknown-authority error", err)
	}
	err = open(base+"?cafile="+otherCA, conn.Config{})
	if !errors.As(err, &ua) {
		t.Fatalf("amqps with the wrong CA: %v, want an unknown-authority error", err)
	}
	t.Logf("wrong CA: %v", err)
	if err := open(base+"?no_verify_ssl=true", conn.Config{}); err != nil {
		t.Fatalf("no_verify_ssl: %v", err)
	}
	if err := open(base+"?no_verify_ssl=false", conn.Config{}); err == nil {
		t.Fatal("no_verify_ssl=false skipped verification")
	}
	pool := x509.NewCertPool()
	pemBytes, _ := os.ReadFile(ca)
	pool.AppendCertsFromPEM(pemBytes)
	if err := open(base, conn.Config{TLS: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}); err != nil {
		t.Fatalf("Config.TLS: %v", err)
	}

	t.Run("external login", func(t *testing.T) { externalLogin(t, node, port, ca, client) })
}

// externalLogin: auth_mechanism=external logs in as the user the client
// certificate names, with no password, as the broker reports the
// connection; and a URL whose mechanisms the broker does not offer fails
// its first attempt as a refused login that no retry repeats.
func externalLogin(t *testing.T, node *rabbittest.Node, port int, ca string, client certPair) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The certificate's common name is "client": the broker's user of that
	// name, whose password nobody sends.
	if _, err := node.Ctl(ctx, "add_user", "client", "never-sent"); err != nil {
		t.Fatal(err)
	}
	if _, err := node.Ctl(ctx, "set_permissions", "-p", "/", "client", ".*", ".*", ".*"); err != nil {
		t.Fatal(err)
	}
	certs := fmt.Sprintf("amqps://localhost:%d/?cacertfile=%s&certfile=%s&keyfile=%s", port, ca, client.cert, client.key)
	c, err := conn.New(certs+"&auth_mechanism=external", conn.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if err := c.Open(ctx); err != nil {
		t.Fatalf("Open with auth_mechanism=external: %v", err)
	}
	ch, err := c.Channel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(ctx, "", false, true, true, false, nil); err != nil {
		t.Fatalf("a channel's call after an EXTERNAL login: %v", err)
	}
	var listed string
	rabbittest.Eventually(t, 20*time.Second, "the broker listing the connection", func() bool {
		listed, err = node.Ctl(ctx, "list_connections", "user", "auth_mechanism")
		return err == nil && strings.Contains(listed, "client\tEXTERNAL")
	}, func() string { return fmt.Sprintf("%q %v", listed, err) })

	// AMQPLAIN is not offered: the first attempt fails, and a policy that
	// would try five times tries once.
	refused, err := conn.New(certs+"&auth_mechanism=amqplain", conn.Config{
		FirstConnect: conn.RetryPolicy{MaxAttempts: 5, Backoff: retry.Backoff{InitialInterval: 10 * time.Millisecond, Multiplier: 1, MaxInterval: 10 * time.Millisecond}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer refused.Close(context.Background())
	err = refused.Open(ctx)
	var gave *conn.GiveUpError
	if !errors.As(err, &gave) || gave.Attempts != 1 || !errors.Is(err, conn.ErrNotRetryable) || !conn.IsAuthError(err) || !errors.Is(err, amqp.ErrSASL) {
		t.Fatalf("Open with a mechanism the broker does not offer: %v, want a refused login after 1 attempt, not retryable", err)
	}
	if !strings.Contains(err.Error(), "AMQPLAIN") {
		t.Fatalf("the refusal does not name the mechanism asked for: %v", err)
	}
	// A node's mechanisms are its own: with two nodes in the URL (this one
	// by two names), both are asked before the retries end.
	twice := fmt.Sprintf("amqps://localhost:%d,127.0.0.1:%d/?cacertfile=%s&auth_mechanism=amqplain", port, port, ca)
	refusedTwice, err := conn.New(twice, conn.Config{
		FirstConnect: conn.RetryPolicy{MaxAttempts: 5, Backoff: retry.Backoff{InitialInterval: 10 * time.Millisecond, Multiplier: 1, MaxInterval: 10 * time.Millisecond}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer refusedTwice.Close(context.Background())
	err = refusedTwice.Open(ctx)
	if !errors.As(err, &gave) || gave.Attempts != 2 || !errors.Is(err, conn.ErrNotRetryable) || !errors.Is(err, amqp.ErrSASL) {
		t.Fatalf("Open through two nodes that offer no such mechanism: %v, want a refused login after 2 attempts, not retryable", err)
	}
}
