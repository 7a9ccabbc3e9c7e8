package server

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/faasvm/appliance/guest/protocol"
)

// Bounds of the agent's buffer of function output lines, kept until the
// host has read them (the host follows the stream and stores them).
const (
	funcLogMaxEntries = 4096
	funcLogMaxBytes   = 2 << 20
)

// funcLog keeps the function's recent output lines, numbered, for the
// host's LogsPath stream. It is safe for concurrent use.
type funcLog struct {
	mu      sync.Mutex
	entries []protocol.LogEntry
	bytes   int
	next    uint64        // Seq of the next entry
	wake    chan struct{} // closed and replaced on every append
	now     func() time.Time
}

func newFuncLog() *funcLog {
	return &funcLog{next: 1, wake: make(chan struct{}), now: time.Now}
}

// add appends one line, dropping the oldest past the bounds.
func (l *funcLog) add(stream, requestID string, line []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := protocol.LogEntry{Seq: l.next, Time: l.now().UTC(), Stream: stream, RequestID: requestID, Line: string(line)}
	l.next++
	l.entries = append(l.entries, e)
	l.bytes += len(e.Line)
	for len(l.entries) > funcLogMaxEntries || (l.bytes > funcLogMaxBytes && len(l.entries) > 1) {
		l.bytes -= len(l.entries[0].Line)
		l.entries[0] = protocol.LogEntry{}
		l.entries = l.entries[1:]
	}
	close(l.wake)
	l.wake = make(chan struct{})
}

// since returns the kept entries after seq, and a channel closed on the
// next append.
func (l *funcLog) since(seq uint64) ([]protocol.LogEntry, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := 0
	for i < len(l.entries) && l.entries[i].Seq <= seq {
		i++
	}
	return append([]protocol.LogEntry(nil), l.entries[i:]...), l.wake
}

// serve streams entries after the after= parameter as NDJSON until the
// client leaves or done is closed.
func (l *funcLog) serve(w http.ResponseWriter, r *http.Request, done <-chan struct{}) {
	var after uint64
	if v := r.URL.Query().Get("after"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, "after must be a whole number")
			return
		}
		after = n
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	ctx := r.Context()
	for {
		entries, wake := l.since(after)
		for _, e := range entries {
			if err := enc.Encode(e); err != nil {
				return
			}
			after = e.Seq
		}
		if err := bw.Flush(); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return
		case <-done:
			return
		}
	}
}

// requestTracker says which invocation a handler's output line belongs to
// in http mode, where one bootstrap serves every request: the only request
// in flight, or, when none is, the last one to finish if it finished less
// than lingerAfterRequest ago (its last lines may still be in the pipe when
// its answer is sent). With several requests in flight a line belongs to
// none of them: the agent cannot tell whose it is.
type requestTracker struct {
	mu       sync.Mutex
	inflight map[uint64]string // request number → request id
	n        uint64
	last     string    // the id of the last request that finished
	lastEnd  time.Time // and when
	now      func() time.Time
}

// lingerAfterRequest is how long after its end a request still owns the
// lines written while nothing else runs.
const lingerAfterRequest = 500 * time.Millisecond

func newRequestTracker() *requestTracker {
	return &requestTracker{inflight: map[uint64]string{}, now: time.Now}
}

// begin records a request in flight; call the returned func when it ends.
func (t *requestTracker) begin(id string) func() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n++
	n := t.n
	t.inflight[n] = id
	t.last = "" // a new request: the previous one's linger is over
	return func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		delete(t.inflight, n)
		if len(t.inflight) == 0 {
			t.last, t.lastEnd = id, t.now()
		}
	}
}

// current is the request id a line written now belongs to, "" for none.
func (t *requestTracker) current() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch len(t.inflight) {
	case 0:
		if t.last != "" && t.now().Sub(t.lastEnd) < lingerAfterRequest {
			return t.last
		}
		return ""
	case 1:
		for _, id := range t.inflight {
			return id
		}
	}
	return ""
}
