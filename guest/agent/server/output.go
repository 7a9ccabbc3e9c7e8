package server

import (
	"bytes"
	"errors"
	"io"
	"sync"
)

// errOutputTooLarge is the cause a handler is cancelled with when its stdout
// passes the capture limit.
var errOutputTooLarge = errors.New("handler output is larger than the agent's limit")

// cappedBuffer keeps what is written to it up to max bytes. The first write
// past the limit calls overflow once and fails, which stops the copy feeding it.
type cappedBuffer struct {
	buf      bytes.Buffer
	max      int64
	overflow func()
	over     bool
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	if c.over {
		return 0, errOutputTooLarge
	}
	if int64(c.buf.Len()+len(p)) > c.max {
		c.over = true
		if c.overflow != nil {
			c.overflow()
		}
		return 0, errOutputTooLarge
	}
	return c.buf.Write(p)
}

// tailBuffer keeps the last max bytes written to it. It is safe for
// concurrent use.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func newTailBuffer(max int) *tailBuffer { return &tailBuffer{max: max} }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if len(p) >= t.max {
		t.buf = append(t.buf[:0], p[len(p)-t.max:]...)
		return n, nil
	}
	t.buf = append(t.buf, p...)
	if extra := len(t.buf) - t.max; extra > 0 {
		t.buf = append(t.buf[:0], t.buf[extra:]...)
	}
	return n, nil
}

// String returns the kept bytes.
func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// console serialises whole lines from many processes onto one writer (the
// serial console in the guest).
type console struct {
	mu sync.Mutex
	w  io.Writer
}

func (c *console) writeLine(prefix string, line []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	buf := make([]byte, 0, len(prefix)+len(line)+1)
	buf = append(buf, prefix...)
	buf = append(buf, line...)
	buf = append(buf, '\n')
	_, _ = c.w.Write(buf) // the console is best effort: a failed write must not fail a request
}

// maxConsoleLine bounds one console line; longer lines are split.
const maxConsoleLine = 4096

// lineWriter splits what is written to it into lines and writes each to the
// console behind a prefix. Close flushes a last unterminated line. One
// lineWriter serves one stream, from one goroutine.
type lineWriter struct {
	c      *console
	prefix string
	part   []byte
	// flog, when set, also keeps every line as the function's output on
	// stream, tagged with requestID's answer (nil: none).
	flog      *funcLog
	stream    string
	requestID func() string
}

// emit writes one line to the console and the function log.
func (l *lineWriter) emit(line []byte) {
	l.c.writeLine(l.prefix, line)
	if l.flog != nil {
		id := ""
		if l.requestID != nil {
			id = l.requestID()
		}
		l.flog.add(l.stream, id, line)
	}
}

func (l *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		l.part = append(l.part, chunk...)
		for len(l.part) > maxConsoleLine {
			l.emit(l.part[:maxConsoleLine])
			l.part = append(l.part[:0], l.part[maxConsoleLine:]...)
		}
		if i < 0 {
			break
		}
		l.emit(bytes.TrimSuffix(l.part, []byte("\r")))
		l.part = l.part[:0]
		p = p[i+1:]
	}
	return n, nil
}

// Close writes a pending partial line.
func (l *lineWriter) Close() error {
	if len(l.part) > 0 {
		l.emit(l.part)
		l.part = nil
	}
	return nil
}
