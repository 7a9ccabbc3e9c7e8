package async

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
)

func TestAllowlistCheckURL(t *testing.T) {
	allow, err := ParseAllowlist("hooks.example.com, *.corp.example, 127.0.0.1 10.1.0.0/16,[::1]")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		url     string
		wantErr string // "" accepted
	}{
		{url: "https://hooks.example.com/x?y=1"},
		{url: "http://HOOKS.example.com:8443/"},
		{url: "http://hooks.example.com./"},
		{url: "https://a.corp.example/cb"},
		{url: "https://a.b.corp.example/cb"},
		{url: "http://127.0.0.1:9999/cb"},
		{url: "http://10.1.2.3/cb"},
		{url: "http://[::1]:80/cb"},
		{url: "https://corp.example/cb", wantErr: "not in callback_hosts"},
		{url: "https://evil.example.com/", wantErr: "not in callback_hosts"},
		{url: "https://hooks.example.com.evil.net/", wantErr: "not in callback_hosts"},
		{url: "http://169.254.169.254/latest/meta-data", wantErr: "not in callback_hosts"},
		{url: "http://127.0.0.2/", wantErr: "not in callback_hosts"},
		{url: "http://10.2.0.1/", wantErr: "not in callback_hosts"},
		{url: "ftp://hooks.example.com/", wantErr: "scheme"},
		{url: "file:///etc/passwd", wantErr: "not an absolute"},
		{url: "/relative", wantErr: "not an absolute"},
		{url: "http://user:pw@hooks.example.com/", wantErr: "credentials"},
		{url: "http://hooks.example.com:99999/", wantErr: "port"},
		{url: "http://[::1", wantErr: "not an absolute"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			_, err := allow.CheckURL(tt.url)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("got %v, want accepted", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrCallbackRefused)):
				t.Errorf("got %v, want ErrCallbackRefused mentioning %q", err, tt.wantErr)
			}
		})
	}
	empty, _ := ParseAllowlist("")
	if _, err := empty.CheckURL("https://hooks.example.com/"); err == nil || !strings.Contains(err.Error(), "callback_hosts is empty") {
		t.Errorf("empty allowlist: got %v, want a refusal naming callback_hosts", err)
	}
}

func TestParseAllowlistRejects(t *testing.T) {
	for _, bad := range []string{"exa mple..com", "-bad.com", "under_score.com", "*.", "http://x.com", "a/b"} {
		if _, err := ParseAllowlist(bad); err == nil {
			t.Errorf("ParseAllowlist(%q): got no error", bad)
		}
	}
}

func TestInternalAddresses(t *testing.T) {
	tests := []struct {
		ip   string
		want bool
	}{
		{"127.0.0.1", true}, {"127.9.9.9", true}, {"::1", true}, {"10.0.0.1", true}, {"172.16.0.1", true},
		{"192.168.1.1", true}, {"169.254.169.254", true}, {"fe80::1", true}, {"fd00::1", true},
		{"100.64.0.1", true}, {"0.0.0.0", true}, {"::", true}, {"224.0.0.1", true}, {"::ffff:127.0.0.1", true},
		{"93.184.216.34", false}, {"2606:4700::1", false}, {"8.8.8.8", false},
	}
	for _, tt := range tests {
		if got := internal(netip.MustParseAddr(tt.ip)); got != tt.want {
			t.Errorf("internal(%s): got %v, want %v", tt.ip, got, tt.want)
		}
	}
}

// callbackSink records the callbacks it gets.
type callbackSink struct {
	mu   sync.Mutex
	got  []*http.Request
	body []string
}

func (s *callbackSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.got = append(s.got, r)
	s.body = append(s.body, string(b))
	s.mu.Unlock()
}

func (s *callbackSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got)
}

