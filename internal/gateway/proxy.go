package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/faasvm/appliance/guest/protocol"
	"github.com/faasvm/appliance/internal/controller"
)

const invokePrefix = "/invoke/"

// proxyState is one invocation, carried to the reverse proxy's hooks in
// the request's context.
type proxyState struct {
	c         echo.Context
	info      *reqInfo
	inst      controller.Instance
	path      string // the path the instance sees, unescaped
	rawPath   string // and as the client escaped it
	clientCtx context.Context
	tooLarge  atomic.Bool // the body went over Options.MaxBody
	timeout   time.Duration
}

// agentMargin lets the agent's own timeout answer (a 504 that says which
// function timed out) reach the client before the gateway gives up.
const agentMargin = 2 * time.Second

// invokeTimeout is the function's own timeout plus a margin, or the
// appliance-wide default when the instance does not say.
func (g *Gateway) invokeTimeout(inst controller.Instance) time.Duration {
	if inst.Timeout > 0 {
		return inst.Timeout + agentMargin
	}
	return g.opts.InvokeTimeout
}

type stateKey struct{}

func stateOf(ctx context.Context) *proxyState {
	return ctx.Value(stateKey{}).(*proxyState)
}

// invoke serves /invoke/<name>[/<path>]: it waits for a ready instance and
// proxies the request to it with <path> ("/" when empty).
func (g *Gateway) invoke(c echo.Context) error {
	req := c.Request()
	info := infoOf(c)
	name, rawPath, ok := splitInvokePath(req.URL.EscapedPath())
	info.function = name
	if !ok {
		return g.fail(c, fmt.Errorf("%w: no function name in %q", controller.ErrNotFound, req.URL.Path))
	}
	if obs := g.opts.Observer; obs != nil {
		start := time.Now()
		obs.InvocationStarted(name)
		defer func() {
			// A body the instance cut off mid-stream (ReverseProxy
			// aborts the response with http.ErrAbortHandler) is no
			// answer, whatever status was committed: it is counted as
			// truncated. A client that left keeps its status.
			p := recover()
			status := responseStatus(c)
			if p != nil && req.Context().Err() == nil { // not the client leaving
				if t, ok := obs.(TruncationObserver); ok {
					t.InvocationTruncated(name, status)
				}
				status = 0
			}
			obs.InvocationDone(name, status, time.Since(start))
			if p != nil {
				panic(p)
			}
		}()
	}
	if req.ContentLength > g.opts.MaxBody {
		return g.fail(c, &http.MaxBytesError{Limit: g.opts.MaxBody})
	}

	// A ready instance at once, the common case, needs no boot timer;
	// otherwise the request waits for one up to BootWait.
	inst, err := g.fns.Acquire(g.noWait, name)
	if errors.Is(err, controller.ErrNotReady) || errors.Is(err, context.Canceled) && req.Context().Err() == nil {
		bootCtx, cancelBoot := context.WithTimeout(req.Context(), g.opts.BootWait)
		inst, err = g.fns.Acquire(bootCtx, name)
		bootExpired := errors.Is(bootCtx.Err(), context.DeadlineExceeded)
		cancelBoot()
		if err != nil {
			return g.fail(c, g.acquireError(req.Context(), bootExpired, err))
		}
	} else if err != nil {
		return g.fail(c, g.acquireError(req.Context(), false, err))
	}
	info.vmID = inst.VMID
	defer g.recordSeries(name, time.Now(), c)

	path, err := url.PathUnescape(rawPath)
	if err != nil {
		path = rawPath
	}
	st := &proxyState{c: c, info: info, inst: inst, path: path, rawPath: rawPath, clientCtx: req.Context(), timeout: g.invokeTimeout(inst)}
	// st.inst, not inst: a retry may have moved the request to another.
	defer func() {
		if p := recover(); p != nil {
			status := responseStatus(c)
			if req.Context().Err() == nil {
				status = 0 // truncated by the instance: no whole answer
			}
			st.inst.Release(status)
			panic(p)
		}
		st.inst.Release(responseStatus(c))
	}()
	ctx, cancel := context.WithTimeout(req.Context(), st.timeout)
	defer cancel()
	out := req.WithContext(context.WithValue(ctx, stateKey{}, st))
	if req.Body != nil && req.Body != http.NoBody {
		out.Body = &limitedBody{ReadCloser: http.MaxBytesReader(c.Response().Writer, req.Body, g.opts.MaxBody), st: st}
	}
	if isUpgrade(req.Header) {
		g.proxy.ServeHTTP(proxyWriter{c.Response()}, out)
		return nil
	}
	g.forward(c, st, out, func(ctx context.Context, wait bool) (controller.Instance, error) {
		return g.anotherInstance(ctx, name, wait)
	})
	return nil
}

// responseStatus is the status sent to the client, 0 if none was.
func responseStatus(c echo.Context) int {
	if c.Response().Committed {
		return c.Response().Status
	}
	return 0
}

