package gateway

import (
	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
)

// RequestIDHeader carries every request's id: the client's when it sent a
// sane one, else one the gateway makes. The function gets it as a header
// (Http_X_Request_Id in exec mode), the client gets it back, and the access
// log and the function's log lines carry it.
const RequestIDHeader = "X-Request-Id"

// maxRequestIDLen bounds a client's request id; a longer one is replaced.
const maxRequestIDLen = 128

// saneRequestID reports whether a client's request id can be kept as it is:
// 1 to maxRequestIDLen characters of letters, digits and - _ . : / + = @.
// Anything else (spaces, quotes, control characters, non-ASCII, a header
// sent twice) could forge log lines or break a shell script that prints it,
// so the gateway makes its own.
func saneRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-', c == '_', c == '.', c == ':', c == '/', c == '+', c == '=', c == '@':
		default:
			return false
		}
	}
	return true
}

// requestID gives every request exactly one X-Request-Id: the client's when
// it is sane and sent once, else a new UUID. It replaces the request's
// header (so the function sees the same id) and sets the response's.
func (g *Gateway) requestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		vals := req.Header.Values(RequestIDHeader)
		id := ""
		if len(vals) == 1 && saneRequestID(vals[0]) {
			id = vals[0]
		} else {
			id = uuid.NewString()
		}
		req.Header.Set(RequestIDHeader, id)
		c.Response().Header().Set(RequestIDHeader, id)
		infoOf(c).requestID = id
		return next(c)
	}
}
