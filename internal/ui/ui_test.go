package ui_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/faasvm/appliance/internal/controller"
	"github.com/faasvm/appliance/internal/gateway"
	"github.com/faasvm/appliance/internal/ui"
)

// skeleton is every element id the page's script looks up.
var skeleton = []string{
	"health", "updated", "count", "error", "auth", "auth-form", "auth-msg", "token",
	"functions-table", "functions", "detail", "detail-name", "detail-invoke",
	"detail-info", "logs", "logs-refresh", "detail-close",
}

func get(t *testing.T, h http.Handler, method, target string) (*http.Response, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	res := rec.Result()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, string(body)
}

func TestHandler(t *testing.T) {
	h := ui.Handler()
	tests := []struct {
		name     string
		method   string
		target   string
		status   int
		location string // for redirects
		ctype    string // prefix
	}{
		{name: "page", method: http.MethodGet, target: "/ui/", status: http.StatusOK, ctype: "text/html"},
		{name: "page with query", method: http.MethodGet, target: "/ui/?x=1", status: http.StatusOK, ctype: "text/html"},
		{name: "head", method: http.MethodHead, target: "/ui/", status: http.StatusOK, ctype: "text/html"},
		{name: "bare redirects", method: http.MethodGet, target: "/ui", status: http.StatusMovedPermanently, location: "/ui/"},
		{name: "bare keeps query", method: http.MethodGet, target: "/ui?a=b", status: http.StatusMovedPermanently, location: "/ui/?a=b"},
		{name: "unknown file", method: http.MethodGet, target: "/ui/x", status: http.StatusNotFound, ctype: "application/json"},
		{name: "index.html", method: http.MethodGet, target: "/ui/index.html", status: http.StatusNotFound},
		{name: "nested", method: http.MethodGet, target: "/ui/a/b", status: http.StatusNotFound},
		{name: "double slash", method: http.MethodGet, target: "/ui//", status: http.StatusNotFound},
		{name: "prefix only", method: http.MethodGet, target: "/uix", status: http.StatusNotFound},
		{name: "post", method: http.MethodPost, target: "/ui/", status: http.StatusMethodNotAllowed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, body := get(t, h, tc.method, tc.target)
			if res.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (body %q)", res.StatusCode, tc.status, body)
			}
			if got := res.Header.Get("Location"); got != tc.location {
				t.Errorf("Location %q, want %q", got, tc.location)
			}
			if ct := res.Header.Get("Content-Type"); tc.ctype != "" && !strings.HasPrefix(ct, tc.ctype) {
				t.Errorf("Content-Type %q, want %s", ct, tc.ctype)
			}
			if tc.method == http.MethodHead && body != "" {
				t.Errorf("HEAD answered with a body of %d bytes", len(body))
			}
		})
	}
}

