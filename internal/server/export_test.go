package server

// StreamCounts exposes the per-IP /connect stream counts to the external
// tests (package server_test).
func StreamCounts(s *Server, key string) (open, handshaking int) { return s.streams.counts(key) }
