package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/labstack/echo/v4"

	"github.com/faasvm/appliance/guest/protocol"
	"github.com/faasvm/appliance/internal/controller"
)

// The common case of an invocation — anything but a protocol upgrade — is
// forwarded here rather than through httputil.ReverseProxy: one outgoing
// request built directly, the shared keep-alive transport, a pooled copy
// buffer, and a flush only when the answer streams (text/event-stream or
// no Content-Length). The ReverseProxy serves upgrades (WebSocket), which
// need its connection hijacking. Both paths apply the same rules: hop-by-hop
// headers dropped both ways, X-Forwarded-* set by the gateway alone, only
// the data secret sent, the agent's internal headers never returned.

// copyBufSize is the size of the pooled copy buffers.
const copyBufSize = 32 << 10

// bufferPool hands out copy buffers for both paths (httputil.BufferPool).
type bufferPool struct{ p sync.Pool }

var _ httputil.BufferPool = (*bufferPool)(nil)

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}}
}

func (b *bufferPool) Get() []byte  { return *b.p.Get().(*[]byte) }
func (b *bufferPool) Put(x []byte) { b.p.Put(&x) }

// hopHeaders are dropped by proxies (RFC 9110 7.6.1), as ReverseProxy does.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// isUpgrade says whether the request asks to switch protocols.
func isUpgrade(h http.Header) bool {
	return h.Get("Upgrade") != "" && headerHasToken(h, "Connection", "upgrade")
}

func headerHasToken(h http.Header, key, token string) bool {
	for _, v := range h[key] {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// copyHeader copies src to dst without the hop-by-hop headers and those
// src's Connection header names.
func copyHeader(dst, src http.Header) {
	var named map[string]bool
	for _, v := range src["Connection"] {
		for _, t := range strings.Split(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				if named == nil {
					named = map[string]bool{}
				}
				named[textproto.CanonicalMIMEHeaderKey(t)] = true
			}
		}
	}
	for k, vv := range src {
		if isHop(k) || named[k] {
			continue
		}
		dst[k] = vv
	}
}

func isHop(k string) bool {
	for _, h := range hopHeaders {
		if k == h {
			return true
		}
	}
	return false
}

// trackedBody notes whether any byte of the client's body was read, so
// that a failed attempt is retried only when nothing was sent.
type trackedBody struct {
	io.ReadCloser
	read atomic.Bool
}

// Close leaves the client's body open: the transport closes a request's
// body when an attempt fails, and a retry still needs it. The server closes
// it at the end of the request.
func (b *trackedBody) Close() error { return nil }

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.read.Store(true)
	}
	return n, err
}

// connFailed says the instance refused or reset the connection: it is
// likely gone, and nothing (or not all) of the request reached a handler.
func connFailed(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
}

// dialRefused says the connection to the instance was refused while it
// was being opened: not one byte of the request left the gateway, so it is
// safe to send it anywhere else, even after a wait.
func dialRefused(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial" && errors.Is(err, syscall.ECONNREFUSED)
}

