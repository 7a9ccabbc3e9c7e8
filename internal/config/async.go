package config

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"
)

// AsyncConfig holds the settings of asynchronous calls (internal/async).
type AsyncConfig struct {
	// NATSURL names an external NATS server or cluster; "" embeds one.
	NATSURL string
	// NATSListen is the embedded server's client address; "" listens on
	// no port.
	NATSListen string
	// AsyncMaxRetries is how often a failed call is tried again.
	AsyncMaxRetries int
	// AsyncRetryBackoff is the delay before the first retry; it doubles.
	AsyncRetryBackoff time.Duration
	// AsyncResultTTL is how long results and dead letters are kept.
	AsyncResultTTL time.Duration
	// AsyncResultBytes is how much of an answer a result keeps.
	AsyncResultBytes Size
	// AsyncMaxBytes bounds the queued calls (and the results, and the
	// dead letters) in bytes; 0 sizes it from the state disk (see
	// async.Options.MaxBytes).
	AsyncMaxBytes Size
	// CallbackHosts is the X-Callback-Url allowlist, comma-separated.
	CallbackHosts string
}

// asyncSettings are the rows of the asynchronous calls' settings.
func asyncSettings() []setting {
	positive := func(f func(c *Config) time.Duration) func(c *Config) string {
		return func(c *Config) string {
			if f(c) <= 0 {
				return "must be a positive duration"
			}
			return ""
		}
	}
	return []setting{
		{key: "nats_url", def: "", typ: "string", secret: true,
			help:  "external NATS server or cluster for asynchronous calls, e.g. nats://user:pw@host:4222 (empty: embedded)",
			field: func(c *Config) any { return &c.NATSURL }, check: checkNATSURL},
		{key: "nats_listen", def: "", typ: "string",
			help:  "client address of the embedded NATS server, e.g. 127.0.0.1:4222 (empty: no port)",
			field: func(c *Config) any { return &c.NATSListen }, check: checkNATSListen},
		{key: "async_max_retries", def: "3", typ: "int", help: "retries of an asynchronous call after its first attempt fails (429, 502, 503, 504, no answer)",
			field: func(c *Config) any { return &c.AsyncMaxRetries }, check: func(c *Config) string {
				if c.AsyncMaxRetries < 0 || c.AsyncMaxRetries > 100 {
					return "must be from 0 to 100"
				}
				return ""
			}},
		{key: "async_retry_backoff", def: "1s", typ: "duration", help: "delay before the first retry; it doubles with each retry, up to 10m",
			field: func(c *Config) any { return &c.AsyncRetryBackoff }, check: positive(func(c *Config) time.Duration { return c.AsyncRetryBackoff })},
		{key: "async_result_ttl", def: "24h", typ: "duration", help: "how long results (GET /api/calls/<id>) and dead letters are kept",
			field: func(c *Config) any { return &c.AsyncResultTTL }, check: func(c *Config) string {
				if c.AsyncResultTTL < time.Second {
					return "must be at least 1s"
				}
				return ""
			}},
		{key: "async_result_bytes", def: "4KB", typ: "size", help: "how much of an answer a result keeps (at most 1MB)",
			field: func(c *Config) any { return &c.AsyncResultBytes }, check: func(c *Config) string {
				if c.AsyncResultBytes <= 0 || c.AsyncResultBytes > MiB {
					return "must be above 0 and at most 1MB"
				}
				return ""
			}},
		{key: "async_max_bytes", def: "0", typ: "size", help: "total size of queued asynchronous calls (429 beyond); also bounds results and dead letters; 0: 1GB, or an eighth of the state disk's free space when less",
			field: func(c *Config) any { return &c.AsyncMaxBytes }, check: func(c *Config) string {
				if c.AsyncMaxBytes != 0 && c.AsyncMaxBytes < MiB {
					return "must be 0 (sized from the disk) or at least 1MB"
				}
				return ""
			}},
		{key: "callback_hosts", def: "", typ: "string",
			help:  "hosts X-Callback-Url may name: names, *.domain, IPs, CIDRs, comma-separated (empty: none)",
			field: func(c *Config) any { return &c.CallbackHosts }, check: checkCallbackHosts},
	}
}

func checkNATSURL(c *Config) string {
	for _, u := range strings.Split(c.NATSURL, ",") {
		if c.NATSURL == "" {
			break
		}
		u = strings.TrimSpace(u)
		scheme, rest, ok := strings.Cut(u, "://")
		switch {
		case u == "" || strings.ContainsAny(u, " \t\r\n"):
			return "is not a comma-separated list of URLs"
		case ok && scheme != "nats" && scheme != "tls" && scheme != "ws" && scheme != "wss":
			return "must use nats://, tls://, ws:// or wss://"
		case ok && rest == "":
			return "names no host"
		}
	}
	return ""
}

// checkNATSListen runs after nats_url is parsed (the table's order).
func checkNATSListen(c *Config) string {
	switch {
	case c.NATSListen == "":
		return ""
	case c.NATSURL != "":
		return "cannot be used with nats_url: it is the embedded server's address"
	}
	return checkListen(&Config{Listen: c.NATSListen})
}

var hostNameRE = regexp.MustCompile(`^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// checkCallbackHosts accepts what async.ParseAllowlist reads.
func checkCallbackHosts(c *Config) string {
	for _, e := range strings.FieldsFunc(c.CallbackHosts, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' }) {
		e = strings.ToLower(e)
		if _, err := netip.ParsePrefix(e); err == nil {
			continue
		}
		if _, err := netip.ParseAddr(strings.Trim(e, "[]")); err == nil {
			continue
		}
		if !hostNameRE.MatchString(e) || len(e) > 253 {
			return fmt.Sprintf("has %q, which is not a host name, *.domain, IP address or CIDR prefix", e)
		}
	}
	return ""
}
