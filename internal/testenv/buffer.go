package testenv

import (
	"bytes"
	"sync"
)

// Buffer is an io.Writer safe for concurrent use that collects what is
// written to it: a log sink or a child process's stderr in tests.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
