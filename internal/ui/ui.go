// Package ui is the operator dashboard: one self-contained page (HTML, CSS
// and vanilla JS embedded in the binary, nothing fetched from elsewhere, so
// it works offline) that polls the management API and shows every function.
//
// The page itself is public; the data it shows comes from /api/*, which
// keeps its bearer token: the page asks for the token when /api answers 401
// and keeps it in the tab's sessionStorage.
package ui

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"time"
)

//go:embed index.html
var page []byte

// Path is where the page lives; the appliance mounts Handler with the echo
// pattern MountPattern so that one route also covers the bare "/ui".
const (
	Path         = "/ui/"
	MountPattern = "/ui*"
)

var (
	etag = fmt.Sprintf(`"%x"`, sha256.Sum256(page))
	csp  = contentSecurityPolicy(page)
)

// contentSecurityPolicy allows the page's own inline script and style (by
// hash, so no other inline code could run), API calls to this origin, and
// nothing else.
func contentSecurityPolicy(html []byte) string {
	return strings.Join([]string{
		"default-src 'none'",
		"script-src " + inlineHash(html, "<script>", "</script>"),
		"style-src " + inlineHash(html, "<style>", "</style>"),
		"connect-src 'self'",
		"img-src 'self' data:",
		"base-uri 'none'",
		"form-action 'none'",
		"frame-ancestors 'none'",
	}, "; ")
}

// inlineHash is the CSP source for the one block between open and close;
// 'none' when there is none (the test makes sure there is).
func inlineHash(html []byte, open, close string) string {
	_, rest, ok := bytes.Cut(html, []byte(open))
	if !ok {
		return "'none'"
	}
	body, _, ok := bytes.Cut(rest, []byte(close))
	if !ok {
		return "'none'"
	}
	sum := sha256.Sum256(body)
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}

// Handler serves the dashboard at /ui/ and redirects /ui there. Any other
// path is a 404, any method but GET and HEAD a 405.
func Handler() http.Handler {
	return http.HandlerFunc(serve)
}

func serve(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case Path:
	case strings.TrimSuffix(Path, "/"):
		target := Path
		if r.URL.RawQuery != "" {
			target += "?" + r.URL.RawQuery
		}
		http.Redirect(w, r, target, http.StatusMovedPermanently)
		return
	default:
		jsonError(w, http.StatusNotFound, "not found")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		jsonError(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	// Revalidate every load, so an upgraded appliance serves its new page.
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", etag)
	http.ServeContent(w, r, "index.html", time.Time{}, bytes.NewReader(page))
}

// jsonError answers as the gateway's own errors do.
func jsonError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	fmt.Fprintf(w, "{\"error\":%q}\n", msg)
}
