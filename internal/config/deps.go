package config

import (
	"net/url"
	"time"
)

// DepsConfig holds the settings of function dependency installs
// (requirements.txt, package.json; internal/image DepsDisk).
type DepsConfig struct {
	// PipIndexURL is pip's index ("": PyPI); file:// names a local index or
	// a folder of wheels. Passed to the install only.
	PipIndexURL string
	// NpmRegistry is npm's registry ("": registry.npmjs.org). Passed to the
	// install only.
	NpmRegistry string
	// DepsTimeout bounds one install.
	DepsTimeout time.Duration
	// BuildCABundle is the PEM bundle installs trust besides their image's
	// CAs ("none": only the image's).
	BuildCABundle string
}

// depsSettings are the rows of the dependency installs' settings.
func depsSettings() []setting {
	return []setting{
		{key: "pip_index_url", def: "", typ: "string", secret: true,
			help:  "pip index for requirements.txt installs: http(s):// or file:// (a PEP 503 index or a folder of wheels); empty: PyPI",
			field: func(c *Config) any { return &c.PipIndexURL }, check: checkIndexURL(func(c *Config) string { return c.PipIndexURL })},
		{key: "npm_registry", def: "", typ: "string", secret: true,
			help:  "npm registry for package.json installs, http(s)://; empty: registry.npmjs.org",
			field: func(c *Config) any { return &c.NpmRegistry }, check: checkIndexURL(func(c *Config) string { return c.NpmRegistry })},
		{key: "deps_timeout", def: "10m", typ: "duration", help: "longest one function's dependency install may take",
			field: func(c *Config) any { return &c.DepsTimeout }, check: func(c *Config) string {
				if c.DepsTimeout <= 0 {
					return "must be a positive duration"
				}
				return ""
			}},
		{key: "build_ca_bundle", def: "/etc/ssl/certs/ca-certificates.crt", typ: "string",
			help:  "CA bundle dependency installs trust besides their image's (for TLS-intercepting proxies); none: only the image's",
			field: func(c *Config) any { return &c.BuildCABundle }},
	}
}

// checkIndexURL refuses an index that is not an http, https or file URL.
func checkIndexURL(get func(c *Config) string) func(c *Config) string {
	return func(c *Config) string {
		v := get(c)
		if v == "" {
			return ""
		}
		u, err := url.Parse(v)
		if err != nil {
			return "not a URL: " + err.Error()
		}
		switch u.Scheme {
		case "http", "https":
			if u.Host == "" {
				return "needs a host"
			}
			return ""
		case "file":
			if u.Path == "" || u.Path[0] != '/' {
				return "a file:// URL needs an absolute path"
			}
			return ""
		}
		return "want an http://, https:// or file:// URL"
	}
}
