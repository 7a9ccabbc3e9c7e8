// Package gateway is the appliance's HTTP front: /invoke/<name> proxies a
// request to a ready instance of the function, /api/* shows the functions,
// /healthz says the appliance is up. It never drives VMs: it asks Functions
// (the controller) for an instance and proxies to it.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/faasvm/appliance/internal/controller"
)

// Functions is what the gateway needs from the controller.
type Functions interface {
	// Acquire waits, bounded by ctx, for a ready instance of the function.
	// Its errors wrap controller.ErrNotFound, ErrNotReady, ErrUnavailable or
	// ErrOverloaded. The caller calls the instance's Release exactly once.
	Acquire(ctx context.Context, name string) (controller.Instance, error)
	// List reports every function, sorted by name.
	List(ctx context.Context) []controller.Status
	// Get reports one function; the error wraps controller.ErrNotFound for
	// an unknown name.
	Get(ctx context.Context, name string) (controller.Status, error)
	// Logs returns the last lines of the function's VM console.
	Logs(ctx context.Context, name string, lines int) (string, error)
}

// Options tune the gateway. Zero values take the defaults noted.
type Options struct {
	// BootWait bounds how long a request waits for a ready instance before
	// a 503 (default 30s).
	BootWait time.Duration
	// InvokeTimeout bounds one proxied request, to the end of its response
	// body, before a 504 (default 30s), when the instance carries no timeout
	// of its own; otherwise the function's timeout plus a small margin
	// applies, so the agent's more precise 504 wins the race.
	InvokeTimeout time.Duration
	// MaxBody is the largest request body accepted, in bytes (default 10 MiB).
	MaxBody int64
	// APIToken, when not empty, is the bearer token /api/* requires.
	APIToken string
	// ShutdownTimeout bounds how long Serve waits for in-flight requests
	// once its context ends (default 20s).
	ShutdownTimeout time.Duration
	// Observer records every invocation (nil: none).
	Observer Observer
	// Queue takes asynchronous calls: /async-function/<name> and /invoke
	// with "Prefer: respond-async" (nil: they answer 503).
	Queue Queue
	// Logs holds the functions' own output for /api/functions/<name>/logs
	// (nil: that route answers 501).
	Logs LogSource
	// Uploads serves PUT/POST/DELETE /api/functions (nil: uploads are off,
	// 403). MaxUpload bounds POST's code (default 256 MiB; the store
	// bounds archives itself).
	Uploads   Uploads
	MaxUpload int64
	// Series keeps the dashboard's charts; the appliance shares it with the
	// controller's recorder so VM starts reach the charts (nil: the gateway
	// keeps its own, with invocations only).
	Series *Series
	// Health adds fields to /healthz's answer (nil: none), such as the
	// state disk's figures; it must be quick and reveal nothing private.
	Health func() map[string]any
}

// Observer records invocations, e.g. as Prometheus metrics. It gets every
// request to /invoke/<name> whatever the name: it decides which names it
// keeps (the appliance's metrics keep only functions that exist).
type Observer interface {
	// InvocationStarted: a request for function arrived.
	InvocationStarted(function string)
	// InvocationDone: it was answered with status (0: no answer) after took.
	InvocationDone(function string, status int, took time.Duration)
}

// TruncationObserver is an optional Observer extension: it counts
// answers whose body was cut off after status was sent (the instance died
// or closed mid-stream). InvocationDone reports them with status 0.
type TruncationObserver interface {
	InvocationTruncated(function string, status int)
}

func (o Options) withDefaults() Options {
	if o.BootWait <= 0 {
		o.BootWait = 30 * time.Second
	}
	if o.InvokeTimeout <= 0 {
		o.InvokeTimeout = 30 * time.Second
	}
	if o.MaxBody <= 0 {
		o.MaxBody = 10 << 20
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 20 * time.Second
	}
	if o.MaxUpload <= 0 {
		o.MaxUpload = 256 << 20
	}
	return o
}

// Gateway serves the appliance's HTTP routes.
type Gateway struct {
	opts      Options
	fns       Functions
	log       *slog.Logger
	echo      *echo.Echo
	transport *http.Transport
	proxy     *httputil.ReverseProxy // for upgrades; see forward.go
	bufs      *bufferPool
	shutdown  chan struct{} // closed when Serve begins draining: streams end
	series    *Series       // the dashboard's charts (series.go)
	// noWait is a context that is already done: Acquire with it takes a
	// ready instance or gives up at once, and costs no timer.
	noWait context.Context
}

