package conn

import (
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"
)

// sasl is what a dial to u logs in with: the URL's auth_mechanism list in
// order, each with the login of this dial (the URL's, or the provider's);
// nil keeps amqp091-go's default, PLAIN with the dial URL's login.
func (u *URL) sasl(username, password string) []amqp.Authentication {
	if len(u.Options.AuthMechanisms) == 0 {
		return nil
	}
	out := make([]amqp.Authentication, 0, len(u.Options.AuthMechanisms))
	for _, m := range u.Options.AuthMechanisms {
		switch m {
		case AuthPlain:
			out = append(out, &amqp.PlainAuth{Username: username, Password: password})
		case AuthAMQPlain:
			out = append(out, &amqp.AMQPlainAuth{Username: username, Password: password})
		case AuthExternal:
			out = append(out, &amqp.ExternalAuth{})
		}
	}
	return out
}

// checkExternal refuses auth_mechanism=external without a client
// certificate to log in with: the broker would never offer EXTERNAL, and
// every attempt would fail the same way.
func (u *URL) checkExternal(tc *tls.Config) error {
	if !slices.Contains(u.Options.AuthMechanisms, AuthExternal) {
		return nil
	}
	if tc == nil || (len(tc.Certificates) == 0 && tc.GetClientCertificate == nil) {
		return &URLError{Param: "auth_mechanism", Value: "external", Reason: "EXTERNAL logs in with the TLS client certificate: give certfile and keyfile, or a Config.TLS with Certificates"}
	}
	return nil
}

// noSharedMechanism is amqp091-go's ErrSASL as a login refusal that names
// what the connection offered: the broker offers none of the URL's
// mechanisms, which no retry changes (a broker offers EXTERNAL only over
// TLS, to a client certificate it verified, with rabbitmq_auth_mechanism_ssl
// enabled).
func noSharedMechanism(err error, u *URL) error {
	if !errors.Is(err, amqp.ErrSASL) {
		return err
	}
	mechs := u.Options.AuthMechanisms
	if len(mechs) == 0 {
		mechs = []string{AuthPlain}
	}
	return &AuthError{Err: fmt.Errorf("%w: the broker offers none of %s", err, strings.Join(mechs, ", "))}
}
