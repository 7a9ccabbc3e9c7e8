package export

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// apiServer is a real kube-apiserver (build/kubeapi: kube-apiserver v1.36
// on an embedded etcd) on a loopback port, with no controllers, scheduler
// or kubelet: enough to validate and dry-run objects for real.
type apiServer struct {
	base   string
	token  string
	client *http.Client
}

const apiToken = "faasvm-export-test-token"

func startAPIServer(t *testing.T) *apiServer {
	t.Helper()
	bin := toolBin(t, "FAAS_KUBEAPI_BIN", "kubeapi")
	dir := t.TempDir()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"sa.key":     pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
		"sa.pub":     pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}),
		"tokens.csv": []byte(apiToken + ",admin,admin,system:masters\n"),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(bin, "-data", filepath.Join(dir, "data"), "--",
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", port),
		"--cert-dir="+filepath.Join(dir, "certs"),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(dir, "sa.key"),
		"--token-auth-file="+filepath.Join(dir, "tokens.csv"),
		"--authorization-mode=RBAC", "--service-cluster-ip-range=10.0.0.0/24")
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("kube-apiserver log (tail):\n%s", tail(log.String(), 40))
		}
	})
	s := &apiServer{
		base: fmt.Sprintf("https://127.0.0.1:%d", port), token: apiToken,
		// Its serving certificate is self-signed, made at start in
		// --cert-dir; the connection never leaves loopback.
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}},
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		select {
		case err := <-exited:
			t.Fatalf("kube-apiserver exited: %v\n%s", err, tail(log.String(), 40))
		default:
		}
		if code, _ := s.do(t, "GET", "/readyz", "", nil); code == http.StatusOK {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("kube-apiserver not ready within 2m\n%s", tail(log.String(), 40))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	l := strings.Split(s, "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

func (s *apiServer) do(t *testing.T, method, path, contentType string, body []byte) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, s.base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// object is what addressing an object needs.
type object struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name      string `yaml:"name"`
		Namespace string `yaml:"namespace"`
	} `yaml:"metadata"`
}

// restPath is where a kind's objects live: an export's kinds and what the
// test installs.
type restPath struct {
	prefix, plural string
	namespaced     bool
}

func restPaths() map[string]restPath {
	return map[string]restPath{
		"serving.knative.dev/v1 Service":                   {"/apis/serving.knative.dev/v1", "services", true},
		"apps/v1 Deployment":                               {"/apis/apps/v1", "deployments", true},
		"v1 Service":                                       {"/api/v1", "services", true},
		"autoscaling/v2 HorizontalPodAutoscaler":           {"/apis/autoscaling/v2", "horizontalpodautoscalers", true},
		"v1 Namespace":                                     {"/api/v1", "namespaces", false},
		"apiextensions.k8s.io/v1 CustomResourceDefinition": {"/apis/apiextensions.k8s.io/v1", "customresourcedefinitions", false},
	}
}

// apply server-side applies one YAML document (dry run, or for real) with
// strict field validation and returns the status and body.
func (s *apiServer) apply(t *testing.T, doc []byte, dryRun bool) (int, string) {
	t.Helper()
	var o object
	if err := yaml.Unmarshal(doc, &o); err != nil {
		t.Fatalf("reading a document: %v", err)
	}
	r, ok := restPaths()[o.APIVersion+" "+o.Kind]
	if !ok {
		t.Fatalf("no REST path known for %s %s", o.APIVersion, o.Kind)
	}
	path := r.prefix
	if r.namespaced {
		ns := o.Metadata.Namespace
		if ns == "" {
			ns = "default"
		}
		path += "/namespaces/" + ns
	}
	path += "/" + r.plural + "/" + o.Metadata.Name + "?fieldManager=faasvm-export&fieldValidation=Strict&force=true"
	if dryRun {
		path += "&dryRun=All"
	}
	return s.do(t, "PATCH", path, "application/apply-patch+yaml", doc)
}

