package main

import (
	"bytes"
	"io"
	"net/url"
	"strings"
	"sync"
)

// scrubber hides passwords in everything the command writes: help, errors,
// tables and JSON. It knows the passwords of the URLs it was given (--url,
// WARREN_URL) and replaces them, raw and in their escaped forms, wherever
// they appear, whatever printed them (a library's error, a flag's default,
// an echo of the URL). The well-known default password "guest" is left
// alone.
type scrubber struct {
	mu      sync.Mutex
	secrets []string
}

// add learns the password of raw, a broker URL (or several, comma
// separated, as the library takes them).
func (s *scrubber) add(raw string) {
	if s == nil || raw == "" {
		return
	}
	var found []string
	if u, err := url.Parse(raw); err == nil && u.User != nil {
		if p, ok := u.User.Password(); ok {
			found = append(found, p)
		}
	}
	// By hand too: a password with "/" or "@" unescaped, or several hosts,
	// defeat url.Parse. The userinfo ends at the last "@".
	if _, rest, ok := strings.Cut(raw, "://"); ok {
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			if _, p, ok := strings.Cut(rest[:at], ":"); ok {
				found = append(found, p)
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range found {
		if len(p) < 3 || p == "guest" {
			continue
		}
		for _, form := range []string{p, url.QueryEscape(p), url.PathEscape(p), strings.ReplaceAll(url.QueryEscape(p), "+", "%20")} {
			if !containsString(s.secrets, form) {
				s.secrets = append(s.secrets, form)
			}
		}
		if unescaped, err := url.PathUnescape(p); err == nil && !containsString(s.secrets, unescaped) && len(unescaped) >= 3 {
			s.secrets = append(s.secrets, unescaped)
		}
	}
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// scrub returns p with every known password replaced.
func (s *scrubber) scrub(p []byte) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, secret := range s.secrets {
		if bytes.Contains(p, []byte(secret)) {
			p = bytes.ReplaceAll(p, []byte(secret), []byte("***"))
		}
	}
	return p
}

// wrap returns w with every write scrubbed.
func (s *scrubber) wrap(w io.Writer) io.Writer { return &scrubbed{w: w, s: s} }

type scrubbed struct {
	w io.Writer
	s *scrubber
}

func (sw *scrubbed) Write(p []byte) (int, error) {
	if _, err := sw.w.Write(sw.s.scrub(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// urlFlag finds the value of --url in args before the flags are parsed,
// so that its password is hidden from the first line written.
func urlFlag(args []string) string {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--url="); ok {
			return v
		}
		if a == "--url" && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}
