package noiseconn

import (
	"errors"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/identity"
)

// Detail strings of §4.14.
const (
	DetailInvalidRequest = "invalid request"
	DetailCryptoFailure  = "crypto failure"
	DetailPairing        = "pairing required"
	DetailNotActive      = "device is not active"
	DetailHintMismatch   = "user hint mismatch"
	DetailKeyMismatch    = "device key mismatch"
	DetailTimeout        = "handshake timeout"
	DetailStorage        = "storage failure"
	DetailShuttingDown   = "server shutting down"
)

// HandshakeError is a handshake failure of §4.14: the ERROR frame to send
// (Title, Detail) and, for logs only, the underlying cause. Cause may
// describe what failed but never contains key material.
type HandshakeError struct {
	Title  string
	Detail string
	Cause  error
}

func (e *HandshakeError) Error() string {
	s := "handshake: " + e.Title + ": " + e.Detail
	if e.Cause != nil {
		s += " (" + e.Cause.Error() + ")"
	}
	return s
}

func (e *HandshakeError) Unwrap() error { return e.Cause }

// Problem returns the ERROR payload: class "handshake", and
// pairing_required for PairingRequired.
func (e *HandshakeError) Problem() ccp.Problem {
	p := ccp.NewProblem(e.Title, e.Detail)
	p.Error = ccp.ClassHandshake
	if e.Title == ccp.TitlePairingRequired {
		p.PairingRequired = true
	}
	return p
}

func invalidHandshake(cause string) *HandshakeError {
	return &HandshakeError{Title: ccp.TitleInvalidHandshake, Detail: DetailInvalidRequest, Cause: errors.New(cause)}
}

func authFailed(cause string) *HandshakeError {
	return &HandshakeError{Title: ccp.TitleAuthenticationFailed, Detail: DetailCryptoFailure, Cause: errors.New(cause)}
}

// Errors for the admission decision and the server's own conditions, for
// the server to return from its admission callback.
var (
	ErrPairingRequired = &HandshakeError{Title: ccp.TitlePairingRequired, Detail: DetailPairing}
	ErrDeviceNotActive = &HandshakeError{Title: ccp.TitleForbidden, Detail: DetailNotActive}
	ErrHintMismatch    = &HandshakeError{Title: ccp.TitleForbidden, Detail: DetailHintMismatch}
	ErrKeyMismatch     = &HandshakeError{Title: ccp.TitleForbidden, Detail: DetailKeyMismatch}
	ErrTimeout         = &HandshakeError{Title: ccp.TitleHandshakeTimeout, Detail: DetailTimeout}
	ErrShuttingDown    = &HandshakeError{Title: ccp.TitleServerShuttingDown, Detail: DetailShuttingDown}
)

// AuthenticationFailed returns an Authentication Failed error with a cause
// for the logs (certificate checks in admission use it).
func AuthenticationFailed(cause error) *HandshakeError {
	return &HandshakeError{Title: ccp.TitleAuthenticationFailed, Detail: DetailCryptoFailure, Cause: cause}
}

// InvalidHandshake returns an Invalid Handshake error (detail "invalid
// request") with a cause for the logs.
func InvalidHandshake(cause error) *HandshakeError {
	return &HandshakeError{Title: ccp.TitleInvalidHandshake, Detail: DetailInvalidRequest, Cause: cause}
}

// StorageFailure returns an Internal Error (detail "storage failure").
func StorageFailure(cause error) *HandshakeError {
	return &HandshakeError{Title: ccp.TitleInternalError, Detail: DetailStorage, Cause: cause}
}

// CheckCertificate verifies a presented certificate for the expected
// device and owner (§4.8); any failure is Authentication Failed.
func CheckCertificate(c *identity.Certificate, caPublic [32]byte, deviceID, userID string, now int64) *HandshakeError {
	if err := c.Verify(caPublic, deviceID, userID, now); err != nil {
		return AuthenticationFailed(err)
	}
	return nil
}
