package async

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
)

// Request headers of a queued call that belong to the queue, not to the
// function: they are dropped before delivery.
var queueHeaders = []string{"X-Callback-Url", "Prefer"}

// CallIDHeader carries the call's id, to the client that submitted it
// and to the function that runs it.
const CallIDHeader = "X-Call-Id"

// outcome is what one attempt got.
type outcome struct {
	status int
	header http.Header
	body   []byte // the first bytes
	size   int64  // the whole answer's size
	retry  bool   // worth another attempt
	err    string // why it is not a success ("" when it is)
}

// deliver runs one attempt through the gateway's /invoke handler, as if
// the client had called /invoke/<function><path> itself.
func (w *worker) deliver(ctx context.Context, env envelope, body []byte) outcome {
	target := "/invoke/" + url.PathEscape(env.Function) + env.Path
	if env.Query != "" {
		target += "?" + env.Query
	}
	req, err := http.NewRequestWithContext(ctx, env.Method, target, bytes.NewReader(body))
	if err != nil {
		return outcome{err: fmt.Sprintf("the stored call cannot be replayed: %v", err)}
	}
	req.RequestURI = target
	req.Host = env.Host
	req.RemoteAddr = env.Remote
	req.Header = env.Header.Clone()
	if req.Header == nil {
		req.Header = http.Header{}
	}
	for _, h := range queueHeaders {
		req.Header.Del(h)
	}
	req.Header.Set(CallIDHeader, env.ID)
	req.ContentLength = int64(len(body))
	if len(body) == 0 {
		req.Body = http.NoBody
	}

	limit := w.q.opts.ResultBytes
	if env.Callback != "" {
		limit = max(limit, callbackBodyLimit)
	}
	c := &capture{header: http.Header{}, limit: limit}
	w.q.handler.ServeHTTP(c, req)

	out := outcome{status: c.status, header: c.header, body: c.body, size: c.size}
	switch {
	case out.status >= 100 && out.status < 400:
	case retryable(out.status):
		out.retry, out.err = true, describeStatus(out.status, c.body)
	case out.status == http.StatusNotFound && w.unknown(ctx):
		// The function is gone (or not yet back after a restart): retried,
		// so that its calls end in the dead letters rather than lost.
		out.retry, out.err = true, "function not found"
	default:
		out.err = describeStatus(out.status, c.body)
	}
	return out
}

// retryable: 429 (every slot and queue place taken), 502 (instance
// unreachable), 503 (booting or unable to serve), 504 (timeout), and no
// answer at all.
func retryable(status int) bool {
	switch status {
	case 0, http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// unknown says whether the controller knows no function of this name.
func (w *worker) unknown(ctx context.Context) bool {
	_, err := w.q.fns.Get(ctx, w.fn)
	return isNotFound(err)
}

// capture is the ResponseWriter of a delivery: it keeps the status, the
// headers and the first limit bytes, and counts the rest.
type capture struct {
	header http.Header
	status int
	body   []byte
	size   int64
	limit  int
}

func (c *capture) Header() http.Header { return c.header }

func (c *capture) WriteHeader(code int) {
	if c.status != 0 || code < 200 {
		return // informational answers, or a second call
	}
	c.status = code
}

func (c *capture) Write(p []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	if room := c.limit - len(c.body); room > 0 {
		c.body = append(c.body, p[:min(room, len(p))]...)
	}
	c.size += int64(len(p))
	return len(p), nil
}

// Flush lets the proxy flush as it streams; there is nothing to flush.
func (c *capture) Flush() {}
