package gateway

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/faasvm/appliance/internal/controller"
)

// Bounds of ?lines=N on /api/functions/:name/logs and /console.
const (
	defaultLogLines = 200
	maxLogLines     = 5000
)

// functionList is GET /api/functions's answer.
type functionList struct {
	Functions []controller.Status `json:"functions"`
}

func (g *Gateway) listFunctions(c echo.Context) error {
	list := g.fns.List(c.Request().Context())
	if list == nil {
		list = []controller.Status{} // JSON [] rather than null
	}
	return c.JSON(http.StatusOK, functionList{Functions: list})
}

func (g *Gateway) getFunction(c echo.Context) error {
	name := functionParam(c)
	st, err := g.fns.Get(c.Request().Context(), name)
	if err != nil {
		return g.fail(c, err)
	}
	return c.JSON(http.StatusOK, st)
}

// functionConsole serves GET /api/functions/:name/console: the tail of the
// VM console (kernel, agent and handler output), its own view.
func (g *Gateway) functionConsole(c echo.Context) error {
	name := functionParam(c)
	lines := defaultLogLines
	if q := c.QueryParams(); q.Has("lines") {
		n, err := strconv.Atoi(q.Get("lines"))
		if err != nil || n < 1 || n > maxLogLines {
			return g.fail(c, fmt.Errorf("%w: lines must be a whole number from 1 to %d, got %q", errBadRequest, maxLogLines, q.Get("lines")))
		}
		lines = n
	}
	text, err := g.fns.Logs(c.Request().Context(), name, lines)
	if err != nil {
		return g.fail(c, err)
	}
	// Console output is the guest's: never let a browser read it as HTML.
	c.Response().Header().Set(echo.HeaderXContentTypeOptions, "nosniff")
	return c.String(http.StatusOK, text)
}

// functionParam is the :name path parameter, unescaped, also recorded for
// the access log.
func functionParam(c echo.Context) string {
	name := c.Param("name")
	if n, err := url.PathUnescape(name); err == nil {
		name = n
	}
	infoOf(c).function = name
	return name
}
