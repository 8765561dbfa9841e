package client

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/commucat/commucat/ccp"
)

var (
	// ErrClosed is wrapped by every error a Conn returns once its stream has
	// ended, for whatever reason; Conn.Err tells the reason.
	ErrClosed = errors.New("client: connection closed")

	// ErrStreamEnded is the reason (Conn.Err) when the server ended the
	// stream. When the last frame before the end was an unsolicited ERROR
	// (Replaced, Device Revoked, Server Shutting Down, ...), the reason also
	// wraps that *ErrorFrame.
	ErrStreamEnded = errors.New("client: server ended the stream")

	// ErrKeepaliveTimeout is the reason when a version 2 connection received
	// nothing for three keepalive intervals.
	ErrKeepaliveTimeout = errors.New("client: no data from the server for 3 keepalive intervals")

	// ErrSequenceExhausted is returned by Send once the client has used
	// every sequence number up to 4294967295; the connection must be
	// replaced.
	ErrSequenceExhausted = errors.New("client: client sequence space exhausted")

	// ErrNoReply is returned by Request for frame types the server never
	// answers (PRESENCE, ACK, ERROR, VOICE_FRAME, VIDEO_FRAME).
	ErrNoReply = errors.New("client: the server does not answer this frame type")

	// ErrStopped is returned by Client methods once Client.Run has returned.
	ErrStopped = errors.New("client: client stopped")
)

// ErrorFrame is an ERROR frame from the server, as an error: the answer to
// a Request, a handshake failure (§4.14) or, wrapped into Conn.Err, the
// unsolicited ERROR that preceded the end of a stream.
type ErrorFrame struct {
	Channel  uint32      // the channel the ERROR arrived on
	Sequence uint32      // the server sequence of the ERROR frame
	Problem  ccp.Problem // the parsed payload (§6.4)
}

func (e *ErrorFrame) Error() string {
	s := "client: server error " + strconv.Quote(e.Problem.Title)
	if e.Problem.Status != 0 {
		s += " (" + strconv.Itoa(e.Problem.Status) + ")"
	}
	if e.Problem.Detail != "" {
		s += ": " + e.Problem.Detail
	}
	return s
}

// Title returns the problem title, e.g. ccp.TitleForbidden.
func (e *ErrorFrame) Title() string { return e.Problem.Title }

// RetryAfter returns the retry_after member as a duration (0 when absent).
func (e *ErrorFrame) RetryAfter() time.Duration {
	if !e.Problem.HasRetryAfter || e.Problem.RetryAfter <= 0 {
		return 0
	}
	return time.Duration(e.Problem.RetryAfter) * time.Second
}

// IsProblem reports whether err is (or wraps) an *ErrorFrame with the given
// problem title.
func IsProblem(err error, title string) bool {
	var ef *ErrorFrame
	return errors.As(err, &ef) && ef.Problem.Title == title
}

// HTTPError is a non-200 answer to /connect or /api/server-info.
type HTTPError struct {
	Op         string // "connect" or "server-info"
	StatusCode int
	Body       []byte        // at most the first 4 KiB of the response body
	RetryAfter time.Duration // from the Retry-After header (429, 503), else 0
}

func (e *HTTPError) Error() string {
	s := fmt.Sprintf("client: %s: HTTP %d %s", e.Op, e.StatusCode, http.StatusText(e.StatusCode))
	if len(e.Body) > 0 && len(e.Body) <= 512 {
		s += ": " + strconv.Quote(string(e.Body))
	}
	return s
}

// retryAfterHeader parses a Retry-After header given in seconds.
func retryAfterHeader(h http.Header) time.Duration {
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0
	}
	return time.Duration(n) * time.Second
}