// New builds the gateway's routes. A nil logger discards logs.
func New(opts Options, fns Functions, logger *slog.Logger) *Gateway {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	g := &Gateway{opts: opts.withDefaults(), fns: fns, log: logger, bufs: newBufferPool(), shutdown: make(chan struct{}), series: opts.Series}
	if g.series == nil {
		g.series = &Series{}
	}
	noWait, cancel := context.WithCancel(context.Background())
	cancel()
	g.noWait = noWait
	g.transport = &http.Transport{
		// Instances are on loopback or in our own network: never a proxy
		// taken from the environment.
		Proxy: nil,
		// One connection set-up at a time per instance (see dial.go).
		DialContext: newSerialDialer((&net.Dialer{
			Timeout:   5 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext).DialContext,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		// Bodies pass through as the function wrote them.
		DisableCompression: true,
	}
	g.proxy = &httputil.ReverseProxy{
		Rewrite:   g.rewrite,
		Transport: g.transport,
		// 0: ReverseProxy flushes at once what streams (SSE, unknown
		// length) and buffers the rest.
		FlushInterval:  0,
		BufferPool:     g.bufs,
		ModifyResponse: g.modifyResponse,
		ErrorHandler:   g.proxyError,
		ErrorLog:       slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.Logger.SetOutput(io.Discard)
	e.HTTPErrorHandler = func(err error, c echo.Context) { _ = g.fail(c, err) }
	e.Pre(closeChunked)
	e.Use(g.requestID, g.accessLog, g.recoverPanic)

	e.GET("/healthz", g.healthz)
	e.Any("/invoke/:name", g.invoke, g.preferAsync)
	e.Any("/invoke/:name/*", g.invoke, g.preferAsync)
	// OpenFaaS's path, served exactly as /invoke (see openfaas.go).
	e.Any("/function/:name", g.invokeOpenFaaS, g.preferAsync)
	e.Any("/function/:name/*", g.invokeOpenFaaS, g.preferAsync)
	e.Any("/async-function/:name", g.invokeAsync)
	e.Any("/async-function/:name/*", g.invokeAsync)
	// The token guards each route rather than the group: a group middleware
	// makes echo answer 404 where 405 is right.
	api := e.Group("/api")
	api.GET("/functions", g.listFunctions, g.requireToken)
	api.GET("/functions/:name", g.getFunction, g.requireToken)
	api.GET("/functions/:name/logs", g.functionLogs, g.requireToken)
	api.GET("/functions/:name/console", g.functionConsole, g.requireToken)
	// The upload API (upload.go).
	api.PUT("/functions/:name", g.putFunction, g.requireToken)
	api.POST("/functions", g.createFunction, g.requireToken)
	api.DELETE("/functions/:name", g.deleteFunction, g.requireToken)
	api.GET("/functions/:name/series", g.functionSeries, g.requireToken)
	api.GET("/calls/:id", g.getCall, g.requireToken)
	api.GET("/queue", g.queueStats, g.requireToken)
	g.echo = e
	return g
}

// Handler returns the gateway's routes as one http.Handler.
func (g *Gateway) Handler() http.Handler { return g.echo }

// Mount serves h at path, an echo route pattern such as "/metrics" or
// "/ui/*", for every method, with the gateway's access log and panic
// recovery and without the API token. It is the hook for routes that live
// outside this package (metrics, the UI). Call it before serving.
func (g *Gateway) Mount(path string, h http.Handler) {
	g.echo.Any(path, echo.WrapHandler(h))
}

// MountAPI is Mount behind the API token, when one is set, as /api/* is:
// for routes such as /metrics that reveal what the appliance runs.
func (g *Gateway) MountAPI(path string, h http.Handler) {
	g.echo.Any(path, echo.WrapHandler(h), g.requireToken)
}

// Serve serves on ln until ctx ends, then stops accepting connections and
// waits up to Options.ShutdownTimeout for in-flight requests before closing
// the rest. It returns nil after a clean drain.
func (g *Gateway) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           g.echo,
		ReadHeaderTimeout: 10 * time.Second,
		// In exec mode headers become the handler's environment
		// variables, and Linux caps one at 128KiB (MAX_ARG_STRLEN).
		MaxHeaderBytes: 64 << 10,
		IdleTimeout:    2 * time.Minute,
		ErrorLog:       slog.NewLogLogger(g.log.Handler(), slog.LevelDebug),
	}
	defer g.transport.CloseIdleConnections()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case err := <-served:
		return fmt.Errorf("serving http on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	g.log.Info("draining http requests", "step", "shutdown", "timeout", g.opts.ShutdownTimeout)
	close(g.shutdown) // log streams end; Serve runs once
	drain, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.opts.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(drain)
	if err != nil {
		err = errors.Join(fmt.Errorf("draining http requests: %w", err), srv.Close())
	}
	if serveErr := <-served; !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(err, fmt.Errorf("serving http on %s: %w", ln.Addr(), serveErr))
	}
	return err
}

func (g *Gateway) healthz(c echo.Context) error {
	body := map[string]any{}
	if g.opts.Health != nil {
		for k, v := range g.opts.Health() {
			body[k] = v
		}
	}
	body["status"] = "ok"
	return c.JSON(http.StatusOK, body)
}
