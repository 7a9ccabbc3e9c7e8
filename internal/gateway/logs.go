package gateway

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/faasvm/appliance/internal/logs"
)

// LogSource is where the functions' own output is kept (internal/logs).
type LogSource interface {
	// Read returns the entries q selects, oldest first.
	Read(function string, q logs.Query) ([]logs.Entry, error)
	// Follow is Read plus every later entry on the follower's channel.
	Follow(function string, q logs.Query) ([]logs.Entry, *logs.Follower, error)
}

// Formats of GET /api/functions/:name/logs.
const (
	logFormatText = "text" // one line per entry: time instance stream [request id] line
	logFormatJSON = "json" // newline-delimited JSON entries
	logFormatSSE  = "sse"  // Server-Sent Events, each data a JSON entry
)

// sseKeepAlive is how often a quiet SSE stream gets a comment, so proxies
// keep it open and a departed client is noticed.
const sseKeepAlive = 15 * time.Second

var errLogsDisabled = errors.New("function logs are not collected by this gateway")

// logRequest is a parsed logs query.
type logRequest struct {
	q      logs.Query
	follow bool
	format string
}

// parseLogRequest reads lines=, since=, instance=, follow= and format=
// (default: sse when the client accepts text/event-stream, else text).
func parseLogRequest(r *http.Request, now time.Time) (logRequest, error) {
	q := r.URL.Query()
	lr := logRequest{q: logs.Query{Lines: defaultLogLines}, format: logFormatText}
	if strings.Contains(r.Header.Get(echo.HeaderAccept), "text/event-stream") {
		lr.format = logFormatSSE
	}
	if q.Has("lines") {
		n, err := strconv.Atoi(q.Get("lines"))
		if err != nil || n < 1 || n > maxLogLines {
			return lr, fmt.Errorf("%w: lines must be a whole number from 1 to %d, got %q", errBadRequest, maxLogLines, q.Get("lines"))
		}
		lr.q.Lines = n
	}
	if v := q.Get("since"); v != "" {
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			lr.q.Since = t
		} else if d, err := time.ParseDuration(v); err == nil && d > 0 {
			lr.q.Since = now.Add(-d)
		} else {
			return lr, fmt.Errorf("%w: since must be an RFC 3339 time (2026-01-02T15:04:05Z) or a duration back from now (10m), got %q", errBadRequest, v)
		}
	}
	if v := q.Get("instance"); v != "" {
		if !saneInstanceID(v) {
			return lr, fmt.Errorf("%w: instance must be a VM id (letters, digits and '-', at most 64), got %q", errBadRequest, v)
		}
		lr.q.Instance = v
	}
	switch v := q.Get("follow"); v {
	case "", "0", "false":
	case "1", "true":
		lr.follow = true
	default:
		return lr, fmt.Errorf("%w: follow must be 1 or 0, got %q", errBadRequest, v)
	}
	switch v := q.Get("format"); v {
	case "":
	case logFormatText, logFormatJSON, logFormatSSE:
		lr.format = v
	default:
		return lr, fmt.Errorf("%w: format must be text, json or sse, got %q", errBadRequest, v)
	}
	return lr, nil
}

func saneInstanceID(s string) bool {
	if len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// functionLogs serves GET /api/functions/:name/logs: the function's own
// output, with follow=1 streamed until the client leaves.
func (g *Gateway) functionLogs(c echo.Context) error {
	name := functionParam(c)
	req := c.Request()
	lr, err := parseLogRequest(req, time.Now())
	if err != nil {
		return g.fail(c, err)
	}
	if _, err := g.fns.Get(req.Context(), name); err != nil {
		return g.fail(c, err)
	}
	if g.opts.Logs == nil {
		return g.fail(c, errLogsDisabled)
	}
	var (
		entries []logs.Entry
		w       *logs.Follower
	)
	if lr.follow {
		entries, w, err = g.opts.Logs.Follow(name, lr.q)
	} else {
		entries, err = g.opts.Logs.Read(name, lr.q)
	}
	if err != nil {
		return g.fail(c, fmt.Errorf("reading logs of %s: %w", name, err))
	}
	if w != nil {
		defer w.Close()
	}
	res := c.Response()
	h := res.Header()
	// The lines are the guest's: never let a browser read them as HTML.
	h.Set(echo.HeaderXContentTypeOptions, "nosniff")
	switch lr.format {
	case logFormatJSON:
		h.Set(echo.HeaderContentType, "application/x-ndjson")
	case logFormatSSE:
		h.Set(echo.HeaderContentType, "text/event-stream")
		h.Set("Cache-Control", "no-cache")
	default:
		h.Set(echo.HeaderContentType, echo.MIMETextPlainCharsetUTF8)
	}
	res.WriteHeader(http.StatusOK)
	bw := bufio.NewWriter(res)
	write := func(batch []logs.Entry) error {
		for i := range batch {
			if err := writeLogEntry(bw, lr.format, &batch[i]); err != nil {
				return err
			}
		}
		if err := bw.Flush(); err != nil {
			return err
		}
		res.Flush()
		return nil
	}
	if err := write(entries); err != nil || w == nil {
		return nil // the client left: nothing more to say
	}
	keepAlive := time.NewTicker(sseKeepAlive)
	defer keepAlive.Stop()
	for {
		select {
		case batch, ok := <-w.C:
			if !ok {
				if lr.format == logFormatSSE {
					_, _ = bw.WriteString("event: lagged\ndata: {\"error\":\"reader too slow: reconnect with since=\"}\n\n")
					_ = bw.Flush()
				}
				return nil
			}
			if err := write(batch); err != nil {
				return nil
			}
		case <-keepAlive.C:
			if lr.format == logFormatSSE {
				if _, err := bw.WriteString(": keep-alive\n\n"); err != nil || bw.Flush() != nil {
					return nil
				}
				res.Flush()
			}
		case <-req.Context().Done():
			return nil
		case <-g.shutdown:
			return nil
		}
	}
}

func writeLogEntry(bw *bufio.Writer, format string, e *logs.Entry) error {
	switch format {
	case logFormatJSON, logFormatSSE:
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		if format == logFormatSSE {
			bw.WriteString("data: ")
		}
		bw.Write(b)
		if format == logFormatSSE {
			bw.WriteByte('\n')
		}
		return bw.WriteByte('\n')
	}
	bw.WriteString(e.Time.UTC().Format(time.RFC3339Nano))
	bw.WriteByte(' ')
	bw.WriteString(e.Instance)
	bw.WriteByte(' ')
	bw.WriteString(e.Stream)
	if e.RequestID != "" {
		bw.WriteString(" [" + e.RequestID + "]")
	}
	bw.WriteByte(' ')
	bw.WriteString(e.Line)
	return bw.WriteByte('\n')
}
