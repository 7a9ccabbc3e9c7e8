package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/faasvm/appliance/internal/upload"
)

// Uploads is what the upload API needs from the uploads store
// (upload.Store).
type Uploads interface {
	// Put deploys an archive (.tar.gz or .zip) as function name.
	Put(ctx context.Context, name string, body io.Reader) (upload.Result, error)
	// Create deploys a function of one source file.
	Create(ctx context.Context, src upload.Source) (upload.Result, error)
	// Delete removes an uploaded function.
	Delete(name string) error
}

var _ Uploads = (*upload.Store)(nil)

// errUploadsOff: no store, because the operator did not turn uploads on.
var errUploadsOff = errors.New("uploads are off: set FAAS_API_TOKEN (uploads then need it) " +
	"or, on a trusted network only, FAAS_UPLOADS=on")

// maxSourceJSON bounds POST /api/functions's JSON beyond the code itself.
const maxSourceJSON = 64 << 10

// uploadAnswer is the upload API's success answer.
type uploadAnswer struct {
	upload.Result
	// Status is where the deploy's progress shows (GET it until ready).
	Status string `json:"status"`
}

// uploadError is the upload API's error answer: errorBody plus the refused
// archive entry, when one is to blame.
type uploadError struct {
	Error    string `json:"error"`
	Function string `json:"function,omitempty"`
	Entry    string `json:"entry,omitempty"`
}

func (g *Gateway) putFunction(c echo.Context) error {
	name := functionParam(c)
	if g.opts.Uploads == nil {
		return g.uploadFail(c, errUploadsOff)
	}
	res, err := g.opts.Uploads.Put(c.Request().Context(), name, c.Request().Body)
	if err != nil {
		return g.uploadFail(c, err)
	}
	return g.uploaded(c, res)
}

func (g *Gateway) createFunction(c echo.Context) error {
	if g.opts.Uploads == nil {
		return g.uploadFail(c, errUploadsOff)
	}
	var src upload.Source
	body := http.MaxBytesReader(c.Response(), c.Request().Body, g.opts.MaxUpload+maxSourceJSON)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&src); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return g.uploadFail(c, fmt.Errorf("%w: the body is larger than the function size limit", upload.ErrTooLarge))
		}
		return g.uploadFail(c, fmt.Errorf("%w: the body must be JSON {\"name\", \"runtime\", \"mode\", \"code\"}: %v", upload.ErrBadSource, err))
	}
	infoOf(c).function = src.Name
	res, err := g.opts.Uploads.Create(c.Request().Context(), src)
	if err != nil {
		return g.uploadFail(c, err)
	}
	return g.uploaded(c, res)
}

func (g *Gateway) deleteFunction(c echo.Context) error {
	name := functionParam(c)
	if g.opts.Uploads == nil {
		return g.uploadFail(c, errUploadsOff)
	}
	if err := g.opts.Uploads.Delete(name); err != nil {
		return g.uploadFail(c, err)
	}
	return c.NoContent(http.StatusNoContent)
}

// uploaded answers 201 for a new function, 200 for a replaced one; either
// way the deploy runs on (see Status).
func (g *Gateway) uploaded(c echo.Context, res upload.Result) error {
	status := "/api/functions/" + res.Name
	c.Response().Header().Set(echo.HeaderLocation, status)
	code := http.StatusOK
	if res.Created {
		code = http.StatusCreated
	}
	return c.JSON(code, uploadAnswer{Result: res, Status: status})
}

// uploadFail maps the upload store's errors to statuses; others go to fail.
func (g *Gateway) uploadFail(c echo.Context, err error) error {
	info := infoOf(c)
	var entry *upload.EntryError
	status := 0
	switch {
	case errors.Is(err, errUploadsOff):
		status = http.StatusForbidden
	case errors.As(err, &entry):
		status = http.StatusBadRequest
		if entry.TooLarge {
			status = http.StatusRequestEntityTooLarge
		}
	case errors.Is(err, upload.ErrTooLarge):
		status = http.StatusRequestEntityTooLarge
	case errors.Is(err, upload.ErrBadName), errors.Is(err, upload.ErrBadSource),
		errors.Is(err, upload.ErrFormat):
		status = http.StatusBadRequest
	case errors.Is(err, upload.ErrConflict):
		status = http.StatusConflict
	case errors.Is(err, upload.ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, upload.ErrInvalid):
		status = http.StatusUnprocessableEntity
	case errors.Is(err, context.Canceled):
		return g.fail(c, errClientGone)
	default:
		return g.fail(c, err)
	}
	info.err = err
	body := uploadError{Error: err.Error(), Function: info.function}
	if entry != nil {
		body.Entry = entry.Entry
	}
	return c.JSON(status, body)
}
