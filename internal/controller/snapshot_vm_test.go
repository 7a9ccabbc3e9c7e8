package controller_test

// A real VM (TCG here) booted by the controller, for the one race that
// needs the whole deploy: the folder swapped for a symlink while the
// version is being prepared.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/faasvm/appliance/internal/controller"
	"github.com/faasvm/appliance/internal/function"
	"github.com/faasvm/appliance/internal/image"
	"github.com/faasvm/appliance/internal/vm"
	"github.com/faasvm/appliance/internal/vm/qemu"
	"github.com/faasvm/appliance/internal/vmtest"
)

// listingHandler answers with every entry of the code folder as the guest
// sees it (lstat, links not followed), JSON, and with a secret file's
// content if one is readable at any of the given paths.
const listingHandler = `import hashlib, json, os, stat
out = []
for root, dirs, files in os.walk("/function"):
    for name in sorted(dirs + files):
        p = os.path.join(root, name)
        rel = os.path.relpath(p, "/function")
        if rel == "lost+found":
            continue  # the file system's own, not the function's
        st = os.lstat(p)
        e = {"rel": rel, "perm": stat.S_IMODE(st.st_mode)}
        if stat.S_ISLNK(st.st_mode):
            e["type"], e["target"] = "l", os.readlink(p)
        elif stat.S_ISDIR(st.st_mode):
            e["type"] = "d"
        else:
            e["type"] = "f"
            e["sha256"] = hashlib.sha256(open(p, "rb").read()).hexdigest()
        out.append(e)
    dirs[:] = [d for d in dirs if not (root == "/function" and d == "lost+found")]
secret = None
for p in ("/function/secret", "/function/../secret"):
    try:
        secret = open(p).read()
    except OSError:
        pass
print(json.dumps({"entries": out, "secret": secret}))
`

// swappingImages is the real disks, except that the first RootFS (the
// prepare step, before the code disk is made) first swaps the function's
// folder for a symlink to a folder holding a secret, as an author racing
// the deploy would.
type swappingImages struct {
	image.FunctionDisks
	folder, outside string
	once            sync.Once
	swapped         chan struct{}
	t               *testing.T
}

func (s *swappingImages) RootFS(ctx context.Context, runtime, ref string) (string, error) {
	s.once.Do(func() {
		if err := os.Rename(s.folder, s.folder+".orig"); err != nil {
			s.t.Errorf("swapping the folder: %v", err)
		}
		if err := os.Symlink(s.outside, s.folder); err != nil {
			s.t.Errorf("swapping the folder: %v", err)
		}
		close(s.swapped)
	})
	return s.FunctionDisks.RootFS(ctx, runtime, ref)
}