// forward sends in to st.inst and copies the answer to c. When the
// instance refuses or resets the connection it is reported as suspect at
// once (passive health: it takes no more requests until its health check
// passes). Then, if no byte of the body was read, the request goes once
// to another instance that retry returns. A refused connection (QEMU has
// just died; the controller has not seen it exit yet) never reached the
// function, so retry may wait for a replacement, bounded by the boot wait
// and the request's own deadline; after a reset it takes only an instance
// ready at once. The failed attempt is released with status 0 and st.inst
// becomes the new instance, which the caller releases. A retry that finds
// no instance in time answers as a request that found none (503 with
// Retry-After, or 504/499).
func (g *Gateway) forward(c echo.Context, st *proxyState, in *http.Request, retry func(ctx context.Context, wait bool) (controller.Instance, error)) {
	var body *trackedBody
	if in.Body != nil && in.Body != http.NoBody && in.ContentLength != 0 {
		body = &trackedBody{ReadCloser: in.Body}
	}
	res, err := g.roundTrip(st, in, body)
	if err != nil && connFailed(err) && st.inst.Suspect != nil && st.clientCtx.Err() == nil {
		st.inst.Suspect()
		if body == nil || !body.read.Load() {
			wait := dialRefused(err)
			next, rerr := retry(in.Context(), wait)
			switch {
			case rerr == nil:
				g.log.Debug("instance unreachable, retrying on another", "function", st.inst.Function, "vm_id", st.inst.VMID, "next_vm_id", next.VMID, "waited", wait, "err", err)
				st.inst.Release(0)
				st.inst = next
				st.info.vmID = next.VMID
				res, err = g.roundTrip(st, in, body)
			case wait:
				g.log.Debug("instance refused the connection and no other came in time", "function", st.inst.Function, "vm_id", st.inst.VMID, "err", err, "retry_err", rerr)
				_ = g.fail(c, g.acquireError(st.clientCtx, errors.Is(rerr, errRetryWaitExpired), rerr))
				return
			}
		}
	}
	if err != nil {
		g.proxyError(nil, in, err)
		return
	}
	defer res.Body.Close()
	w := c.Response()
	h := w.Header()
	id := h.Get(RequestIDHeader) // the gateway's, set before forwarding
	copyHeader(h, res.Header)
	cleanAnswer(st, h, res.StatusCode, id)
	if len(res.Trailer) > 0 {
		keys := make([]string, 0, len(res.Trailer))
		for k := range res.Trailer {
			keys = append(keys, k)
		}
		h.Set("Trailer", strings.Join(keys, ", "))
	}
	w.WriteHeader(res.StatusCode)

	var flush func() error
	if res.ContentLength == -1 || strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		rc := http.NewResponseController(w.Writer)
		flush = rc.Flush
		if err := flush(); err != nil { // the headers go now: the client sees the stream start
			panic(http.ErrAbortHandler)
		}
	}
	buf := g.bufs.Get()
	defer g.bufs.Put(buf)
	if err := copyBody(w, res.Body, buf, flush); err != nil {
		// Half an answer must not look whole: abort the connection (as
		// ReverseProxy does).
		panic(http.ErrAbortHandler)
	}
	for k, vv := range res.Trailer {
		for _, v := range vv {
			h.Add(http.TrailerPrefix+k, v)
		}
	}
}

// roundTrip sends one attempt of in to st.inst.
func (g *Gateway) roundTrip(st *proxyState, in *http.Request, body *trackedBody) (*http.Response, error) {
	out := &http.Request{
		Method: in.Method,
		URL: &url.URL{
			Scheme: "http", Host: st.inst.Endpoint, Path: st.path, RawPath: st.rawPath, RawQuery: in.URL.RawQuery,
		},
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        make(http.Header, len(in.Header)+4),
		ContentLength: in.ContentLength,
		Host:          st.inst.Endpoint,
	}
	if body != nil {
		out.Body = body
	}
	copyHeader(out.Header, in.Header)
	if headerHasToken(in.Header, "Te", "trailers") {
		out.Header.Set("Te", "trailers")
	}
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = []string{""} // not Go's default
	}
	out.Header.Del("Forwarded")
	out.Header.Del("X-Forwarded-Host")
	out.Header.Del("X-Forwarded-Proto")
	if ip, _, err := net.SplitHostPort(in.RemoteAddr); err == nil {
		out.Header["X-Forwarded-For"] = []string{ip}
	} else {
		out.Header.Del("X-Forwarded-For")
	}
	out.Header["X-Forwarded-Host"] = []string{in.Host}
	proto := "http"
	if in.TLS != nil {
		proto = "https"
	}
	out.Header["X-Forwarded-Proto"] = []string{proto}
	out.Header.Del(protocol.ControlHeader)
	out.Header[protocol.SecretHeader] = []string{st.inst.Secret}
	return g.transport.RoundTrip(out.WithContext(in.Context()))
}

// copyBody copies src to w with buf, flushing after each write when flush
// is set; it returns the first error of either side.
func copyBody(w io.Writer, src io.Reader, buf []byte, flush func() error) error {
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
			if flush != nil {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// errRetryWaitExpired marks a retry's wait that ran out of boot wait.
var errRetryWaitExpired = errors.New("no other instance ready within the boot wait")

// anotherInstance is the retry of forward: a ready instance of the same
// function at once, or, with wait, the next one ready within the boot wait
// (the controller boots a replacement for an instance that died).
func (g *Gateway) anotherInstance(ctx context.Context, name string, wait bool) (controller.Instance, error) {
	inst, err := g.fns.Acquire(g.noWait, name)
	if !wait || err == nil || !(errors.Is(err, controller.ErrNotReady) || errors.Is(err, context.Canceled)) {
		return inst, err
	}
	bootCtx, cancel := context.WithTimeout(ctx, g.opts.BootWait)
	defer cancel()
	inst, err = g.fns.Acquire(bootCtx, name)
	if err != nil && errors.Is(bootCtx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
		return inst, fmt.Errorf("%w: %w", errRetryWaitExpired, err)
	}
	return inst, err
}
