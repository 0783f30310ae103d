package conn

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/internal/configerr"
	"github.com/warrenmq/warren/telemetry"
)

// Config shapes a Conn. The zero value is usable: every field documents its
// default. New copies it.
type Config struct {
	// AlternateURLs are more brokers to fail over to, tried after the hosts
	// of the URL given to New, each with its own credentials and vhost. The
	// query options of the URL given to New apply to all.
	AlternateURLs []string
	// ShuffleHosts tries the hosts in a random order (picked once per New)
	// instead of the order given, to spread clients over a cluster.
	// Default: false.
	ShuffleHosts bool

	// FirstConnect is the retry policy of Open. Default: one attempt, so a
	// wrong URL fails fast.
	FirstConnect RetryPolicy
	// Reconnect is the retry policy after a lost connection and for Refresh.
	// Default: forever; first retry immediate, then exponential from 50ms with
	// jitter, capped at 5s.
	Reconnect RetryPolicy

	// TLS, when set, is used for every amqps host as is (it overrides cafile,
	// certfile, keyfile, server_name and no_verify_ssl of the URL). New
	// refuses it when no host is amqps: an amqp host is plain TCP.
	TLS *tls.Config
	// Heartbeat is the interval of AMQP heartbeats, the only way to notice a
	// half-open TCP connection, in whole seconds (AMQP negotiates seconds:
	// amqp091-go would take 1.5s for 1s and 500ms for none, the broker's).
	// Default: the URL's heartbeat, else 10s; the URL's heartbeat=0 takes the
	// broker's interval (and disables heartbeats only if the broker's is 0).
	Heartbeat time.Duration
	// DialTimeout bounds TCP connect, TLS and AMQP handshakes of one attempt.
	// Default: the URL's connection_timeout, else 10s.
	DialTimeout time.Duration
	// DirectWrites makes every frame group (each publish, each ack) its own
	// socket write, as amqp091-go does by itself. By default writes are
	// coalesced: frames that concurrent goroutines hand over while a write
	// is in the kernel leave together in the next one, with no timer and no
	// added latency when idle. Default: false (coalesced).
	DirectWrites bool
	// OperationTimeout bounds the connection's own AMQP calls (opening and
	// closing channels, restore hooks' calls through Channel). amqp091-go has
	// no RPC timeout of its own; a call that exceeds this one marks the
	// connection broken. Default: 15s.
	OperationTimeout time.Duration
	// CloseTimeout bounds the AMQP close handshake in Close and on refresh.
	// Default: 5s.
	CloseTimeout time.Duration
	// ConnectionName is shown in the management UI. Default: the URL's
	// connection_name, else "warren".
	ConnectionName string
	// Properties are extra client properties sent to the broker.
	Properties amqp.Table
	// Logger receives the connection's logs. Default: silent.
	Logger *slog.Logger
	// Credentials, when set, gives the login of every dial (the first, each
	// reconnect, each refresh) in place of the URL's user and password:
	// rotated passwords, tokens. A secret that expires is renewed on the
	// live connection (connection.update-secret) CredentialsRefreshBefore
	// its expiry. With a provider, a refused login is retried by the retry
	// policy (the provider may have the rotated secret by the next
	// attempt) instead of ending the connection.
	Credentials CredentialsProvider
	// CredentialsRefreshBefore is how long before a secret's expiry it is
	// renewed (at most half its remaining life). Default: 1 minute.
	CredentialsRefreshBefore time.Duration
	// Telemetry records the connection's metrics (reconnects, restore
	// duration, time blocked) and is what publishers, subscribers and
	// routers on the connection use unless their own config names one.
	// Default: telemetry.Default(), the otel global providers.
	Telemetry *telemetry.Telemetry
}

type endpoint struct {
	url  *URL
	host string
}

func (e endpoint) String() string { return e.url.endpointName(e.host) }