func documents(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range bytes.Split(b, []byte("\n---\n")) {
		if len(bytes.TrimSpace(d)) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}

// installKnativeCRDs applies Knative Serving's CRDs (copied by
// scripts/kube-tools.sh from the release kubecheck is built with) and waits
// until the API server serves them.
func (s *apiServer) installKnativeCRDs(t *testing.T) {
	t.Helper()
	dir := os.Getenv("FAAS_KNATIVE_CRDS")
	if dir == "" {
		dir = filepath.Join(repoRoot, ".cache", "knative-crds")
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if len(files) == 0 {
		t.Fatalf("no Knative CRDs in %s: run `bash scripts/kube-tools.sh .cache/bin` (make test does) or set FAAS_KNATIVE_CRDS", dir)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range documents(b) {
			if code, body := s.apply(t, doc, false); code != http.StatusOK && code != http.StatusCreated {
				t.Fatalf("installing %s: %d %s", filepath.Base(f), code, body)
			}
		}
	}
	deadline := time.Now().Add(time.Minute)
	for {
		code, body := s.do(t, "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/services.serving.knative.dev", "", nil)
		var crd struct {
			Status struct {
				Conditions []struct{ Type, Status string } `json:"conditions"`
			} `json:"status"`
		}
		if code == http.StatusOK && json.Unmarshal([]byte(body), &crd) == nil {
			for _, c := range crd.Status.Conditions {
				if c.Type == "Established" && c.Status == "True" {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("Knative's Service CRD not established within 1m: %d %s", code, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestDryRunApply applies every golden manifest to a real kube-apiserver
// with Knative Serving's CRDs installed, as a server-side dry run with
// strict field validation: the API server's own validation of Deployments,
// Services and HPAs, and the CRD's schema for the Knative Service.
func TestDryRunApply(t *testing.T) {
	s := startAPIServer(t)
	s.installKnativeCRDs(t)
	// The full example names a namespace; a dry run into a missing one fails.
	if code, body := s.apply(t, []byte("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n"), false); code != http.StatusOK && code != http.StatusCreated {
		t.Fatalf("creating namespace shop: %d %s", code, body)
	}
	for _, tc := range goldenCases() {
		b, err := os.ReadFile(goldenPath(tc.name))
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range documents(b) {
			t.Run(fmt.Sprintf("%s/%d", tc.name, i), func(t *testing.T) {
				code, body := s.apply(t, doc, true)
				if code != http.StatusOK && code != http.StatusCreated {
					t.Errorf("dry-run apply: %d %s", code, body)
				}
				if strings.Contains(body, `"warning"`) {
					t.Errorf("dry-run apply warned: %s", body)
				}
			})
		}
	}

	// The server refuses what it should, so that its acceptance means
	// something.
	golden, err := os.ReadFile(goldenPath("echo.knative"))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := os.ReadFile(goldenPath("echo.plain"))
	if err != nil {
		t.Fatal(err)
	}
	deployment := documents(plain)[0]
	refusals := []struct {
		name string
		doc  []byte
		want string
	}{
		{"unknown field in a Knative Service", bytes.Replace(golden, []byte("containerConcurrency:"), []byte("containerConcurency:"), 1), "containerConcurency: field not declared in schema"},
		{"containerConcurrency out of the CRD's type", bytes.Replace(golden, []byte("containerConcurrency: 8"), []byte("containerConcurrency: lots"), 1), "containerConcurrency"},
		{"a rollout that can never progress", bytes.Replace(deployment, []byte("maxSurge: 1"), []byte("maxSurge: 0"), 1), "may not be 0 when `maxSurge` is 0"},
		{"selector that misses the pods", bytes.Replace(deployment, []byte("    matchLabels:\n      app.kubernetes.io/name: echo"), []byte("    matchLabels:\n      app.kubernetes.io/name: other"), 1), "selector"},
		{"bad runtime class name", bytes.Replace(deployment, []byte("runtimeClassName: kata-fc"), []byte("runtimeClassName: Kata_FC"), 1), "runtimeClassName"},
	}
	for _, r := range refusals {
		t.Run("refuses "+r.name, func(t *testing.T) {
			if bytes.Equal(r.doc, golden) || bytes.Equal(r.doc, deployment) {
				t.Fatal("the test's edit did not change the manifest")
			}
			code, body := s.apply(t, r.doc, true)
			if code < 400 || !strings.Contains(body, r.want) {
				t.Errorf("got %d %s, want a refusal (4xx, or the 500 server-side apply gives a field a CRD does not declare) mentioning %q", code, body, r.want)
			}
		})
	}
}
