package ignite

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	api "github.com/weaveworks/ignite/pkg/apis/ignite"
	"github.com/weaveworks/ignite/pkg/apis/ignite/scheme"
	meta "github.com/weaveworks/ignite/pkg/apis/meta/v1alpha1"

	"github.com/faasvm/appliance/guest/protocol"
	"github.com/faasvm/appliance/internal/vm"
)

// firecrackerVersion is the Firecracker of Ignite v0.10.0's sandbox image
// (its hack/FIRECRACKER_VERSION), which scripts/build-ignite.sh records.
const firecrackerVersion = "v0.22.4"

// envIgniteBin names the real ignite binary (v0.10.0) for the tests that
// run it. `make test` builds it with scripts/build-ignite.sh.
const envIgniteBin = "FAAS_IGNITE_BIN"

// realIgnite returns the real ignite binary, failing the test when the
// environment does not say where it is (skipping it only with -short, as
// `make unit` runs, like the other packages' tests of real assets).
func realIgnite(t *testing.T) string {
	t.Helper()
	bin := os.Getenv(envIgniteBin)
	if bin == "" && testing.Short() {
		t.Skipf("%s unset; `make test` builds ignite and sets it (make unit runs -short)", envIgniteBin)
	}
	if bin == "" {
		t.Fatalf("%s is not set: run `make test`, which builds ignite (scripts/build-ignite.sh .cache/bin) and exports it, "+
			"or build it yourself and set %s=/path/to/ignite", envIgniteBin, envIgniteBin)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s: %v (scripts/build-ignite.sh builds it)", envIgniteBin, err)
	}
	return bin
}

func TestRealIgniteVersion(t *testing.T) {
	bin := realIgnite(t)
	out, err := runner{}.run(t.Context(), 30*time.Second, bin, versionArgs())
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); got != SupportedVersion {
		t.Errorf("ignite version -o short: got %q, want %q", got, SupportedVersion)
	}
	// The long form names the Firecracker release the sandbox image ships.
	long, err := runner{}.run(t.Context(), 30*time.Second, bin, []string{"version"})
	if err != nil {
		t.Fatal(err)
	}
	if want := "Firecracker version: " + firecrackerVersion; !strings.Contains(string(long), want) {
		t.Errorf("ignite version: got %q, want it to say %q", long, want)
	}
	// Available's version check against the real binary (the rest of
	// Available needs a sandbox image and KVM).
	got, err := igniteVersion(t.Context(), Probe{}.withDefaults(), bin)
	if err != nil || got != SupportedVersion {
		t.Errorf("igniteVersion: got %q, %v; want %q", got, err, SupportedVersion)
	}
}

// privateIgnite writes a wrapper that runs the real ignite as the engine
// would, but in a mount namespace of its own where Ignite's state
// (/var/lib/firecracker) is the directory returned and /etc is an overlay
// whose changes land in the test's temp dir, so nothing on the host
// changes. DOCKER_HOST points at a socket nobody serves: whatever reaches
// for the container runtime fails at once, before any pull or network
// traffic.
func privateIgnite(t *testing.T, bin string) (wrapper, state string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("ignite refuses to run without root (make test runs as root)")
	}
	for _, p := range []string{"unshare", "mount"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("%s (util-linux) is needed to run ignite in a private mount namespace: %v", p, err)
		}
	}
	dir := t.TempDir()
	state = filepath.Join(dir, "firecracker")
	for _, d := range []string{state, filepath.Join(dir, "etc", "upper"), filepath.Join(dir, "etc", "work")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	inner := filepath.Join(dir, "inner.sh")
	innerScript := `set -e
mount -t tmpfs tmpfs /var/lib
mkdir /var/lib/firecracker
mount --bind '` + state + `' /var/lib/firecracker
mount -t overlay overlay -o 'lowerdir=/etc,upperdir=` + dir + `/etc/upper,workdir=` + dir + `/etc/work' /etc
export DOCKER_HOST='unix://` + dir + `/no-docker.sock'
exec '` + bin + `' "$@"
`
	if err := os.WriteFile(inner, []byte(innerScript), 0o755); err != nil {
		t.Fatal(err)
	}
	wrapper = filepath.Join(dir, "ignite")
	outer := "#!/bin/sh\nexec unshare --mount --propagation private sh '" + inner + "' \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(outer), 0o755); err != nil {
		t.Fatal(err)
	}
	return wrapper, state
}

