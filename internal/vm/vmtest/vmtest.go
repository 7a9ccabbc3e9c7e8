// Package vmtest holds helpers the engines' tests share. Only tests import
// it.
package vmtest

import (
	"bytes"
	"log/slog"
	"sync"
)

// LogBuffer is a log sink safe for concurrent writers (a VM's goroutines
// log while the test reads).
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// NewLogger returns a debug-level text logger writing into buf.
func NewLogger(buf *LogBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
