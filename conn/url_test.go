package conn

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseURLValid(t *testing.T) {
	tests := []struct {
		in    string
		hosts []string
		vhost string
		user  string
		tls   bool
		check func(t *testing.T, u *URL)
	}{
		{in: "amqp://localhost", hosts: []string{"localhost:5672"}, vhost: "/", user: "guest"},
		{in: "amqps://u:p@h", hosts: []string{"h:5671"}, vhost: "/", user: "u", tls: true},
		{in: "amqp://u:p%40ss@h1:1,h2:2,[::1]:3/v%2Fx", hosts: []string{"h1:1", "h2:2", "[::1]:3"}, vhost: "v/x", user: "u"},
		{in: "amqp://h/?connection_timeout=500", hosts: []string{"h:5672"}, vhost: "/", user: "guest", check: func(t *testing.T, u *URL) {
			if u.Options.ConnectionTimeout != 500*time.Millisecond {
				t.Fatalf("connection_timeout=500 gave %v, want 500ms", u.Options.ConnectionTimeout)
			}
		}},
		{in: "amqp://h/vh?heartbeat=0&channel_max=7&frame_max=8192&connection_name=svc&no_verify_ssl=true&server_name=x", hosts: []string{"h:5672"}, vhost: "vh", user: "guest", check: func(t *testing.T, u *URL) {
			o := u.Options
			if !o.HeartbeatSet || o.Heartbeat != 0 || o.ChannelMax != 7 || o.FrameMax != 8192 || o.ConnectionName != "svc" || !o.NoVerifySSL || o.ServerName != "x" {
				t.Fatalf("options: %+v", o)
			}
		}},
		{in: "amqps://h?auth_mechanism=External&auth_mechanism=plain&auth_mechanism=external", hosts: []string{"h:5671"}, vhost: "/", user: "guest", tls: true, check: func(t *testing.T, u *URL) {
			if got := strings.Join(u.Options.AuthMechanisms, ","); got != "EXTERNAL,PLAIN" {
				t.Fatalf("auth_mechanism gave %q, want EXTERNAL,PLAIN: in order, once each", got)
			}
		}},
		{in: "amqps://h?cacertfile=/ca.pem&server_name_indication=broker.example&cafile=/ca.pem", hosts: []string{"h:5671"}, vhost: "/", user: "guest", tls: true, check: func(t *testing.T, u *URL) {
			if u.Options.CAFile != "/ca.pem" || u.Options.ServerName != "broker.example" {
				t.Fatalf("RabbitMQ's names for the CA file and the server name gave %+v", u.Options)
			}
		}},
		{in: "amqp://h?auth_mechanism=amqplain", hosts: []string{"h:5672"}, vhost: "/", user: "guest", check: func(t *testing.T, u *URL) {
			if got := strings.Join(u.Options.AuthMechanisms, ","); got != "AMQPLAIN" {
				t.Fatalf("auth_mechanism gave %q, want AMQPLAIN", got)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			u, err := ParseURL(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(u.Hosts, ",") != strings.Join(tt.hosts, ",") || u.Vhost != tt.vhost || u.Username != tt.user || u.TLS != tt.tls {
				t.Fatalf("got %+v", u)
			}
			if tt.check != nil {
				tt.check(t, u)
			}
		})
	}
}

func TestParseURLInvalidNamesTheParameter(t *testing.T) {
	tests := []struct{ in, param string }{
		{"localhost:5672", "scheme"},
		{"http://h", "scheme"},
		{"amqp://", "host"},
		{"amqp://h1,,h2", "host"},
		{"amqp://h:0", "port"},
		{"amqp://h:99999", "port"},
		{"amqp://h:abc", "port"},
		{"amqp://[::1", "host"},
		{"amqp://h?heartbeat=-1", "heartbeat"},
		{"amqp://h?heartbeat=ten", "heartbeat"},
		{"amqp://h?connection_timeout=0", "connection_timeout"},
		{"amqp://h?channel_max=70000", "channel_max"},
		{"amqp://h?frame_max=10", "frame_max"},
		{"amqp://h?no_verify_ssl=maybe", "no_verify_ssl"},
		{"amqp://h?hearbeat=10", "hearbeat"},
		{"amqps://h?certfile=/c.pem", "certfile"},
		{"amqp://u:p%zz@h", "password"},
		{"amqp://h/%zz", "vhost"},
		{"amqps://h?cafile=/a.pem&cacertfile=/b.pem", "cacertfile"},
		{"amqps://h?server_name=a&server_name_indication=b", "server_name_indication"},
		{"amqp://h?auth_mechanism=cram-md5", "auth_mechanism"},
		{"amqp://h?auth_mechanism=", "auth_mechanism"},
		{"amqp://h?auth_mechanism=external", "auth_mechanism"}, // EXTERNAL is the TLS client certificate
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := ParseURL(tt.in)
			var ue *URLError
			if !errors.As(err, &ue) {
				t.Fatalf("got %v, want *URLError", err)
			}
			if ue.Param != tt.param {
				t.Fatalf("error names %q, want %q: %v", ue.Param, tt.param, err)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatal("URLError does not match ErrInvalidConfig")
			}
		})
	}
}

