package conn

import (
	"context"
	"time"
)

// Credentials are what a connection logs in with.
type Credentials struct {
	Username string
	// Password is the secret: a password, or a token (OAuth 2 with the
	// broker's OAuth 2 plugin).
	Password string
	// Expires, when set, is when the secret stops being valid: before
	// then, the connection asks for a new one and hands it to the broker
	// on the live connection (connection.update-secret), without
	// reconnecting.
	Expires time.Time
}

// CredentialsProvider returns the credentials to log in with now. It is
// called before every dial (the first, each reconnect, each refresh) and
// before a secret expires; ctx bounds the call.
type CredentialsProvider func(ctx context.Context) (Credentials, error)

// credentialsError is a provider that failed: the attempt fails, and the
// retry policy decides about the next.
type credentialsError struct{ err error }

func (e *credentialsError) Error() string { return "conn: credentials provider: " + e.err.Error() }
func (e *credentialsError) Unwrap() error { return e.err }

// credentials asks the provider (with DialTimeout) for the login of the
// next dial; ok is false without a provider (the URL's own login).
func (c *Conn) credentials() (Credentials, bool, error) {
	if c.cfg.Credentials == nil {
		return Credentials{}, false, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.DialTimeout)
	defer cancel()
	cr, err := c.cfg.Credentials(ctx)
	if err != nil {
		return Credentials{}, false, &credentialsError{err}
	}
	return cr, true, nil
}

// refreshAt is when a secret that expires at exp is renewed: RefreshBefore
// its expiry, but at most half of its remaining life from now.
func refreshAt(now, exp time.Time, before time.Duration) time.Time {
	life := exp.Sub(now)
	if life <= 0 {
		return now
	}
	lead := min(before, life/2)
	return exp.Add(-lead)
}

// keepSecretFresh renews g's secret before it expires, for as long as g
// lives: the provider is asked again, and the new secret goes to the broker
// with connection.update-secret. A failed renewal is logged and tried again
// at the next refresh time; past the expiry the broker closes the
// connection, and the reconnect logs in with whatever the provider gives
// then.
func (c *Conn) keepSecretFresh(g *generation, cr Credentials) {
	if cr.Expires.IsZero() {
		return
	}
	c.spawn(func() {
		for {
			t := time.NewTimer(time.Until(refreshAt(time.Now(), cr.Expires, c.cfg.CredentialsRefreshBefore)))
			select {
			case <-g.lost:
				t.Stop()
				return
			case <-c.closing:
				t.Stop()
				return
			case <-t.C:
			}
			next, _, err := c.credentials()
			switch {
			case err != nil:
				c.log.Warn("conn: renewing the secret failed; trying again", "error", err, "generation", g.id)
				cr.Expires = time.Now().Add(2 * c.cfg.CredentialsRefreshBefore) // try again in one lead
				continue
			case next.Username != cr.Username:
				// update-secret cannot change the user: the next
				// connection logs in as the new one.
				c.log.Warn("conn: the credentials name another user; it takes effect at the next reconnect", "generation", g.id)
			default:
				if err := g.amqp.UpdateSecret(next.Password, "warren: secret renewed before it expires"); err != nil {
					c.log.Warn("conn: update-secret refused", "error", err, "generation", g.id)
				} else {
					c.log.Info("conn: secret renewed on the live connection", "generation", g.id, "expires", next.Expires)
					c.secretUpdates.Add(1)
				}
			}
			if next.Expires.IsZero() {
				return
			}
			cr = next
		}
	})
}

// SecretUpdates is how many times the connection renewed its secret with
// connection.update-secret (see Config.Credentials).
func (c *Conn) SecretUpdates() uint64 { return c.secretUpdates.Load() }
