package qemu

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"
)

// The console log, capped: QEMU writes the guest's serial console to its
// stdout, a pipe; the engine copies it into the VM's console.log and keeps
// that file at most Config.ConsoleMaxSize bytes. When the next write would
// pass the cap, the file is replaced (temporary file, rename) by its newest
// half, cut at a line start, so a chatty guest never fills the state disk
// and the console API and the boot-failure tail still read the newest
// output. The engine is the file's only writer; readers opening it by path
// see either the old or the new file, never a half-written one.

// DefaultConsoleMaxSize is Config.ConsoleMaxSize's default.
const DefaultConsoleMaxSize = 1 << 20

// minConsoleMaxSize is the smallest cap taken (below it boot-failure tails
// would be cut short).
const minConsoleMaxSize = 16 << 10

// consoleDrainWait bounds how long the exit path waits for the copy to
// reach the pipe's end after QEMU exited.
const consoleDrainWait = 2 * time.Second

// consoleLog is one VM's console copy in progress.
type consoleLog struct {
	path  string
	max   int64
	log   *slog.Logger
	done  chan struct{} // closed when the copy has ended (QEMU's end of the pipe closed)
	trims int
}

// startConsoleLog creates path (empty) and starts copying into it what is
// written to the returned pipe end, QEMU's stdout. Close w once QEMU has
// it (or failed to start): the copy ends when every copy of w is closed.
func startConsoleLog(path string, maxBytes int64, log *slog.Logger) (w *os.File, c *consoleLog, err error) {
	maxBytes = max(maxBytes, minConsoleMaxSize)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("creating the console log: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("creating the console pipe: %w", err)
	}
	c = &consoleLog{path: path, max: maxBytes, log: log, done: make(chan struct{})}
	go c.copy(r, f)
	return w, c, nil
}

// wait blocks until the copy has written everything QEMU wrote (bounded
// by consoleDrainWait: a console still open elsewhere does not hold up
// the caller).
func (c *consoleLog) wait() {
	if c == nil {
		return
	}
	t := time.NewTimer(consoleDrainWait)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
	}
}

func (c *consoleLog) copy(r, f *os.File) {
	defer close(c.done)
	defer r.Close()
	var size int64
	buf := make([]byte, 32<<10)
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if int64(len(chunk)) > c.max/2 { // only the newest part of a huge write can stay
				chunk = chunk[len(chunk)-int(c.max/2):]
			}
			if size+int64(len(chunk)) > c.max && f != nil {
				nf, kept, err := c.trim(f)
				if err != nil {
					c.log.Warn("capping the console log failed; console output is dropped until the VM restarts",
						"path", c.path, "err", err)
					f.Close()
					f = nil
				} else {
					f, size = nf, kept
					c.trims++
					if c.trims == 1 {
						c.log.Info("console log reached its cap; keeping its newest half from now on",
							"path", c.path, "max_bytes", c.max)
					}
				}
			}
			if f != nil {
				if _, err := f.Write(chunk); err != nil {
					c.log.Warn("writing the console log failed; console output is dropped until the VM restarts",
						"path", c.path, "err", err)
					f.Close()
					f = nil
				}
				size += int64(len(chunk))
			}
		}
		if rerr != nil {
			if !errors.Is(rerr, io.EOF) {
				c.log.Warn("reading the console pipe", "err", rerr)
			}
			break
		}
	}
	if f != nil {
		f.Close()
	}
}

// trim replaces the console log by its newest half (from a line start)
// and returns the new file, open for appending, and its size. f is closed.
func (c *consoleLog) trim(f *os.File) (*os.File, int64, error) {
	f.Close()
	keep := c.max / 2
	old, err := os.Open(c.path)
	if err != nil {
		return nil, 0, err
	}
	st, err := old.Stat()
	if err != nil {
		old.Close()
		return nil, 0, err
	}
	off := max(st.Size()-keep, 0)
	b, err := io.ReadAll(io.NewSectionReader(old, off, st.Size()-off))
	old.Close()
	if err != nil {
		return nil, 0, err
	}
	if off > 0 {
		if i := bytes.IndexByte(b, '\n'); i >= 0 && i < len(b)-1 {
			b = b[i+1:]
		}
	}
	tmp := c.path + ".tmp"
	nf, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, 0, err
	}
	if _, err := nf.Write(b); err != nil {
		nf.Close()
		os.Remove(tmp)
		return nil, 0, err
	}
	if err := os.Rename(tmp, c.path); err != nil {
		nf.Close()
		os.Remove(tmp)
		return nil, 0, err
	}
	return nf, int64(len(b)), nil
}
