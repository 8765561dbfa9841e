package termclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/client"
)

// envelope is the JSON this client puts into MSG payloads. CCP-1 relays
// MSG payloads unchanged and does not attribute them (§6.6.1), so the
// sender names itself in From; it is the sender's claim, not checked by
// the server. ID lets receivers drop the duplicates of at-least-once
// delivery (§6.7).
type envelope struct {
	ID   string `json:"id"`
	From string `json:"from,omitempty"`
	Text string `json:"text"`
	TS   int64  `json:"ts,omitempty"` // unix seconds when sent
}

func newEnvelope(from, text string, now time.Time) ([]byte, error) {
	return json.Marshal(envelope{ID: randomID(), From: from, Text: text, TS: now.Unix()})
}

// decodeEnvelope parses a MSG payload written by newEnvelope; ok is false
// for anything else (another client's payload).
func decodeEnvelope(p []byte) (envelope, bool) {
	var j struct {
		ID   *string `json:"id"`
		From *string `json:"from"`
		Text *string `json:"text"`
		TS   *int64  `json:"ts"`
	}
	if len(p) == 0 || p[0] != '{' || json.Unmarshal(p, &j) != nil || j.Text == nil {
		return envelope{}, false
	}
	var e envelope
	e.Text = *j.Text
	if j.ID != nil {
		e.ID = *j.ID
	}
	if j.From != nil {
		e.From = *j.From
	}
	if j.TS != nil {
		e.TS = *j.TS
	}
	return e, true
}

// maxHexShown bounds the bytes shown of a binary payload.
const maxHexShown = 256

// renderPayload returns the text of a MSG payload that is not an
// envelope: the payload itself when it is UTF-8, else hex.
func renderPayload(p []byte) string {
	if utf8.Valid(p) {
		return string(p)
	}
	if len(p) > maxHexShown {
		return fmt.Sprintf("(binary, %d bytes) %s...", len(p), hex.EncodeToString(p[:maxHexShown]))
	}
	return fmt.Sprintf("(binary, %d bytes) %s", len(p), hex.EncodeToString(p))
}

// sanitize makes text from the network safe to print on a terminal:
// control characters (including ESC, so no terminal escape sequences),
// C1 controls, invalid UTF-8 and bidirectional overrides are shown
// escaped. Newlines are kept when multiline is set, followed by indent.
func sanitize(s string, multiline bool, indent string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n' && multiline:
			b.WriteString("\n")
			b.WriteString(indent)
		case r == '\t':
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r >= 0x80 && r < 0xa0, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0x200e, r == 0x200f, r == 0x061c:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// short sanitizes a one-line identifier (device id, handle, state) and
// bounds its length.
func short(s string) string {
	if len(s) > 128 {
		s = s[:128] + "..."
	}
	return sanitize(s, false, "")
}

// describeProblem formats a problem as `Title (detail)`.
func describeProblem(p ccp.Problem) string {
	title := p.Title
	if title == "" {
		title = "error"
	}
	s := short(title)
	if p.Detail != "" {
		s += " (" + short(p.Detail) + ")"
	}
	if p.HasRetryAfter && p.RetryAfter > 0 {
		s += fmt.Sprintf(", retry after %ds", p.RetryAfter)
	}
	return s
}

// describe turns an SDK error into a short line for the user.
func describe(err error) string {
	if err == nil {
		return "no error"
	}
	var ef *client.ErrorFrame
	if errors.As(err, &ef) {
		return describeProblem(ef.Problem)
	}
	var he *client.HTTPError
	if errors.As(err, &he) {
		s := fmt.Sprintf("HTTP %d from %s", he.StatusCode, he.Op)
		if len(he.Body) > 0 && len(he.Body) <= 200 {
			s += ": " + short(strings.TrimSpace(string(he.Body)))
		}
		return s
	}
	if tlsUntrusted(err) {
		return "the server's TLS certificate is not trusted (" + short(rootCause(err).Error()) + ")"
	}
	switch {
	case errors.Is(err, client.ErrKeepaliveTimeout):
		return "no data from the server (keepalive timeout)"
	case errors.Is(err, client.ErrStreamEnded):
		return "the server ended the connection"
	case errors.Is(err, client.ErrStopped), errors.Is(err, context.Canceled):
		return "stopped"
	}
	s := err.Error()
	for strings.HasPrefix(s, "client: ") {
		s = strings.TrimPrefix(s, "client: ")
	}
	return short(s)
}

// tlsUntrusted reports whether err is a certificate verification failure.
func tlsUntrusted(err error) bool {
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	var cv *tls.CertificateVerificationError
	return errors.As(err, &ua) || errors.As(err, &hn) || errors.As(err, &ci) || errors.As(err, &cv)
}

func rootCause(err error) error {
	var cv *tls.CertificateVerificationError
	if errors.As(err, &cv) && cv.Err != nil {
		return cv.Err
	}
	return err
}

// seenSet is a bounded set of message keys, oldest evicted first.
type seenSet struct {
	max   int
	m     map[string]struct{}
	order []string
}

func newSeenSet(max int, initial []string) *seenSet {
	s := &seenSet{max: max, m: make(map[string]struct{})}
	for _, k := range initial {
		s.add(k)
	}
	return s
}

// add records k and reports whether it was new.
func (s *seenSet) add(k string) bool {
	if _, ok := s.m[k]; ok {
		return false
	}
	s.m[k] = struct{}{}
	s.order = append(s.order, k)
	if len(s.order) > s.max {
		delete(s.m, s.order[0])
		s.order = s.order[1:]
	}
	return true
}

// last returns up to n of the most recent keys, oldest first.
func (s *seenSet) last(n int) []string {
	if len(s.order) > n {
		return append([]string(nil), s.order[len(s.order)-n:]...)
	}
	return append([]string(nil), s.order...)
}

// formatDuration renders a retry delay: "2s", "500ms", "1m30s".
func formatDuration(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		d = d.Round(time.Second)
	case d >= time.Second:
		d = d.Round(100 * time.Millisecond)
	default:
		d = d.Round(10 * time.Millisecond)
	}
	return d.String()
}
