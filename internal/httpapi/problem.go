package httpapi

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/commucat/commucat/internal/canonjson"
	"github.com/commucat/commucat/internal/ratelimit"
)

// Titles and default details of §8.1.
const (
	titleBadRequest      = "BadRequest"
	titleUnauthorized    = "Unauthorized"
	titleForbidden       = "Forbidden"
	titleNotFound        = "NotFound"
	titleConflict        = "Conflict"
	titlePayloadTooLarge = "PayloadTooLarge"
	titleInternalError   = "InternalError"

	detailUnauthorized    = "authorization required"
	detailForbidden       = "access denied"
	detailNotFound        = "resource not found"
	detailPayloadTooLarge = "request body too large"
	detailInternalError   = "internal server error"

	detailInvalidJSON = "invalid JSON payload"
)

// problem is an error answered with an application/problem+json body
// (§8.1).
type problem struct {
	status int
	title  string
	detail string
}

func (p *problem) Error() string { return strconv.Itoa(p.status) + " " + p.title + ": " + p.detail }

func badRequest(detail string) *problem {
	return &problem{status: http.StatusBadRequest, title: titleBadRequest, detail: detail}
}

func conflict(detail string) *problem {
	return &problem{status: http.StatusConflict, title: titleConflict, detail: detail}
}

var (
	errUnauthorized    = &problem{status: http.StatusUnauthorized, title: titleUnauthorized, detail: detailUnauthorized}
	errForbidden       = &problem{status: http.StatusForbidden, title: titleForbidden, detail: detailForbidden}
	errNotFound        = &problem{status: http.StatusNotFound, title: titleNotFound, detail: detailNotFound}
	errPayloadTooLarge = &problem{status: http.StatusRequestEntityTooLarge, title: titlePayloadTooLarge, detail: detailPayloadTooLarge}
	errInternal        = &problem{status: http.StatusInternalServerError, title: titleInternalError, detail: detailInternalError}
)

// tooMany is a rate-limit denial (§8.3).
type tooMany struct{ retry time.Duration }

func (t *tooMany) Error() string { return "rate limited" }

// writeError answers err: a *problem as it is, a *tooMany as the 429 of
// §8.3, anything else as 500 (logged).
func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var p *problem
	var tm *tooMany
	switch {
	case errors.As(err, &p):
	case errors.As(err, &tm):
		w.Header().Set("Retry-After", strconv.FormatInt(ratelimit.RetryAfterSeconds(tm.retry), 10))
		writeProblemBody(w, http.StatusTooManyRequests, "Too Many Requests", "")
		return
	default:
		a.log.Error("REST request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		p = errInternal
	}
	writeProblemBody(w, p.status, p.title, p.detail)
}

// writeNotFoundRoute is the unknown-route 404 of §3.2 (no detail).
func writeNotFoundRoute(w http.ResponseWriter) {
	writeProblemBody(w, http.StatusNotFound, "Not Found", "")
}

// writeProblemBody writes {"detail"?,"status","title","type":"about:blank"}
// in canonical form.
func writeProblemBody(w http.ResponseWriter, status int, title, detail string) {
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	b := make([]byte, 0, 96)
	if detail != "" {
		b = append(b, `{"detail":`...)
		b = canonjson.AppendString(b, detail)
		b = append(b, ',')
	} else {
		b = append(b, '{')
	}
	b = append(b, `"status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, `,"title":`...)
	b = canonjson.AppendString(b, title)
	b = append(b, `,"type":"about:blank"}`...)
	_, _ = w.Write(b)
}
