package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/faasvm/appliance/internal/async"
	"github.com/faasvm/appliance/internal/controller"
)

// Queue takes asynchronous calls (internal/async).
type Queue interface {
	// Enqueue stores the call durably and returns its id. Errors wrap
	// async.ErrCallbackRefused, ErrQueueFull or ErrUnavailable, or are an
	// *http.MaxBytesError.
	Enqueue(ctx context.Context, call async.Call) (string, error)
	// Result reports a call; the error wraps async.ErrCallNotFound.
	Result(ctx context.Context, id string) (async.Result, error)
	// Stats reports each function's queued and running calls.
	Stats(ctx context.Context) []async.FunctionStats
}

const (
	asyncPrefix       = "/async-function/"
	callbackURLHeader = "X-Callback-Url"
)

var errAsyncDisabled = errors.New("asynchronous calls are not enabled")

// preferAsync sends /invoke requests that carry "Prefer: respond-async"
// (RFC 7240) to the queue, and every other request on to next.
func (g *Gateway) preferAsync(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if !prefersAsync(c.Request().Header) {
			return next(c)
		}
		prefix := invokePrefix
		if strings.HasPrefix(c.Request().URL.EscapedPath(), functionPrefix) {
			prefix = functionPrefix
		}
		return g.enqueue(c, prefix)
	}
}

// prefersAsync finds the respond-async preference among Prefer headers.
func prefersAsync(h http.Header) bool {
	for _, v := range h.Values("Prefer") {
		for _, pref := range strings.Split(v, ",") {
			token, _, _ := strings.Cut(pref, ";")
			token, _, _ = strings.Cut(token, "=")
			if strings.EqualFold(strings.TrimSpace(token), "respond-async") {
				return true
			}
		}
	}
	return false
}

// invokeAsync serves /async-function/<name>[/<path>] (OpenFaaS's path).
func (g *Gateway) invokeAsync(c echo.Context) error {
	return g.enqueue(c, asyncPrefix)
}

// callAccepted is the 202 answer's body.
type callAccepted struct {
	ID     string `json:"id"`
	State  string `json:"state"`
	Result string `json:"result"` // where to read the result
}

// enqueue validates what would fail synchronously (unknown or invalid
// function, body over the limit, refused callback), queues the call and
// answers 202 with its id, as soon as it is stored.
func (g *Gateway) enqueue(c echo.Context, prefix string) error {
	req := c.Request()
	info := infoOf(c)
	name, rawPath, ok := splitFunctionPath(prefix, req.URL.EscapedPath())
	info.function = name
	if !ok {
		return g.fail(c, fmt.Errorf("%w: no function name in %q", controller.ErrNotFound, req.URL.Path))
	}
	if g.opts.Queue == nil {
		return g.fail(c, fmt.Errorf("%w: %w", controller.ErrUnavailable, errAsyncDisabled))
	}
	st, err := g.fns.Get(req.Context(), name)
	if err != nil {
		return g.fail(c, err)
	}
	if st.State == controller.StateInvalid {
		return g.fail(c, fmt.Errorf("%w: %s: %s", controller.ErrUnavailable, name, st.LastError))
	}
	if req.ContentLength > g.opts.MaxBody {
		return g.fail(c, &http.MaxBytesError{Limit: g.opts.MaxBody})
	}
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		body, err = io.ReadAll(http.MaxBytesReader(c.Response().Writer, req.Body, g.opts.MaxBody))
		var tooLarge *http.MaxBytesError
		switch {
		case errors.As(err, &tooLarge):
			return g.fail(c, err)
		case err != nil && req.Context().Err() != nil:
			return g.fail(c, fmt.Errorf("%w: %w", errClientGone, err))
		case err != nil:
			return g.fail(c, fmt.Errorf("%w: reading the body: %w", errBadRequest, err))
		}
	}
	header := req.Header.Clone()
	callback := header.Get(callbackURLHeader)
	header.Del(callbackURLHeader)
	header.Del("Prefer")
	header.Del(async.CallIDHeader) // the queue sets its own
	id, err := g.opts.Queue.Enqueue(req.Context(), async.Call{
		Function: name, Method: req.Method, Path: rawPath, Query: req.URL.RawQuery, Header: header,
		Host: req.Host, RemoteAddr: req.RemoteAddr, Body: body, CallbackURL: callback,
	})
	if err != nil {
		return g.fail(c, err)
	}
	location := "/api/calls/" + id
	h := c.Response().Header()
	h.Set(async.CallIDHeader, id)
	h.Set(echo.HeaderLocation, location)
	h.Set("Preference-Applied", "respond-async")
	return c.JSON(http.StatusAccepted, callAccepted{ID: id, State: async.StateQueued, Result: location})
}

// splitFunctionPath splits "<prefix><name>/<rest>" (escaped) into the
// unescaped name and the escaped "/<rest>", "/" when there is no rest.
func splitFunctionPath(prefix, escaped string) (name, rawPath string, ok bool) {
	rest, found := strings.CutPrefix(escaped, prefix)
	if !found {
		return "", "", false
	}
	rawName, tail, _ := strings.Cut(rest, "/")
	name, err := url.PathUnescape(rawName)
	if err != nil || name == "" {
		return rawName, "", false
	}
	return name, "/" + tail, true
}

// getCall serves GET /api/calls/<id>.
func (g *Gateway) getCall(c echo.Context) error {
	if g.opts.Queue == nil {
		return g.fail(c, fmt.Errorf("%w: %w", async.ErrCallNotFound, errAsyncDisabled))
	}
	r, err := g.opts.Queue.Result(c.Request().Context(), c.Param("id"))
	if err != nil {
		return g.fail(c, err)
	}
	infoOf(c).function = r.Function
	return c.JSON(http.StatusOK, r)
}

// queueList is GET /api/queue's answer.
type queueList struct {
	Functions []async.FunctionStats `json:"functions"`
}

// queueStats serves GET /api/queue: each function's queued and running
// asynchronous calls, retries and dead letters.
func (g *Gateway) queueStats(c echo.Context) error {
	list := []async.FunctionStats{}
	if g.opts.Queue != nil {
		list = append(list, g.opts.Queue.Stats(c.Request().Context())...)
	}
	return c.JSON(http.StatusOK, queueList{Functions: list})
}
