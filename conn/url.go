package conn

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// URL is a parsed AMQP URL: one or more broker addresses sharing credentials,
// vhost and options. Its String never shows the password.
//
// Accepted forms:
//
//	amqp://user:pass@host:5672/vhost?heartbeat=10
//	amqps://user:pass@host1:5671,host2:5671,host3/vhost?cafile=/ca.pem
//
// Query parameters: connection_timeout (ms: 500 is half a second), heartbeat
// (s; 0 takes the broker's), channel_max, frame_max, connection_name,
// cacertfile (or cafile), certfile, keyfile, server_name_indication (or
// server_name), no_verify_ssl (true/false), auth_mechanism (plain, amqplain
// or external; repeat it to offer several, in the order of preference). The
// names are RabbitMQ's URI spec's, as amqp091-go reads them, so a URL
// written for either works here. Anything else is an error, so a typo does
// not go unnoticed.
//
// auth_mechanism=external logs in with the TLS client certificate (RabbitMQ's
// rabbitmq_auth_mechanism_ssl plugin, the user named by the certificate): it
// needs amqps and a client certificate (certfile and keyfile, or
// Config.TLS), and the URL's user and password are not sent.
type URL struct {
	// TLS is true for amqps.
	TLS bool
	// Hosts are "host:port" pairs, in the order given.
	Hosts []string
	// Username is the user ("guest" when the URL has none).
	Username string
	// Vhost is the virtual host ("/" when the URL has none).
	Vhost string
	// Options are the query parameters.
	Options URLOptions

	password string
}

// URLOptions are the query parameters of a URL. Zero values mean "not set".
type URLOptions struct {
	ConnectionTimeout time.Duration
	Heartbeat         time.Duration
	HeartbeatSet      bool
	ChannelMax        uint16
	FrameMax          int
	ConnectionName    string
	CAFile            string
	CertFile          string
	KeyFile           string
	ServerName        string
	NoVerifySSL       bool
	// AuthMechanisms are the SASL mechanisms to log in with, in the order
	// of preference ("PLAIN", "AMQPLAIN", "EXTERNAL"). Empty: PLAIN.
	AuthMechanisms []string
}

// Login mechanisms a URL's auth_mechanism names (SASL, as RabbitMQ offers
// them).
const (
	AuthPlain    = "PLAIN"
	AuthAMQPlain = "AMQPLAIN"
	AuthExternal = "EXTERNAL"
)

// ParseURL parses an AMQP URL; errors are *URLError naming the part at fault.
func ParseURL(raw string) (*URL, error) {
	raw = strings.TrimSpace(raw)
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return nil, &URLError{Param: "scheme", Reason: "missing amqp:// or amqps://"}
	}
	u := &URL{Username: "guest", password: "guest", Vhost: "/"}
	switch strings.ToLower(scheme) {
	case "amqp":
	case "amqps":
		u.TLS = true
	default:
		return nil, &URLError{Param: "scheme", Value: scheme, Reason: "want amqp or amqps"}
	}
	if i := strings.IndexByte(rest, '#'); i >= 0 {
		rest = rest[:i]
	}
	var query string
	rest, query, _ = strings.Cut(rest, "?")
	authority, path, hasPath := strings.Cut(rest, "/")
	if at := strings.LastIndexByte(authority, '@'); at >= 0 {
		userinfo := authority[:at]
		authority = authority[at+1:]
		user, pass, hasPass := strings.Cut(userinfo, ":")
		var err error
		if u.Username, err = url.PathUnescape(user); err != nil {
			return nil, &URLError{Param: "username", Reason: "bad percent-encoding"}
		}
		u.password = ""
		if hasPass {
			if u.password, err = url.PathUnescape(pass); err != nil {
				// Never echo the password, not even a bad one.
				return nil, &URLError{Param: "password", Reason: "bad percent-encoding"}
			}
		}
	}
	defaultPort := "5672"
	if u.TLS {
		defaultPort = "5671"
	}
	for _, h := range strings.Split(authority, ",") {
		hp, err := hostPort(strings.TrimSpace(h), defaultPort)
		if err != nil {
			return nil, err
		}
		u.Hosts = append(u.Hosts, hp)
	}
	if hasPath && path != "" {
		v, err := url.PathUnescape(path)
		if err != nil {
			return nil, &URLError{Param: "vhost", Value: path, Reason: "bad percent-encoding"}
		}
		u.Vhost = v
	}
	if err := u.Options.parse(query); err != nil {
		return nil, err
	}
	if slices.Contains(u.Options.AuthMechanisms, AuthExternal) && !u.TLS {
		return nil, &URLError{Param: "auth_mechanism", Value: "external", Reason: "EXTERNAL logs in with the TLS client certificate: it needs amqps"}
	}
	return u, nil
}

