package conn

import (
	"fmt"
	"net"
	"net/url"
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
// (s), channel_max, frame_max, connection_name, cafile, certfile, keyfile,
// server_name, no_verify_ssl (true/false). Anything else is an error, so a
// typo does not go unnoticed.
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
}

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
		case "cafile":
			o.CAFile = v
		case "certfile":
			o.CertFile = v
		case "keyfile":
			o.KeyFile = v
		case "server_name":
			o.ServerName = v
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
// leaves this package.
func (u *URL) dialURL(host string) string {
	scheme := "amqp"
	if u.TLS {
		scheme = "amqps"
	}
	ui := url.UserPassword(u.Username, u.password)
	return fmt.Sprintf("%s://%s@%s/%s", scheme, ui.String(), host, url.PathEscape(u.Vhost))
}

// endpointName is one host as shown in logs and errors.
func (u *URL) endpointName(host string) string {
	scheme := "amqp"
	if u.TLS {
		scheme = "amqps"
	}
	return scheme + "://" + host + "/" + url.PathEscape(u.Vhost)
}
