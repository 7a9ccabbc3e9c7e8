package controller

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/faasvm/appliance/internal/image"
)

// recordingCollector keeps what each collection was told stays.
type recordingCollector struct {
	mu    sync.Mutex
	calls [][]string
}

func (r *recordingCollector) Collect(ctx context.Context, referenced []string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, slices.Clone(referenced))
	return nil
}

func (r *recordingCollector) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}

// countingImages names each code disk it makes afresh.
type countingImages struct {
	fakeImages
	mu sync.Mutex
	n  int
}

func (f *countingImages) CodeDisk(ctx context.Context, dir string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	return fmt.Sprintf("/cache/code/%d.ext4", f.n), nil
}

func TestReferencedKeepsServingAndPreviousVersions(t *testing.T) {
	for _, keep := range []int{0, 1, 2} {
		t.Run(fmt.Sprintf("keep %d", keep), func(t *testing.T) {
			e := &fakeEngine{}
			coll := &recordingCollector{}
			c, dir := newTestController(t, e, func(o *Options) {
				o.Collector, o.KeepVersions = coll, keep
				o.Kernel, o.Initrd = "/k/vmlinux", "/cache/initramfs/x.cpio"
				o.GCReferenced = func() []string { return []string{"/snapshots/fn/disk"} }
			})
			c.images = &countingImages{}
			var codes []string // each version's code disk, oldest first
			for v := range keep + 3 {
				writeFunction(t, dir, "fn", fmt.Sprintf("v%d\n", v))
				c.Sync("fn")
				want := fmt.Sprintf("/cache/code/%d.ext4", v+1)
				waitState(t, c, "fn", func(s Status) bool {
					c.mu.Lock()
					defer c.mu.Unlock()
					return c.fns["fn"].disks.code == want && s.State == StateReady && s.Replicas.Draining == 0
				})
				codes = append(codes, want)
			}
			if err := c.CollectGarbage(context.Background()); err != nil {
				t.Fatal(err)
			}
			refs := coll.calls[len(coll.calls)-1]
			for i, code := range codes {
				// The serving version and the keep versions before it stay.
				want := i >= len(codes)-1-keep
				if got := slices.Contains(refs, code); got != want {
					t.Errorf("version %d of %d (%s): referenced %v, want %v", i, len(codes), code, got, want)
				}
			}
			for _, p := range []string{"/k/vmlinux", "/cache/initramfs/x.cpio", "/snapshots/fn/disk", "/rootfs/python3"} {
				if !slices.Contains(refs, p) {
					t.Errorf("%s not referenced: %v", p, refs)
				}
			}
		})
	}
}

func TestCollectionRunsAfterDeploys(t *testing.T) {
	e := &fakeEngine{}
	coll := &recordingCollector{}
	c, dir := newTestController(t, e, func(o *Options) { o.Collector, o.KeepVersions = coll, 2 })
	writeFunction(t, dir, "fn", "v1\n")
	c.Sync("fn")
	waitState(t, c, "fn", func(s Status) bool { return s.State == StateReady })
	deadline := time.Now().Add(10 * time.Second)
	for coll.count() == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if coll.count() == 0 {
		t.Fatal("no collection after a deploy settled")
	}
}

func TestDrainingInstanceKeepsItsDisks(t *testing.T) {
	// With no previous version kept, an old version still draining keeps
	// its disks referenced until its VM stops.
	e := &fakeEngine{}
	coll := &recordingCollector{}
	c, dir := newTestController(t, e, func(o *Options) { o.Collector = coll })
	writeFunction(t, dir, "fn", "v1\n")
	c.Sync("fn")
	v1 := waitState(t, c, "fn", func(s Status) bool { return s.State == StateReady }).Version
	c.mu.Lock()
	code1 := c.fns["fn"].disks.code
	c.mu.Unlock()
	busy, err := acquire(t, c, "fn")
	if err != nil {
		t.Fatal(err)
	}
	writeFunction(t, dir, "fn", "v2\n")
	c.Sync("fn")
	waitState(t, c, "fn", func(s Status) bool { return s.Version != v1 && s.State == StateReady })
	if !slices.Contains(c.referenced(), code1) {
		t.Errorf("the draining v1's code disk %s is not referenced", code1)
	}
	busy.Release(200)
	waitState(t, c, "fn", func(s Status) bool { return s.Replicas.Draining == 0 })
	if slices.Contains(c.referenced(), code1) {
		t.Errorf("v1's code disk %s is still referenced after its VM stopped (keep 0)", code1)
	}
}

// fullImages fails code disks for want of space until fixed.
type fullImages struct {
	fakeImages
	mu   sync.Mutex
	full bool
}

func (f *fullImages) CodeDisk(ctx context.Context, dir string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.full {
		return "", fmt.Errorf("code disk: %w", image.ErrNoSpace)
	}
	return dir + ".ext4", nil
}

func TestTransientPrepareFailureIsRetried(t *testing.T) {
	e := &fakeEngine{}
	imgs := &fullImages{full: true}
	c, dir := newTestController(t, e, func(o *Options) { o.PrepareRetry = 20 * time.Millisecond })
	c.images = imgs
	writeFunction(t, dir, "fn", "v1\n")
	c.Sync("fn")
	s := waitState(t, c, "fn", func(s Status) bool { return s.State == StateFailed })
	if !strings.Contains(s.LastError, image.ErrNoSpace.Error()) {
		t.Errorf("status: got %q, want it to say %q", s.LastError, image.ErrNoSpace)
	}
	if !strings.Contains(s.LastError, "retrying in") {
		t.Errorf("status: got %q, want it to say when it retries", s.LastError)
	}
	imgs.mu.Lock()
	imgs.full = false
	imgs.mu.Unlock()
	waitState(t, c, "fn", func(s Status) bool { return s.State == StateReady })
}