func hostPort(h, defaultPort string) (string, error) {
	if h == "" {
		return "", &URLError{Param: "host", Reason: "empty host"}
	}
	host, port := h, defaultPort
	if strings.HasPrefix(h, "[") { // [ipv6]:port
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return "", &URLError{Param: "host", Value: h, Reason: "unclosed ["}
		}
		host = h[1:end]
		if tail := h[end+1:]; tail != "" {
			if !strings.HasPrefix(tail, ":") {
				return "", &URLError{Param: "host", Value: h, Reason: "junk after ]"}
			}
			port = tail[1:]
		}
	} else if i := strings.LastIndexByte(h, ':'); i >= 0 {
		host, port = h[:i], h[i+1:]
	}
	if host == "" || strings.ContainsAny(host, " /@?#[]") {
		return "", &URLError{Param: "host", Value: h, Reason: "not a host name or address"}
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return "", &URLError{Param: "port", Value: port, Reason: "want 1-65535"}
	}
	return net.JoinHostPort(host, strconv.Itoa(p)), nil
}

func (o *URLOptions) parse(query string) error {
	values, err := url.ParseQuery(query)
	if err != nil {
		return &URLError{Param: "query", Reason: err.Error()}
	}
	for key, vs := range values {
		v := vs[len(vs)-1]
		bad := func(reason string) error { return &URLError{Param: key, Value: v, Reason: reason} }
		switch key {
		case "connection_timeout":
			ms, err := strconv.ParseFloat(v, 64)
			if err != nil || ms <= 0 || ms > 24*3600*1000 {
				return bad("want milliseconds > 0")
			}
			// Milliseconds, kept exact: rmqaio turned 500 into 0 seconds.
			o.ConnectionTimeout = time.Duration(ms * float64(time.Millisecond))
		case "heartbeat":
			s, err := strconv.Atoi(v)
			if err != nil || s < 0 || s > 65535 {
				return bad("want seconds 0-65535")
			}
			o.Heartbeat, o.HeartbeatSet = time.Duration(s)*time.Second, true
		case "channel_max":
			n, err := strconv.ParseUint(v, 10, 16)
			if err != nil {
				return bad("want 0-65535")
			}
			o.ChannelMax = uint16(n)
		case "frame_max":
			n, err := strconv.Atoi(v)
			if err != nil || (n != 0 && n < 4096) {
				return bad("want 0 or at least 4096 bytes")
			}
			o.FrameMax = n
		case "connection_name":
			o.ConnectionName = v
		case "cafile", "cacertfile":
			// cacertfile is RabbitMQ's URI spec's name (and amqp091-go's).
			if o.CAFile != "" && o.CAFile != v {
				return &URLError{Param: "cacertfile", Reason: "cafile and cacertfile name different files"}
			}
			o.CAFile = v
		case "certfile":
			o.CertFile = v
		case "keyfile":
			o.KeyFile = v
		case "server_name", "server_name_indication":
			// server_name_indication is RabbitMQ's URI spec's name.
			if o.ServerName != "" && o.ServerName != v {
				return &URLError{Param: "server_name_indication", Reason: "server_name and server_name_indication differ"}
			}
			o.ServerName = v
		case "auth_mechanism":
			// Every value, in order: RabbitMQ's URI spec repeats the
			// parameter to offer several.
			for _, m := range vs {
				name := strings.ToUpper(m)
				switch name {
				case AuthPlain, AuthAMQPlain, AuthExternal:
				default:
					return &URLError{Param: key, Value: m, Reason: "want plain, amqplain or external"}
				}
				if !slices.Contains(o.AuthMechanisms, name) {
					o.AuthMechanisms = append(o.AuthMechanisms, name)
				}
			}
		case "no_verify_ssl":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return bad("want true or false")
			}
			o.NoVerifySSL = b
		default:
			return &URLError{Param: key, Reason: "unknown query parameter"}
		}
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return &URLError{Param: "certfile", Reason: "certfile and keyfile go together"}
	}
	return nil
}

// String is the URL with the password replaced by "xxxxx".
func (u *URL) String() string {
	scheme := "amqp"
	if u.TLS {
		scheme = "amqps"
	}
	return fmt.Sprintf("%s://%s:xxxxx@%s/%s", scheme, url.PathEscape(u.Username), strings.Join(u.Hosts, ","), url.PathEscape(u.Vhost))
}

// dialURL is the single-host URL amqp091 dials, password included. It never
// leaves this package. Its scheme is amqp even for an amqps host: the
// dialer does the TLS handshake itself, so that the frame guard sees
// frames, not TLS records (dial.go).
func (u *URL) dialURL(host, user, password string) string {
	ui := url.UserPassword(user, password)
	return fmt.Sprintf("amqp://%s@%s/%s", ui.String(), host, url.PathEscape(u.Vhost))
}

// endpointName is one host as shown in logs and errors.
func (u *URL) endpointName(host string) string {
	scheme := "amqp"
	if u.TLS {
		scheme = "amqps"
	}
	return scheme + "://" + host + "/" + url.PathEscape(u.Vhost)
}
