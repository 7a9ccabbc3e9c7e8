package async

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
)

// Call states, as GET /api/calls/<id> shows them.
const (
	StateQueued       = "queued"        // waiting for a worker, or for its next attempt
	StateRunning      = "running"       // an attempt is under way
	StateDone         = "done"          // the function answered 1xx-3xx
	StateFailed       = "failed"        // the function answered with a status that is not retried
	StateDeadLettered = "dead-lettered" // every attempt failed in a way that is retried; see Error
)

// Callback states.
const (
	CallbackSent   = "sent"
	CallbackFailed = "failed"
)

// Result is one call as GET /api/calls/<id> shows it. Records are kept for
// the result TTL after their last change.
type Result struct {
	ID       string `json:"id"`
	Function string `json:"function"`
	State    string `json:"state"`
	// Attempts made so far (a redelivery after a crash counts too), out
	// of at most MaxAttempts.
	Attempts    int `json:"attempts"`
	MaxAttempts int `json:"maxAttempts"`
	// StatusCode is the last attempt's HTTP status (0: no answer yet).
	StatusCode int `json:"statusCode,omitempty"`
	// Error says why the last attempt failed, when it did.
	Error string `json:"error,omitempty"`
	// The answer: its content type, its first bytes (as text, or base64
	// when BodyEncoding says so), its whole size, and whether Body is cut.
	ContentType  string `json:"contentType,omitempty"`
	Body         string `json:"body,omitempty"`
	BodyEncoding string `json:"bodyEncoding,omitempty"`
	BodyBytes    int64  `json:"bodyBytes,omitempty"`
	Truncated    bool   `json:"truncated,omitempty"`

	SubmittedAt   time.Time `json:"submittedAt"`
	StartedAt     time.Time `json:"startedAt,omitzero"`  // of the last attempt
	FinishedAt    time.Time `json:"finishedAt,omitzero"` // of the last attempt
	NextAttemptAt time.Time `json:"nextAttemptAt,omitzero"`

	Callback *CallbackResult `json:"callback,omitempty"`
}

// CallbackResult says how posting the result to X-Callback-Url went.
type CallbackResult struct {
	URL        string `json:"url"`
	State      string `json:"state"` // sent or failed
	Attempts   int    `json:"attempts"`
	StatusCode int    `json:"statusCode,omitempty"`
	Error      string `json:"error,omitempty"`
}

// setBody records the first bytes of an answer.
func (r *Result) setBody(b []byte, total int64, limit int) {
	r.BodyBytes = total
	if len(b) > limit {
		b = b[:limit]
	}
	r.Truncated = total > int64(len(b))
	text := b
	if r.Truncated {
		text = trimPartialRune(b)
	}
	if utf8.Valid(text) {
		r.Body, r.BodyEncoding = string(text), ""
		return
	}
	r.Body, r.BodyEncoding = base64.StdEncoding.EncodeToString(b), "base64"
}

// trimPartialRune drops an incomplete UTF-8 sequence cut at the end.
func trimPartialRune(b []byte) []byte {
	for i := 1; i <= utf8.UTFMax && i <= len(b); i++ {
		if utf8.RuneStart(b[len(b)-i]) {
			if !utf8.FullRune(b[len(b)-i:]) {
				return b[:len(b)-i]
			}
			break
		}
	}
	return b
}

// results keeps Result records in a JetStream key-value bucket whose TTL
// is the result TTL, so they survive restarts and expire by themselves.
type results struct {
	kv jetstream.KeyValue
}

func (s *results) put(ctx context.Context, r *Result) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding call %s: %w", r.ID, err)
	}
	if _, err := s.kv.Put(ctx, r.ID, b); err != nil {
		return fmt.Errorf("recording call %s: %w", r.ID, err)
	}
	return nil
}

func (s *results) get(ctx context.Context, id string) (Result, error) {
	// Only ids this package makes are keys; anything else is unknown.
	if _, err := uuid.Parse(id); err != nil || len(id) != 36 {
		return Result{}, fmt.Errorf("%w: %q", ErrCallNotFound, id)
	}
	e, err := s.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Result{}, fmt.Errorf("%w: %s (unknown, or older than the result TTL)", ErrCallNotFound, id)
	}
	if err != nil {
		return Result{}, fmt.Errorf("%w: reading call %s: %w", ErrUnavailable, id, err)
	}
	var r Result
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return Result{}, fmt.Errorf("decoding call %s: %w", id, err)
	}
	return r, nil
}

func (s *results) delete(ctx context.Context, id string) error {
	return s.kv.Delete(ctx, id)
}
