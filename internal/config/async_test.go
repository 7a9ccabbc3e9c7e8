package config

import (
	"strings"
	"testing"
	"time"
)

func TestAsyncSettings(t *testing.T) {
	inEmptyDir(t)
	c, err := Load(nil, envOf(map[string]string{
		"FAAS_NATS_URL":            "nats://u:p@127.0.0.1:4222, tls://10.0.0.2:4222",
		"FAAS_ASYNC_MAX_RETRIES":   "0",
		"FAAS_ASYNC_RETRY_BACKOFF": "250ms",
		"FAAS_ASYNC_RESULT_TTL":    "1h",
		"FAAS_ASYNC_RESULT_BYTES":  "64KB",
		"FAAS_ASYNC_MAX_BYTES":     "2GB",
		"FAAS_CALLBACK_HOSTS":      "hooks.example.com, *.corp.example 127.0.0.1,10.0.0.0/8,[::1]",
	}))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := AsyncConfig{
		NATSURL: "nats://u:p@127.0.0.1:4222, tls://10.0.0.2:4222", AsyncMaxRetries: 0, AsyncRetryBackoff: 250 * time.Millisecond,
		AsyncResultTTL: time.Hour, AsyncResultBytes: 64 << 10, AsyncMaxBytes: 2 << 30,
		CallbackHosts: "hooks.example.com, *.corp.example 127.0.0.1,10.0.0.0/8,[::1]",
	}
	if c.AsyncConfig != want {
		t.Errorf("got %+v, want %+v", c.AsyncConfig, want)
	}
	for _, a := range c.LogValue().Group() {
		if a.Key == "nats_url" && strings.Contains(a.Value.String(), "u:p") {
			t.Errorf("LogValue shows nats_url's credentials: %s", a.Value)
		}
	}
}

func TestAsyncSettingsErrors(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{name: "url scheme", env: map[string]string{"FAAS_NATS_URL": "http://x:4222"},
			want: `FAAS_NATS_URL: value must use nats://, tls://, ws:// or wss://`},
		{name: "listen with an external server", env: map[string]string{"FAAS_NATS_URL": "nats://x:4222", "FAAS_NATS_LISTEN": "127.0.0.1:4222"},
			want: `FAAS_NATS_LISTEN: "127.0.0.1:4222" cannot be used with nats_url: it is the embedded server's address`},
		{name: "listen without port", env: map[string]string{"FAAS_NATS_LISTEN": "127.0.0.1"},
			want: `FAAS_NATS_LISTEN: "127.0.0.1" is not host:port (such as :8080 or 127.0.0.1:8080)`},
		{name: "negative retries", env: map[string]string{"FAAS_ASYNC_MAX_RETRIES": "-1"},
			want: `FAAS_ASYNC_MAX_RETRIES: "-1" must be from 0 to 100`},
		{name: "zero backoff", env: map[string]string{"FAAS_ASYNC_RETRY_BACKOFF": "0s"},
			want: `FAAS_ASYNC_RETRY_BACKOFF: "0s" must be a positive duration`},
		{name: "short ttl", env: map[string]string{"FAAS_ASYNC_RESULT_TTL": "10ms"},
			want: `FAAS_ASYNC_RESULT_TTL: "10ms" must be at least 1s`},
		{name: "result bytes too large", env: map[string]string{"FAAS_ASYNC_RESULT_BYTES": "2MB"},
			want: `FAAS_ASYNC_RESULT_BYTES: "2MB" must be above 0 and at most 1MB`},
		{name: "queue too small", env: map[string]string{"FAAS_ASYNC_MAX_BYTES": "1KB"},
			want: `FAAS_ASYNC_MAX_BYTES: "1KB" must be 0 (sized from the disk) or at least 1MB`},
		{name: "callback host with a scheme", env: map[string]string{"FAAS_CALLBACK_HOSTS": "ok.example.com,https://bad.example.com"},
			want: `FAAS_CALLBACK_HOSTS: "ok.example.com,https://bad.example.com" has "https://bad.example.com", which is not a host name, *.domain, IP address or CIDR prefix`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inEmptyDir(t)
			_, err := Load(nil, envOf(tt.env))
			if err == nil || err.Error() != tt.want {
				t.Errorf("got %v,\nwant %s", err, tt.want)
			}
		})
	}
}