// acquireError says why no instance came: the client left, or the boot
// wait ran out (a 503 with a retry hint), or what the controller said.
func (g *Gateway) acquireError(clientCtx context.Context, bootExpired bool, err error) error {
	switch {
	case clientCtx.Err() != nil:
		return fmt.Errorf("%w while waiting for an instance: %w", errClientGone, err)
	case bootExpired && !isControllerError(err):
		return fmt.Errorf("%w: no instance ready within %s", controller.ErrNotReady, g.opts.BootWait)
	}
	return err
}

func isControllerError(err error) bool {
	for _, e := range []error{controller.ErrNotFound, controller.ErrNotReady, controller.ErrUnavailable, controller.ErrOverloaded, controller.ErrNoMemory} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// splitInvokePath splits "/invoke/<name>/<rest>" (escaped) into the
// unescaped name and the escaped "/<rest>", "/" when there is no rest.
func splitInvokePath(escaped string) (name, rawPath string, ok bool) {
	rest, found := strings.CutPrefix(escaped, invokePrefix)
	if !found {
		// OpenFaaS's /function/<name>[/<path>] is the same route.
		if rest, found = strings.CutPrefix(escaped, functionPrefix); !found {
			return "", "", false
		}
	}
	rawName, tail, _ := strings.Cut(rest, "/")
	name, err := url.PathUnescape(rawName)
	if err != nil || name == "" {
		return rawName, "", false
	}
	return name, "/" + tail, true
}

// rewrite aims the outgoing request at the instance. ReverseProxy has
// already removed hop-by-hop and X-Forwarded-* headers.
func (g *Gateway) rewrite(pr *httputil.ProxyRequest) {
	st := stateOf(pr.In.Context())
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = st.inst.Endpoint
	pr.Out.URL.Path = st.path
	pr.Out.URL.RawPath = st.rawPath
	pr.Out.Host = ""
	pr.SetXForwarded()
	// Only the gateway may speak for the host, and only on the data path:
	// it has the data secret, never the control one, and a client's
	// control header goes no further.
	pr.Out.Header.Del(protocol.SecretHeader)
	pr.Out.Header.Del(protocol.ControlHeader)
	pr.Out.Header.Set(protocol.SecretHeader, st.inst.Secret)
}

// modifyResponse removes the agent's internal headers from the answer.
func (g *Gateway) modifyResponse(res *http.Response) error {
	cleanAnswer(stateOf(res.Request.Context()), res.Header, res.StatusCode, "")
	return nil
}

// cleanAnswer makes an instance's answer headers the client's: the agent's
// and the secrets' headers go, the gateway's request id (id, when not already
// on h) is the only one whatever the function said, and a 503 from the agent
// ("handler is starting") or the function itself still says when to retry.
func cleanAnswer(st *proxyState, h http.Header, status int, id string) {
	if h.Get(protocol.AgentErrorHeader) != "" {
		st.info.agentError = true
	}
	h.Del(protocol.AgentErrorHeader)
	h.Del(RequestIDHeader)
	if id != "" {
		h.Set(RequestIDHeader, id)
	}
	h.Del(protocol.SecretHeader)
	h.Del(protocol.ControlHeader)
	if status == http.StatusServiceUnavailable && h.Get("Retry-After") == "" {
		h.Set("Retry-After", defaultRetryAfter)
	}
}

// proxyError answers when no response came from the instance.
func (g *Gateway) proxyError(_ http.ResponseWriter, r *http.Request, err error) {
	st := stateOf(r.Context())
	var tooLarge *http.MaxBytesError
	switch {
	case st.tooLarge.Load() || errors.As(err, &tooLarge):
		err = &http.MaxBytesError{Limit: g.opts.MaxBody}
	case st.clientCtx.Err() != nil:
		err = fmt.Errorf("%w: %w", errClientGone, err)
	case errors.Is(r.Context().Err(), context.DeadlineExceeded):
		err = fmt.Errorf("%w: no answer within %s", errInvokeTimeout, st.timeout)
	default:
		err = fmt.Errorf("%w: %w", errUpstream, err)
	}
	_ = g.fail(st.c, err)
}

// limitedBody notes when the client's body went over the limit, whatever
// the transport makes of the read error.
type limitedBody struct {
	io.ReadCloser
	st *proxyState
}

func (b *limitedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		b.st.tooLarge.Store(true)
	}
	return n, err
}

// proxyWriter hands echo's response to the reverse proxy, except that 1xx
// informational answers (100 Continue, 103 Early Hints) go straight to the
// connection: echo would take them for the final status.
type proxyWriter struct{ res *echo.Response }

func (w proxyWriter) Header() http.Header         { return w.res.Header() }
func (w proxyWriter) Write(b []byte) (int, error) { return w.res.Write(b) }
func (w proxyWriter) Unwrap() http.ResponseWriter { return w.res.Writer }
func (w proxyWriter) FlushError() error           { return http.NewResponseController(w.res.Writer).Flush() }
func (w proxyWriter) Flush()                      { _ = w.FlushError() }

func (w proxyWriter) WriteHeader(code int) {
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		w.res.Writer.WriteHeader(code)
		return
	}
	w.res.WriteHeader(code)
}