// TestFolderSwappedDuringDeploy: the folder is read once, into the
// version's snapshot, and the code disk is made from that snapshot: a
// folder swapped for a symlink to a folder holding a secret while the
// deploy prepares its disks gives the VM nothing from outside, and the
// version's digest is that of the bytes the VM boots. The next reconcile
// sees the symlink and refuses it, and the version keeps serving.
func TestFolderSwappedDuringDeploy(t *testing.T) {
	assets := vmtest.Load(t)
	functions := t.TempDir()
	folder := filepath.Join(functions, "racer")
	files := map[string]string{
		"handler.py":    listingHandler,
		"lib/data.txt":  "inside the folder\n",
		"run.sh":        "#!/bin/sh\necho hi\n",
		"alias.txt":     "", // a symlink, made below
		"function.yaml": "runtime: python3\ntimeout: 20s\n",
	}
	for rel, content := range files {
		p := filepath.Join(folder, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if rel == "alias.txt" {
			if err := os.Symlink("lib/data.txt", p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		mode := os.FileMode(0o644)
		if strings.HasSuffix(rel, ".sh") {
			mode = 0o700
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	outside := t.TempDir()
	for rel, content := range map[string]string{
		"secret":     "TOP SECRET from the host\n",
		"handler.py": "print(open('/function/secret').read())\n",
	} {
		if err := os.WriteFile(filepath.Join(outside, rel), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	state := vmtest.ShortDir(t)
	engine, err := qemu.New(qemu.Config{Accel: qemu.AccelTCG, StateDir: state, Logger: vmtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	imgs := &swappingImages{FunctionDisks: assets.Disks, folder: folder, outside: outside, swapped: make(chan struct{}), t: t}
	c := controller.New(controller.Options{
		FunctionsDir: functions, Kernel: assets.Kernel, Initrd: assets.Initrd, Template: vm.NewVM("template"),
		Defaults: function.Defaults{
			Timeout: 20 * time.Second, Memory: "256MB", MinReplicas: 1, MaxReplicas: 1, Concurrency: 4,
			IdleTimeout: time.Hour, TargetUtilization: 0.7, MaxSize: 1 << 20, SnapshotDir: t.TempDir(),
		},
		Logger: vmtest.Logger(t),
	}, engine, imgs)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		c.Close(ctx)
	})

	c.Sync("racer")
	st := waitFor(t, c, "racer", 3*time.Minute, func(s controller.Status) bool {
		return s.State == controller.StateReady || s.State == controller.StateFailed || s.State == controller.StateInvalid
	})
	select {
	case <-imgs.swapped:
	default:
		t.Fatal("the folder was never swapped: the prepare hook did not run")
	}
	if st.State != controller.StateReady {
		t.Fatalf("racer: got %s (%s), want it ready with the content read before the swap", st.State, st.LastError)
	}
	got := listing(t, c)
	if got.Secret != nil || strings.Contains(fmt.Sprint(got.Entries), "SECRET") {
		t.Fatalf("the VM reads outside content: %+v", got)
	}
	var rels []string
	for _, e := range got.Entries {
		rels = append(rels, e.Rel)
	}
	sort.Strings(rels)
	if want := []string{"alias.txt", "function.yaml", "handler.py", "lib", "lib/data.txt", "run.sh"}; strings.Join(rels, " ") != strings.Join(want, " ") {
		t.Errorf("the VM's code folder: got %v, want the folder as it was before the swap %v", rels, want)
	}
	if digest := guestDigest(got.Entries); !strings.HasPrefix(digest, st.Version) || st.Version == "" {
		t.Errorf("digest of what the VM boots: got %s, want the version %s", digest, st.Version)
	}

	// The next reconcile reads the folder again: a symlink now, refused;
	// the version keeps serving what it had.
	c.Sync("racer")
	st = waitFor(t, c, "racer", time.Minute, func(s controller.Status) bool { return s.LastError != "" })
	if st.State != controller.StateReady || !strings.Contains(st.LastError, "is a symlink") {
		t.Errorf("after a reconcile of the swapped folder: got %s %q, want ready and the symlink refused", st.State, st.LastError)
	}
	if again := listing(t, c); again.Secret != nil || len(again.Entries) != len(got.Entries) {
		t.Errorf("after the refused reconcile the VM serves %+v, want the first version", again)
	}
}

type guestEntry struct {
	Rel    string `json:"rel"`
	Type   string `json:"type"`
	Perm   int    `json:"perm"`
	SHA256 string `json:"sha256"`
	Target string `json:"target"`
}

type guestListing struct {
	Entries []guestEntry `json:"entries"`
	Secret  *string      `json:"secret"`
}

// guestDigest is function's digest (see snapshotTree) over what the guest
// lists.
func guestDigest(entries []guestEntry) string {
	sorted := append([]guestEntry(nil), entries...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Rel < sorted[j].Rel })
	h := sha256.New()
	for _, e := range sorted {
		fmt.Fprintf(h, "%s\x00%s%o\x00", e.Rel, e.Type, e.Perm)
		switch e.Type {
		case "f":
			io.WriteString(h, e.SHA256)
		case "l":
			fmt.Fprintf(h, "->%s", e.Target)
		}
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// listing invokes the function the way the gateway does and decodes its
// answer.
func listing(t *testing.T, c *controller.Controller) guestListing {
	t.Helper()
	code, b := invoke(t, c, "racer", http.MethodGet, "/", "", "")
	var l guestListing
	if code != http.StatusOK || json.Unmarshal([]byte(b), &l) != nil {
		t.Fatalf("invoking: got %d %q, want the listing", code, b)
	}
	return l
}

// waitFor polls the function's status until cond holds.
func waitFor(t *testing.T, c *controller.Controller, name string, bound time.Duration, cond func(controller.Status) bool) controller.Status {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		s, err := c.Get(context.Background(), name)
		if err == nil && cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: condition not met within %s; last %+v (%v)", name, bound, s, err)
		}
		time.Sleep(100 * time.Millisecond) // polling a status nothing signals to tests
	}
}