func TestPasswordNeverShown(t *testing.T) {
	const secret = "s3cr3t-Pa55"
	for _, raw := range []string{
		"amqp://user:" + secret + "@h1,h2/vh",
		"amqp://user:" + secret + "@h:1/vh?heartbeat=bad",
		"amqp://user:" + secret + "%zz@h",
		"amqp://user:" + secret + "@h:port",
	} {
		u, err := ParseURL(raw)
		if err != nil {
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("error shows the password: %v", err)
			}
			continue
		}
		if s := u.String(); strings.Contains(s, secret) {
			t.Fatalf("String shows the password: %s", s)
		}
		c, err := New(raw, Config{})
		if err != nil {
			t.Fatal(err)
		}
		if s := c.String(); strings.Contains(s, secret) {
			t.Fatalf("Conn.String shows the password: %s", s)
		}
		if !strings.Contains(u.dialURL(u.Hosts[0], u.Username, u.password), secret) {
			t.Fatal("dial URL lost the password")
		}
	}
}

func TestConfigValidateJoinsEveryProblem(t *testing.T) {
	_, err := New("amqp://h", Config{Heartbeat: -1, DialTimeout: -1, AlternateURLs: []string{"nope"}})
	if err == nil {
		t.Fatal("no error")
	}
	for _, field := range []string{"Heartbeat", "DialTimeout", "AlternateURLs[0]"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error does not name %s: %v", field, err)
		}
	}
	if !errors.Is(err, ErrInvalidConfig) {
		t.Fatal("not ErrInvalidConfig")
	}
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatal("not a *ConfigError")
	}
}

func TestTLSFilesAreCheckedByNew(t *testing.T) {
	_, err := New("amqps://h?cafile=/does/not/exist.pem", Config{})
	var ue *URLError
	if !errors.As(err, &ue) || ue.Param != "cafile" {
		t.Fatalf("got %v, want a URLError naming cafile", err)
	}
	// A missing key file is named as the key file, not the certificate.
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = New("amqps://h?certfile="+certFile+"&keyfile="+keyFile, Config{})
	if !errors.As(err, &ue) || ue.Param != "keyfile" {
		t.Fatalf("a missing key file: %v, want a URLError naming keyfile", err)
	}
	// A key that is not the certificate's: named with both files.
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherDER, _ := x509.MarshalECPrivateKey(other)
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: otherDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = New("amqps://h?certfile="+certFile+"&keyfile="+keyFile, Config{})
	if !errors.As(err, &ue) || ue.Param != "certfile" || !strings.Contains(err.Error(), keyFile) {
		t.Fatalf("a key that does not match: %v, want a URLError naming certfile and the key file", err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New("amqps://h?certfile="+certFile+"&keyfile="+keyFile, Config{}); err != nil {
		t.Fatalf("the certificate with its own key: %v", err)
	}
}

// TestExternalLoginNeedsAClientCertificate: auth_mechanism=external
// without a certificate to log in with, or with a credentials provider it
// would never call, is refused by New, before any dial.
func TestExternalLoginNeedsAClientCertificate(t *testing.T) {
	_, err := New("amqps://h?auth_mechanism=external", Config{})
	var ue *URLError
	if !errors.As(err, &ue) || ue.Param != "auth_mechanism" || !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("external without a client certificate: %v, want a URLError naming auth_mechanism", err)
	}
	_, err = New("amqps://h?auth_mechanism=external", Config{TLS: &tls.Config{MinVersion: tls.VersionTLS12}})
	if !errors.As(err, &ue) || ue.Param != "auth_mechanism" {
		t.Fatalf("external with a Config.TLS without certificates: %v, want a URLError naming auth_mechanism", err)
	}
	withCert := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{{}}}
	if _, err := New("amqps://h?auth_mechanism=external", Config{TLS: withCert}); err != nil {
		t.Fatalf("external with a client certificate in Config.TLS: %v", err)
	}
	provider := func(context.Context) (Credentials, error) { return Credentials{Username: "u", Password: "p"}, nil }
	_, err = New("amqps://h?auth_mechanism=external", Config{TLS: withCert, Credentials: provider})
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Field != "conn.Config.Credentials" {
		t.Fatalf("external with a credentials provider: %v, want a ConfigError naming Credentials", err)
	}
	// With PLAIN beside it, the provider's login has a use.
	if _, err := New("amqps://h?auth_mechanism=external&auth_mechanism=plain", Config{TLS: withCert, Credentials: provider}); err != nil {
		t.Fatalf("external and plain with a credentials provider: %v", err)
	}
}

