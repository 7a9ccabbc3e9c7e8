package gateway

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// reqInfo is what handlers tell the access log about a request.
type reqInfo struct {
	function   string
	requestID  string // the request's X-Request-Id
	vmID       string // the instance that served the request
	err        error
	agentError bool   // the agent, not the handler, wrote the answer
	panicked   any    // a recovered panic's value
	stack      []byte // and its stack
}

const infoKey = "gateway.request"

func infoOf(c echo.Context) *reqInfo {
	if i, ok := c.Get(infoKey).(*reqInfo); ok {
		return i
	}
	i := &reqInfo{}
	c.Set(infoKey, i)
	return i
}

// accessLog writes one line per request, also when an aborted response
// unwinds the stack (http.ErrAbortHandler).
func (g *Gateway) accessLog(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		info := infoOf(c)
		aborted := true
		defer func() { g.logRequest(c, info, time.Since(start), aborted) }()
		if err := next(c); err != nil {
			c.Error(err)
		}
		aborted = false
		return nil
	}
}

func (g *Gateway) logRequest(c echo.Context, info *reqInfo, took time.Duration, aborted bool) {
	req, res := c.Request(), c.Response()
	status := 0
	if res.Committed {
		status = res.Status
	}
	level := slog.LevelInfo
	switch {
	case info.panicked != nil:
		level = slog.LevelError
	case status >= 500 && status != http.StatusServiceUnavailable:
		level = slog.LevelWarn
	case req.URL.Path == "/healthz" && status == http.StatusOK:
		level = slog.LevelDebug
	}
	// The attributes are built only for a line that is written.
	if !g.log.Enabled(req.Context(), level) {
		return
	}
	attrs := make([]slog.Attr, 0, 12)
	attrs = append(attrs,
		slog.String("method", req.Method),
		slog.String("path", req.URL.Path),
		slog.Int("status", status),
		slog.Duration("duration", took),
		slog.Int64("bytes", res.Size),
		slog.String("remote", req.RemoteAddr),
	)
	if info.requestID != "" {
		attrs = append(attrs, slog.String("request_id", info.requestID))
	}
	if info.function != "" {
		attrs = append(attrs, slog.String("function", info.function))
	}
	if info.vmID != "" {
		attrs = append(attrs, slog.String("vm_id", info.vmID))
	}
	if info.agentError {
		attrs = append(attrs, slog.Bool("agent_error", true))
	}
	if aborted {
		attrs = append(attrs, slog.Bool("aborted", true))
	}
	if info.err != nil {
		attrs = append(attrs, slog.String("error", info.err.Error()))
	}
	if info.panicked != nil {
		attrs = append(attrs, slog.String("panic", fmt.Sprint(info.panicked)), slog.String("stack", string(info.stack)))
	}
	g.log.LogAttrs(req.Context(), level, "http request", attrs...)
}

// recoverPanic turns a handler's panic into a 500 so that one bad request
// never takes the appliance down. http.ErrAbortHandler, which aborts a
// response on purpose, passes through to net/http.
func (g *Gateway) recoverPanic(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			p := recover()
			if p == nil {
				return
			}
			if e, ok := p.(error); ok && errors.Is(e, http.ErrAbortHandler) {
				panic(p)
			}
			info := infoOf(c)
			info.panicked, info.stack = p, debug.Stack()
			if c.Response().Committed {
				// Half an answer must not look whole: abort the connection.
				panic(http.ErrAbortHandler)
			}
			err = g.fail(c, fmt.Errorf("handler panicked: %v", p))
		}()
		return next(c)
	}
}

// requireToken guards /api/* with the bearer token, when one is set.
func (g *Gateway) requireToken(next echo.HandlerFunc) echo.HandlerFunc {
	if g.opts.APIToken == "" {
		return next
	}
	// Hashing first makes the comparison's time independent of the length.
	want := sha256.Sum256([]byte(g.opts.APIToken))
	return func(c echo.Context) error {
		token, ok := bearerToken(c.Request().Header.Get(echo.HeaderAuthorization))
		got := sha256.Sum256([]byte(token))
		if ok && subtle.ConstantTimeCompare(got[:], want[:]) == 1 {
			return next(c)
		}
		challenge := `Bearer realm="faas"`
		if ok {
			challenge += `, error="invalid_token"`
		}
		c.Response().Header().Set(echo.HeaderWWWAuthenticate, challenge)
		return g.fail(c, errUnauthorized)
	}
}

// bearerToken extracts the token of an "Authorization: Bearer <token>"
// header; the scheme is case-insensitive.
func bearerToken(header string) (string, bool) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// closeChunked closes the connection after answering a request framed by
// Transfer-Encoding: chunked. net/http drops a Content-Length sent with it
// and reads the body as chunked (RFC 9112 §6.1), keeping the connection;
// a front proxy that framed the same bytes by Content-Length would then
// have the bytes after the chunked terminator served as a second request.
// Closing is the RFC's other choice to rejecting: the connection carries
// nothing more once the chunked request is answered.
func closeChunked(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if slices.Contains(c.Request().TransferEncoding, "chunked") {
			c.Response().Header().Set(echo.HeaderConnection, "close")
		}
		return next(c)
	}
}
