package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/faasvm/appliance/internal/async"
	"github.com/faasvm/appliance/internal/config"
	"github.com/faasvm/appliance/internal/controller"
)

// StatusClientClosedRequest is nginx's status for a client that went away
// before the answer; it only ever reaches logs and Release.
const StatusClientClosedRequest = 499

// Errors the gateway itself produces; describe maps them to statuses.
var (
	errClientGone    = errors.New("client went away")
	errInvokeTimeout = errors.New("function timed out")
	errUpstream      = errors.New("function instance unreachable")
	errBadRequest    = errors.New("bad request")
	errUnauthorized  = errors.New("missing or invalid API token")
)

// defaultRetryAfter is the Retry-After of a 503 that names none of its own
// (seconds).
const defaultRetryAfter = "2"

// errorBody is every error answer's JSON.
type errorBody struct {
	Error    string `json:"error"`
	Function string `json:"function,omitempty"`
}

// describe is the one place that maps an error to the HTTP status, the
// message the client sees and a Retry-After value ("" for none).
func describe(err error) (status int, message, retryAfter string) {
	var (
		httpErr  *echo.HTTPError
		tooLarge *http.MaxBytesError
	)
	switch {
	case errors.Is(err, errClientGone):
		return StatusClientClosedRequest, errClientGone.Error(), ""
	case errors.Is(err, controller.ErrNotFound):
		return http.StatusNotFound, err.Error(), ""
	case errors.Is(err, controller.ErrOverloaded):
		return http.StatusTooManyRequests, err.Error(), "1"
	case errors.Is(err, controller.ErrNotReady):
		return http.StatusServiceUnavailable, err.Error(), "2"
	case errors.Is(err, controller.ErrNoMemory):
		// The memory budget is used up by busy functions: a VM stopping
		// (scale-in, a deploy finishing) frees room within seconds.
		return http.StatusServiceUnavailable, err.Error(), "5"
	case errors.Is(err, controller.ErrUnavailable):
		// Failed or invalid: nothing changes sooner than a backoff or an
		// edit, but a client still learns when to look again.
		return http.StatusServiceUnavailable, err.Error(), "5"
	case errors.As(err, &tooLarge):
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than the %s limit", config.Size(tooLarge.Limit)), ""
	case errors.Is(err, errInvokeTimeout):
		return http.StatusGatewayTimeout, err.Error(), ""
	case errors.Is(err, errUpstream):
		// The dial error names host addresses: it goes to the log only.
		return http.StatusBadGateway, errUpstream.Error(), ""
	case errors.Is(err, errBadRequest):
		return http.StatusBadRequest, err.Error(), ""
	case errors.Is(err, errLogsDisabled):
		return http.StatusNotImplemented, err.Error(), ""
	case errors.Is(err, errUnauthorized):
		return http.StatusUnauthorized, err.Error(), ""
	case errors.Is(err, async.ErrCallNotFound):
		return http.StatusNotFound, err.Error(), ""
	case errors.Is(err, async.ErrCallbackRefused):
		return http.StatusBadRequest, err.Error(), ""
	case errors.Is(err, async.ErrQueueFull):
		return http.StatusTooManyRequests, err.Error(), "5"
	case errors.Is(err, async.ErrUnavailable):
		// The cause may name the NATS server's address: log only.
		return http.StatusServiceUnavailable, async.ErrUnavailable.Error(), "5"
	case errors.As(err, &httpErr):
		msg, ok := httpErr.Message.(string)
		if !ok {
			msg = http.StatusText(httpErr.Code)
		}
		return httpErr.Code, strings.ToLower(msg), ""
	default:
		return http.StatusInternalServerError, "internal error", ""
	}
}

// fail answers the request with err as JSON and records err for the access
// log. It writes nothing when the response has already started.
func (g *Gateway) fail(c echo.Context, err error) error {
	info := infoOf(c)
	info.err = err
	if c.Response().Committed {
		return nil
	}
	status, msg, retryAfter := describe(err)
	if retryAfter == "" && status == http.StatusServiceUnavailable {
		retryAfter = defaultRetryAfter // every 503 says when to retry
	}
	if retryAfter != "" {
		c.Response().Header().Set("Retry-After", retryAfter)
	}
	return c.JSON(status, errorBody{Error: msg, Function: info.function})
}