// realEngine is an Engine whose ignite is the real one in a private
// namespace.
func realEngine(t *testing.T, wrapper string) (*Engine, *vm.Spec) {
	t.Helper()
	dir := t.TempDir()
	agent := filepath.Join(dir, "agent")
	if err := os.WriteFile(agent, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	code := filepath.Join(dir, "code.ext4")
	if err := os.WriteFile(code, []byte("ext4"), 0o444); err != nil {
		t.Fatal(err)
	}
	e, err := New(Config{
		IgnitePath: wrapper, AgentPath: agent, StateDir: filepath.Join(dir, "state"),
		BootTimeout: time.Minute, CommandTimeout: 30 * time.Second,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	v := helloVM(t)
	return e, &vm.Spec{
		VM: v, Code: code,
		Agent: protocol.Config{Name: "hello", Secret: "s3cret", ControlSecret: "c0ntrol", Mode: protocol.ModeExec, Command: []string{"cat"},
			Timeout: protocol.Duration(time.Second)},
	}
}

// helloVM is the VM the controller would hand the engine for a function
// "hello" with the default template (a fresh UID, the runtime image).
func helloVM(t *testing.T) *api.VM {
	t.Helper()
	v := loadTemplate(t, "config/func-handler.yml").DeepCopy()
	v.Name = "hello"
	v.UID = vm.NewVM("hello").UID
	setImage(t, v, "faasvm/runtime-python3:latest")
	return v
}

// TestRealIgniteReadsGeneratedConfig runs the engine's Start against the
// real ignite. Ignite v0.10 has no dry run, so the run goes as far as a
// host without the runtime and KVM allows: ignite decodes the generated
// config (strictly), applies it over its own defaults, validates the VM,
// and then fails looking for the image in the container runtime. An error
// about the image, with the name from our config, therefore means the
// config was read and accepted; a config ignite could not read fails
// earlier with a decoder error (the control case shows that).
func TestRealIgniteReadsGeneratedConfig(t *testing.T) {
	wrapper, _ := privateIgnite(t, realIgnite(t))
	e, spec := realEngine(t, wrapper)
	_, err := e.Start(t.Context(), spec)
	if err == nil {
		t.Fatal("Start succeeded against ignite without a container runtime")
	}
	t.Logf("Start against the real ignite: %v", err)
	for _, w := range []string{
		"step run", "ignite run: exit status 1",
		`docker image \"faasvm/runtime-python3-ignite:latest\" not found locally`,
		"Cannot connect to the Docker daemon",
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q\ndoes not mention %q", err, w)
		}
	}
	for _, bad := range []string{"decoder", "unknown field", "invalid", "undoing"} {
		if strings.Contains(err.Error(), bad) {
			t.Errorf("error %q mentions %q", err, bad)
		}
	}

	t.Run("control: a config ignite cannot read", func(t *testing.T) {
		uid := IgniteUID(string(spec.VM.UID))
		good, err := encodeVMConfig(mustBuild(t, e, spec))
		if err != nil {
			t.Fatal(err)
		}
		bad := filepath.Join(t.TempDir(), "bad.yaml")
		corrupt := strings.Replace(string(good), "  cpus: 1\n", "  cpus: 1\n  vcpus: 1\n", 1)
		if corrupt == string(good) {
			t.Fatal("could not corrupt the config")
		}
		if err := os.WriteFile(bad, []byte(corrupt), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err = e.run.run(t.Context(), time.Minute, e.ignite, runArgs(bad, "hello-"+uid, RuntimeDocker, NetworkCNI))
		if err == nil || !strings.Contains(err.Error(), "found unknown field: vcpus") {
			t.Errorf("got %v, want ignite's strict decoder to refuse the unknown field", err)
		}
		if err != nil && strings.Contains(err.Error(), "not found locally") {
			t.Errorf("error %q: ignite went on to the image with a config it should refuse", err)
		}
	})
}

func mustBuild(t *testing.T, e *Engine, spec *vm.Spec) *api.VM {
	t.Helper()
	image, err := ImageFor(spec.VM.Spec.Image.OCI.String())
	if err != nil {
		t.Fatal(err)
	}
	v, err := buildVM(vmInput{Spec: spec, Image: image, AgentPath: e.agent, Config: "/x/agent.json", Code: spec.Code,
		Owner: e.owner, Created: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestRealIgniteState runs every other command the engine uses (inspect,
// ps for the state and for Cleanup's list, logs, rm) against the real
// ignite, on VMs stored the way ignite stores them, and parses the real
// output with the engine's parsers.
func TestRealIgniteState(t *testing.T) {
	wrapper, state := privateIgnite(t, realIgnite(t))
	e, spec := realEngine(t, wrapper)
	ctx := t.Context()

	// Three VMs as `ignite create` from our config would have stored them:
	// two of this engine, one of somebody else.
	store := func(v *api.VM) {
		t.Helper()
		b, err := scheme.Serializer.EncodeJSON(v)
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(state, "vm", string(v.UID))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "metadata.json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ours := mustBuild(t, e, spec)
	ours.Status.Running = true
	ours.Status.Runtime = &api.Runtime{Name: "docker"}
	ours.Status.Network = &api.Network{Plugin: "cni", IPAddresses: meta.IPAddresses{net.ParseIP("10.61.0.9")}}
	store(ours)
	uid := string(ours.UID)

	second := ours.DeepCopy()
	second.UID, second.Name = "1111111111111111", "hello-1111111111111111"
	second.Status = api.VMStatus{}
	store(second)

	theirs := second.DeepCopy()
	theirs.UID, theirs.Name = "2222222222222222", "someone-else"
	theirs.SetLabel(LabelOwner, "another-appliance")
	store(theirs)

	out, err := e.run.run(ctx, time.Minute, e.ignite, inspectArgs(uid))
	if err != nil {
		t.Fatal(err)
	}
	info, err := parseInspect(out, uid)
	if err != nil {
		t.Fatalf("parsing real ignite inspect output: %v\n%s", err, out)
	}
	if info.IP.String() != "10.61.0.9" {
		t.Errorf("inspect: got %+v, want 10.61.0.9", info)
	}

	tests := []struct {
		uid  string
		want vmState
	}{
		{uid, stateRunning},
		{"1111111111111111", stateStopped},
		{"3333333333333333", stateGone},
	}
	for _, tt := range tests {
		got, err := e.status(ctx, tt.uid)
		if err != nil || got != tt.want {
			t.Errorf("status of %s: got %v, %v; want %v", tt.uid, got, err, tt.want)
		}
	}

	// logs reaches for the sandbox container: with no runtime it fails,
	// but it got past its arguments to the runtime.
	_, err = e.run.run(ctx, time.Minute, e.ignite, logsArgs(uid))
	if err == nil || !strings.Contains(err.Error(), "Cannot connect to the Docker daemon") {
		t.Errorf("ignite logs: got %v, want it to reach for the docker runtime", err)
	}

	// Cleanup removes this engine's VMs, stopped ones: mark ours stopped
	// (removing a running VM would need the runtime).
	ours.Status.Running = false
	store(ours)
	removed, err := e.Cleanup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"1111111111111111", uid}
	slices.Sort(removed)
	slices.Sort(want)
	if !slices.Equal(removed, want) {
		t.Errorf("Cleanup removed %q, want %q", removed, want)
	}
	for _, u := range []string{uid, "1111111111111111"} {
		if _, err := os.Stat(filepath.Join(state, "vm", u)); !os.IsNotExist(err) {
			t.Errorf("vm %s still stored after Cleanup: %v", u, err)
		}
	}
	if got, err := e.status(ctx, "2222222222222222"); err != nil || got != stateStopped {
		t.Errorf("the other appliance's vm: got %v, %v; want it left alone", got, err)
	}

	// A VM ignite does not know: inspect fails as not found, rm is a no-op.
	_, err = e.run.run(ctx, time.Minute, e.ignite, inspectArgs(uid))
	if !isNotFound(err) {
		t.Errorf("inspect of a removed vm: got %v, want ignite's not-found error", err)
	}
	if err := e.remove(ctx, uid); err != nil {
		t.Errorf("removing a removed vm: got %v, want nil", err)
	}
	var ce *CommandError
	if _, err := e.run.run(ctx, time.Minute, e.ignite, rmArgs(uid)); !errors.As(err, &ce) || ce.ExitCode != 1 {
		t.Errorf("ignite rm of a removed vm: got %v, want exit status 1", err)
	}
}