func (c *Config) setDefaults(primary *URL) {
	if c.FirstConnect.isZero() {
		c.FirstConnect = defaultFirstConnect
	}
	if c.Reconnect.isZero() {
		c.Reconnect = defaultReconnect
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = 10 * time.Second
		if primary.Options.HeartbeatSet {
			c.Heartbeat = primary.Options.Heartbeat
		}
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 10 * time.Second
		if primary.Options.ConnectionTimeout > 0 {
			c.DialTimeout = primary.Options.ConnectionTimeout
		}
	}
	if c.OperationTimeout == 0 {
		c.OperationTimeout = 15 * time.Second
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = 5 * time.Second
	}
	if c.ConnectionName == "" {
		c.ConnectionName = primary.Options.ConnectionName
		if c.ConnectionName == "" {
			c.ConnectionName = "warren"
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Telemetry == nil {
		c.Telemetry = telemetry.Default()
	}
	if c.CredentialsRefreshBefore == 0 {
		c.CredentialsRefreshBefore = time.Minute
	}
}

// Validate reports every problem of c, each naming its field.
func (c *Config) Validate() error {
	f := configerr.For("conn.Config")
	f.Check(c.Heartbeat < 0, "Heartbeat", "must not be negative")
	f.Check(c.Heartbeat%time.Second != 0, "Heartbeat", "whole seconds: AMQP negotiates heartbeats in seconds")
	f.Check(c.Heartbeat > 65535*time.Second, "Heartbeat", "at most 65535s (AMQP's limit)")
	f.Check(c.DialTimeout < 0, "DialTimeout", "must not be negative")
	f.Check(c.OperationTimeout < 0, "OperationTimeout", "must not be negative")
	f.Check(c.CloseTimeout < 0, "CloseTimeout", "must not be negative")
	f.Check(c.CredentialsRefreshBefore < 0, "CredentialsRefreshBefore", "must not be negative")
	f.Backoff("FirstConnect", c.FirstConnect.problems())
	f.Backoff("Reconnect", c.Reconnect.problems())
	for i, u := range c.AlternateURLs {
		if _, err := ParseURL(u); err != nil {
			f.Join(fmt.Errorf("conn: Config.AlternateURLs[%d]: %w", i, err))
		}
	}
	return f.Err()
}

// endpoints lists every host to try, in order.
func (c *Config) endpoints(primary *URL) ([]endpoint, error) {
	var eps []endpoint
	urls := []*URL{primary}
	for i, raw := range c.AlternateURLs {
		u, err := ParseURL(raw)
		if err != nil {
			return nil, fmt.Errorf("conn: Config.AlternateURLs[%d]: %w", i, err)
		}
		urls = append(urls, u)
	}
	for _, u := range urls {
		for _, h := range u.Hosts {
			eps = append(eps, endpoint{url: u, host: h})
		}
	}
	if c.ShuffleHosts {
		rand.Shuffle(len(eps), func(i, j int) { eps[i], eps[j] = eps[j], eps[i] })
	}
	return eps, nil
}

// tlsConfig builds the TLS settings for amqps hosts from the URL's options,
// unless Config.TLS is set; an amqp host has none, Config.TLS or not (the
// dialer does TLS for every host it is given a config for). Files are read
// once, here, so a missing file is an error of New naming the parameter,
// not a failure at every reconnect.
func (c *Config) tlsConfig(u *URL) (*tls.Config, error) {
	if !u.TLS {
		return nil, nil
	}
	if c.TLS != nil {
		return c.TLS.Clone(), nil
	}
	o := u.Options
	tc := &tls.Config{ServerName: o.ServerName, InsecureSkipVerify: o.NoVerifySSL, MinVersion: tls.VersionTLS12} //nolint:gosec // only when no_verify_ssl is asked for
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, &URLError{Param: "cafile", Value: o.CAFile, Reason: err.Error()}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &URLError{Param: "cafile", Value: o.CAFile, Reason: "no PEM certificate in file"}
		}
		tc.RootCAs = pool
	}
	if o.CertFile != "" {
		// Each file read on its own, so that the error names the one at
		// fault (tls.LoadX509KeyPair's own does not say which).
		certPEM, err := os.ReadFile(o.CertFile)
		if err != nil {
			return nil, &URLError{Param: "certfile", Value: o.CertFile, Reason: err.Error()}
		}
		keyPEM, err := os.ReadFile(o.KeyFile)
		if err != nil {
			return nil, &URLError{Param: "keyfile", Value: o.KeyFile, Reason: err.Error()}
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, &URLError{Param: "certfile", Value: o.CertFile, Reason: "with keyfile " + o.KeyFile + ": " + err.Error()}
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