func TestPageSkeleton(t *testing.T) {
	res, body := get(t, ui.Handler(), http.MethodGet, "/ui/")
	for _, id := range skeleton {
		if !strings.Contains(body, `id="`+id+`"`) {
			t.Errorf("page has no element with id %q", id)
		}
	}
	for _, want := range []string{"../api/functions", "../api/queue", "/console?lines=200", "/logs?follow=1&format=json", `id="funclogs"`, "../healthz", "../invoke/", "sessionStorage", "Bearer ", ">async</th>"} {
		if !strings.Contains(body, want) {
			t.Errorf("page does not mention %q", want)
		}
	}
	headers := map[string]string{
		"X-Content-Type-Options": "nosniff",
		"Cache-Control":          "no-cache",
	}
	for k, v := range headers {
		if got := res.Header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if res.Header.Get("ETag") == "" {
		t.Error("no ETag")
	}
}

// The page is served offline and must not load anything from elsewhere.
func TestPageSelfContained(t *testing.T) {
	_, body := get(t, ui.Handler(), http.MethodGet, "/ui/")
	if m := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`).FindString(body); m != "" {
		t.Errorf("page refers to an external address: %q", m)
	}
	for _, bad := range []string{"<link", "src=", "@import", "url("} {
		if strings.Contains(body, bad) {
			t.Errorf("page loads something (%q)", bad)
		}
	}
}

// Data from the API must never be parsed as markup: the script builds nodes
// and sets textContent. Forbid the APIs that parse HTML outright.
func TestNoHTMLInjectionSinks(t *testing.T) {
	_, body := get(t, ui.Handler(), http.MethodGet, "/ui/")
	for _, sink := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "DOMParser", "createContextualFragment", "javascript:"} {
		if strings.Contains(body, sink) {
			t.Errorf("page uses %s", sink)
		}
	}
}

// The CSP allows exactly the page's own inline script and style, by hash.
func TestContentSecurityPolicy(t *testing.T) {
	res, body := get(t, ui.Handler(), http.MethodGet, "/ui/")
	csp := res.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	for _, dir := range []string{"script-src", "style-src"} {
		if !regexp.MustCompile(dir + ` 'sha256-[A-Za-z0-9+/=]{44}'`).MatchString(csp) {
			t.Errorf("CSP %q: %s is not one hash", csp, dir)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
		t.Errorf("CSP %q allows unsafe code", csp)
	}
	if strings.Count(body, "<script") != 1 || strings.Count(body, "<style") != 1 {
		t.Error("the page must have exactly one inline <script> and one <style>, the ones the CSP hashes")
	}
}

type noFunctions struct{}

func (noFunctions) Acquire(context.Context, string) (controller.Instance, error) {
	return controller.Instance{}, controller.ErrNotFound
}
func (noFunctions) List(context.Context) []controller.Status { return nil }
func (noFunctions) Get(context.Context, string) (controller.Status, error) {
	return controller.Status{}, controller.ErrNotFound
}
func (noFunctions) Logs(context.Context, string, int) (string, error) {
	return "", controller.ErrNotFound
}

// Mounted on the gateway as the appliance does it: one route serves the page
// and the redirect without the token; the data keeps it.
func TestMountedOnGateway(t *testing.T) {
	gw := gateway.New(gateway.Options{APIToken: "secret"}, noFunctions{}, nil)
	gw.Mount(ui.MountPattern, ui.Handler())
	h := gw.Handler()
	tests := []struct {
		target   string
		status   int
		location string
	}{
		{"/ui/", http.StatusOK, ""},
		{"/ui", http.StatusMovedPermanently, "/ui/"},
		{"/ui/x", http.StatusNotFound, ""},
		{"/uix", http.StatusNotFound, ""},
		{"/api/functions", http.StatusUnauthorized, ""},
		{"/healthz", http.StatusOK, ""},
	}
	for _, tc := range tests {
		t.Run(tc.target, func(t *testing.T) {
			res, body := get(t, h, http.MethodGet, tc.target)
			if res.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (body %q)", res.StatusCode, tc.status, body)
			}
			if got := res.Header.Get("Location"); got != tc.location {
				t.Errorf("Location %q, want %q", got, tc.location)
			}
		})
	}
}

// The upload blocks: the New function form posts one source file, the
// invoke form calls /invoke, and a narrow screen gets one card per function.
func TestPageUploadBlocks(t *testing.T) {
	_, body := get(t, ui.Handler(), http.MethodGet, "/ui/")
	for _, id := range []string{"new-fn", "new-form", "new-name", "new-runtime", "new-mode", "new-file", "new-code",
		"new-deploy", "new-status", "invoke-form", "invoke-method", "invoke-path", "invoke-body", "invoke-status",
		"invoke-headers", "invoke-answer", "charts", "svg-ns"} {
		if !strings.Contains(body, `id="`+id+`"`) {
			t.Errorf("page has no element with id %q", id)
		}
	}
	for _, want := range []string{`send("POST", CREATE`, "@media (max-width: 700px)", "data-label", " → ", `"/series"`, "createElementNS"} {
		if !strings.Contains(body, want) {
			t.Errorf("page does not contain %q", want)
		}
	}
}