// TestTLSConfigWithNoTLSHostIsRefused: a Config.TLS beside URLs that are all
// amqp (plain TCP) is a mistake that would send the login in the clear.
func TestTLSConfigWithNoTLSHostIsRefused(t *testing.T) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	_, err := New("amqp://h", Config{TLS: tc})
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Field != "conn.Config.TLS" || !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Config.TLS with an amqp URL: %v, want a ConfigError naming conn.Config.TLS", err)
	}
	_, err = New("amqp://h1,h2", Config{TLS: tc, AlternateURLs: []string{"amqp://h3"}})
	if !errors.As(err, &ce) {
		t.Fatalf("Config.TLS with every host amqp: %v, want a ConfigError", err)
	}
	// One amqps host is what the config is for; the amqp host beside it
	// is still dialled without TLS.
	c, err := New("amqp://h1", Config{TLS: tc, AlternateURLs: []string{"amqps://h2"}})
	if err != nil {
		t.Fatalf("Config.TLS with an amqps alternate: %v", err)
	}
	for u, cfg := range c.tls {
		if (cfg != nil) != u.TLS {
			t.Errorf("%s: TLS config %v", u, cfg != nil)
		}
	}
	if len(c.tls) != 2 {
		t.Errorf("%d URLs with their TLS settings, want 2", len(c.tls))
	}
	if _, err := New("amqps://h1", Config{TLS: tc}); err != nil {
		t.Fatalf("Config.TLS with amqps: %v", err)
	}
}

// TestSharedRefusesWhatNewRefuses: a shared handle's bad URL or Config is
// refused by Shared, as New refuses it, not later by Open.
func TestSharedRefusesWhatNewRefuses(t *testing.T) {
	var ce *ConfigError
	if _, err := Shared("amqp://h", Config{TLS: &tls.Config{MinVersion: tls.VersionTLS12}}); !errors.As(err, &ce) || ce.Field != "conn.Config.TLS" {
		t.Fatalf("Shared with Config.TLS and no amqps host: %v, want a ConfigError naming conn.Config.TLS", err)
	}
	var ue *URLError
	if _, err := Shared("amqps://h?auth_mechanism=external", Config{}); !errors.As(err, &ue) || ue.Param != "auth_mechanism" {
		t.Fatalf("Shared with external and no client certificate: %v, want a URLError naming auth_mechanism", err)
	}
	if _, err := Shared("amqp://h", Config{Heartbeat: 1500 * time.Millisecond}); !errors.As(err, &ce) || ce.Field != "conn.Config.Heartbeat" {
		t.Fatalf("Shared with a heartbeat of 1.5s: %v, want a ConfigError naming conn.Config.Heartbeat", err)
	}
	if _, err := Shared("amqp://h", Config{}); err != nil {
		t.Fatalf("Shared with a good URL: %v", err)
	}
}

func TestConfigDefaultsFromURL(t *testing.T) {
	c, err := New("amqp://h?heartbeat=3&connection_timeout=250&connection_name=x", Config{})
	if err != nil {
		t.Fatal(err)
	}
	if c.cfg.Heartbeat != 3*time.Second || c.cfg.DialTimeout != 250*time.Millisecond || c.cfg.ConnectionName != "x" {
		t.Fatalf("defaults from URL not applied: %+v", c.cfg)
	}
	c2, _ := New("amqp://h", Config{})
	if c2.cfg.Heartbeat != 10*time.Second {
		t.Fatalf("default heartbeat %v, want 10s", c2.cfg.Heartbeat)
	}
}

func FuzzParseURL(f *testing.F) {
	for _, s := range []string{"amqp://u:p@h:1,h2/v?heartbeat=1", "amqps://[::1]:5671/%2f?cafile=x", "amqp://", "amqp://@/?", "amqp://h?connection_timeout=1e3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseURL(s)
		if err != nil {
			var ue *URLError
			if !errors.As(err, &ue) {
				t.Fatalf("untyped error %T: %v", err, err)
			}
			return
		}
		if len(u.Hosts) == 0 {
			t.Fatal("parsed URL without hosts")
		}
		_ = u.String()
	})
}
