package async

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Call is one asynchronous invocation as the gateway hands it over: what
// the synchronous path would have proxied, and where to post the result.
type Call struct {
	Function string
	Method   string
	// Path is the escaped path after /<name>, "/" when there is none.
	Path string
	// Query is the raw query string, without '?'.
	Query  string
	Header http.Header
	// Host and RemoteAddr are the client's request's, so that the
	// function sees the same X-Forwarded-Host/-For as a synchronous call.
	Host       string
	RemoteAddr string
	Body       []byte
	// CallbackURL is X-Callback-Url's value ("" for none).
	CallbackURL string
}

// envelope is the stored form of a call: its JSON, a newline, its body.
// Compact JSON never holds a raw newline, so the first one ends it.
type envelope struct {
	V         int         `json:"v"`
	ID        string      `json:"id"`
	Function  string      `json:"fn"`
	Method    string      `json:"m"`
	Path      string      `json:"p"`
	Query     string      `json:"q,omitempty"`
	Header    http.Header `json:"h,omitempty"`
	Host      string      `json:"host,omitempty"`
	Remote    string      `json:"remote,omitempty"`
	Callback  string      `json:"cb,omitempty"`
	Submitted time.Time   `json:"at"`
}

const envelopeVersion = 1

func encodeCall(id string, c Call, at time.Time) ([]byte, error) {
	meta, err := json.Marshal(envelope{
		V: envelopeVersion, ID: id, Function: c.Function, Method: c.Method, Path: c.Path, Query: c.Query,
		Header: c.Header, Host: c.Host, Remote: c.RemoteAddr, Callback: c.CallbackURL, Submitted: at,
	})
	if err != nil {
		return nil, fmt.Errorf("encoding call: %w", err)
	}
	out := make([]byte, 0, len(meta)+1+len(c.Body))
	out = append(out, meta...)
	out = append(out, '\n')
	return append(out, c.Body...), nil
}

var errBadEnvelope = errors.New("not a call envelope")

func decodeCall(data []byte) (envelope, []byte, error) {
	meta, body, ok := bytes.Cut(data, []byte{'\n'})
	if !ok {
		return envelope{}, nil, errBadEnvelope
	}
	var e envelope
	if err := json.Unmarshal(meta, &e); err != nil {
		return envelope{}, nil, fmt.Errorf("%w: %w", errBadEnvelope, err)
	}
	if e.V != envelopeVersion || e.ID == "" || e.Function == "" || e.Method == "" || e.Path == "" || e.Path[0] != '/' {
		return envelope{}, nil, fmt.Errorf("%w: version %d, id %q, function %q, method %q, path %q", errBadEnvelope, e.V, e.ID, e.Function, e.Method, e.Path)
	}
	return e, body, nil
}