func TestCallbacks(t *testing.T) {
	sink := &callbackSink{}
	srv := httptest.NewServer(sink) // 127.0.0.1
	t.Cleanup(srv.Close)

	t.Run("posted to an allowed address", func(t *testing.T) {
		fns := newFakeFunctions("echo", "always")
		opts := testOptions(t)
		opts.CallbackHosts, _ = ParseAllowlist("127.0.0.1")
		q := openQueue(t, opts)
		startQueue(t, q, newFakeGateway(fns), fns)
		id := enqueue(t, q, Call{Function: "echo", Body: []byte("answer me"), CallbackURL: srv.URL + "/hook?k=v"})
		r := waitResult(t, q, id, "done with its callback", func(r Result) bool { return r.State == StateDone && r.Callback != nil })
		if r.Callback.State != CallbackSent || r.Callback.StatusCode != 200 || r.Callback.Attempts != 1 {
			t.Errorf("callback: got %+v, want sent with 200 in one attempt", r.Callback)
		}
		dead := enqueue(t, q, Call{Function: "always", CallbackURL: srv.URL + "/hook"})
		waitResult(t, q, dead, "dead-lettered with its callback", func(r Result) bool { return r.State == StateDeadLettered && r.Callback != nil })

		sink.mu.Lock()
		defer sink.mu.Unlock()
		if len(sink.got) != 2 {
			t.Fatalf("callbacks: got %d, want 2", len(sink.got))
		}
		first := sink.got[0]
		checks := []struct{ what, got, want string }{
			{"method", first.Method, http.MethodPost},
			{"path", first.URL.Path + "?" + first.URL.RawQuery, "/hook?k=v"},
			{"body", sink.body[0], "answer me"},
			{"X-Call-Id", first.Header.Get("X-Call-Id"), id},
			{"X-Function-Name", first.Header.Get("X-Function-Name"), "echo"},
			{"X-Function-Status", first.Header.Get("X-Function-Status"), "200"},
			{"X-Call-State", first.Header.Get("X-Call-State"), StateDone},
			{"Content-Type", first.Header.Get("Content-Type"), "text/plain"},
			{"dead X-Call-State", sink.got[1].Header.Get("X-Call-State"), StateDeadLettered},
			{"dead X-Function-Status", sink.got[1].Header.Get("X-Function-Status"), "503"},
			{"dead X-Retry", sink.got[1].Header.Get("X-Retry"), "2"},
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("%s: got %q, want %q", c.what, c.got, c.want)
			}
		}
	})

	t.Run("a host name that resolves to loopback is refused at send time", func(t *testing.T) {
		before := sink.count()
		fns := newFakeFunctions("echo")
		opts := testOptions(t)
		opts.CallbackHosts, _ = ParseAllowlist("localhost")
		q := openQueue(t, opts)
		startQueue(t, q, newFakeGateway(fns), fns)
		id := enqueue(t, q, Call{Function: "echo", CallbackURL: strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)})
		r := waitResult(t, q, id, "done with its callback", func(r Result) bool { return r.State == StateDone && r.Callback != nil })
		if r.Callback.State != CallbackFailed || !strings.Contains(r.Callback.Error, "internal") || r.Callback.Attempts != 1 {
			t.Errorf("callback: got %+v, want failed once for an internal address", r.Callback)
		}
		if sink.count() != before {
			t.Errorf("the sink got a request through a refused callback")
		}
	})

	t.Run("the dial check", func(t *testing.T) {
		allow, _ := ParseAllowlist("hooks.example.com, 127.0.0.1")
		for addr, wantOK := range map[string]bool{
			"127.0.0.1:80": true, "127.0.0.2:80": false, "[::1]:80": false, "10.0.0.1:443": false,
			"169.254.169.254:80": false, "93.184.216.34:443": true,
		} {
			err := allow.dialControl("tcp", addr, nil)
			if (err == nil) != wantOK {
				t.Errorf("dial %s: got %v, want allowed=%v", addr, err, wantOK)
			}
		}
	})
}
