package main_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/faasvm/appliance/internal/controller"
)

// rawInvoke sends one request to the gateway with the request line exactly
// as given (no client library cleans or escapes the path) and returns the
// status and body.
func rawInvoke(t *testing.T, a *appliance, method, target string, headers map[string]string) (int, string) {
	t.Helper()
	u, err := url.Parse(a.base)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nContent-Length: 0\r\n", method, target, u.Host)
	for k, v := range headers {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestIsolation runs the appliance with its default policy (and egress
// off) and checks, with real VMs, that no request through /invoke reaches
// the guest's control operations, whatever its path, escaping, method or
// headers: the function answers all of them itself and its VM stays up;
// and that folders outside the operator's policy are invalid, with the
// reason, while the others keep serving.
func TestIsolation(t *testing.T) {
	a := startAppliance(t)
	// The function prints what it was asked; its folder also carries a VM
	// config naming a sandbox and a kernel image, which must not be used.
	dir := filepath.Join(a.functions, "guarded")
	writeFile(t, filepath.Join(dir, "handler.sh"),
		`echo "fn method=$Http_Method path=$Http_Path secret=${Http_X_Faas_Secret:-none} control=${Http_X_Faas_Control:-none}"`+"\n")
	writeFile(t, filepath.Join(dir, "vm.yaml"), "apiVersion: ignite.weave.works/v1alpha4\nkind: VM\nspec:\n"+
		"  sandbox: {oci: \"attacker/sandbox:latest\"}\n  kernel: {oci: \"attacker/kernel:latest\"}\n")
	a.waitFor(t, "/invoke/guarded", 120*time.Second, is200)
	before := a.status(t, "guarded")

	t.Run("control operations are unreachable through /invoke", func(t *testing.T) {
		paths := []string{
			"/_/poweroff", "/_/health", "/%5F/poweroff", "/%5f/health", "/_%2Fpoweroff", "/_%2fhealth",
			"/x/../_/poweroff", "/x/%2E%2E/_/poweroff", "//_/poweroff", "/_//poweroff", "/_/poweroff/",
			"/poweroff", "/health", "/_/poweroff?x=1",
		}
		forged := []map[string]string{
			nil,
			{"X-Faas-Secret": "forged", "X-Faas-Control": "forged"},
			{"X-Faas-Control": before.VMID},
			{"Connection": "X-Faas-Secret", "X-Faas-Secret": "forged"},
		}
		for _, p := range paths {
			for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
				for i, hdr := range forged {
					target := "/invoke/guarded" + p
					code, body := rawInvoke(t, a, method, target, hdr)
					path, _, _ := strings.Cut(p, "?")
					want, err := url.PathUnescape(path)
					if err != nil {
						t.Fatal(err)
					}
					wantBody := fmt.Sprintf("fn method=%s path=%s secret=none control=none", method, want)
					if code != http.StatusOK || strings.TrimSpace(body) != wantBody {
						t.Errorf("%s %s (headers #%d): got %d %q, want the function's own answer %q", method, target, i, code, body, wantBody)
					}
				}
			}
		}
		after := a.status(t, "guarded")
		if after.VMID != before.VMID || after.State != controller.StateReady || after.Replicas.Ready != 1 || after.LastError != "" {
			t.Errorf("after the requests: got vm %s state %s ready %d error %q, want the same VM %s still up",
				after.VMID, after.State, after.Replicas.Ready, after.LastError, before.VMID)
		}
		if code, body := a.get(t, "/invoke/guarded/after"); code != 200 || !strings.Contains(body, "path=/after") {
			t.Errorf("a request afterwards: got %d %q, want the function", code, body)
		}
	})

	t.Run("a folder's VM config chooses no host image", func(t *testing.T) {
		var warned []string
		for _, w := range before.Warnings {
			if strings.Contains(w, "is never taken from a function folder") {
				warned = append(warned, w)
			}
		}
		if len(warned) != 2 {
			t.Errorf("warnings: got %q, want the sandbox and kernel images reported as not used", before.Warnings)
		}
	})

	t.Run("folders outside the policy are invalid, others unaffected", func(t *testing.T) {
		tests := []struct {
			name, manifest, wantErr string
		}{
			{"other-image", "image: busybox:latest\n", `image "busybox:latest" is not allowed: functions run only the shipped runtimes`},
			{"big-memory", "memory: 64GB\n", "memory 64.0 GB (from function.yaml) is over the limit of 2.0 GB (policy.max_memory)"},
			{"many-cpus", "cpus: 64\n", "cpus 64 (from function.yaml) is over the limit of 4 (policy.max_cpus)"},
			{"many-replicas", "maxReplicas: 1000\n", "maxReplicas 1000 is over the limit of 10 (policy.max_replicas)"},
			{"wide", "concurrency: 1000000\n", "concurrency 1000000 is over the limit of 1000 (policy.max_concurrency)"},
			{"slow", "timeout: 48h\n", "timeout 48h0m0s is over the limit of 15m0s (policy.max_timeout)"},
			{"wants-egress", "egress: true\n", "egress: true is not allowed: the operator keeps functions off the network"},
		}
		for _, tt := range tests {
			writeFile(t, filepath.Join(a.functions, tt.name, "handler.sh"), "echo hi\n")
			writeFile(t, filepath.Join(a.functions, tt.name, "function.yaml"), tt.manifest)
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				a.waitFor(t, "/api/functions/"+tt.name, 60*time.Second, func(code int, body string) bool {
					return code == 200 && strings.Contains(body, `"state":"invalid"`)
				})
				s := a.status(t, tt.name)
				if !strings.Contains(s.LastError, tt.wantErr) {
					t.Errorf("lastError: got %q, want it to contain %q", s.LastError, tt.wantErr)
				}
				if code, _ := a.get(t, "/invoke/"+tt.name); code != http.StatusServiceUnavailable {
					t.Errorf("invoke: got %d, want 503", code)
				}
			})
		}
		if code, body := a.get(t, "/invoke/guarded"); code != 200 || !strings.Contains(body, "fn method=GET") {
			t.Errorf("guarded after the invalid folders: got %d %q, want it still answering", code, body)
		}
	})
}
