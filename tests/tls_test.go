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

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
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
	rabbittest.StartNode(t, rabbittest.NodeOptions{Config: []string{
		fmt.Sprintf("listeners.ssl.1 = 127.0.0.1:%d", port),
		"ssl_options.cacertfile = " + ca,
		"ssl_options.certfile = " + server.cert,
		"ssl_options.keyfile = " + server.key,
		"ssl_options.verify = verify_peer",
		"ssl_options.fail_if_no_peer_cert = false",
	}})
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
}
