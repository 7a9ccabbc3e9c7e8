package controller

import (
	"context"
	"strings"
	"testing"
	"time"
)

// blockingImages hangs in RootFS like a hung docker build: until its
// context ends (honour) or until release is closed (a build that ignores
// its context).
type blockingImages struct {
	honour  bool
	release chan struct{}
	entered chan struct{}
}

func (b *blockingImages) RootFS(ctx context.Context, runtime, image string) (string, error) {
	b.entered <- struct{}{}
	if b.honour {
		<-ctx.Done()
		return "", context.Cause(ctx)
	}
	<-b.release
	return "/rootfs/" + runtime, nil
}

func (b *blockingImages) CodeDisk(ctx context.Context, dir string) (string, error) {
	return dir + ".ext4", nil
}

func TestPrepareTimeout(t *testing.T) {
	old := prepareAbandonWait
	prepareAbandonWait = 100 * time.Millisecond
	t.Cleanup(func() { prepareAbandonWait = old })
	for _, tt := range []struct {
		name   string
		honour bool
	}{
		{"build honours its context", true},
		{"build ignores its context", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := &fakeEngine{}
			imgs := &blockingImages{honour: tt.honour, release: make(chan struct{}), entered: make(chan struct{}, 4)}
			c, dir := newTestController(t, e, func(o *Options) { o.PrepareTimeout = 200 * time.Millisecond })
			c.images = imgs
			defer close(imgs.release)
			writeFunction(t, dir, "hung", "def handler(event, context):\n    return 'x'\n")
			begin := time.Now()
			c.Sync("hung")
			<-imgs.entered
			s := waitState(t, c, "hung", func(s Status) bool { return s.State == StateFailed })
			if took := time.Since(begin); took > 3*time.Second {
				t.Errorf("failed after %s, want about the 200ms deadline", took)
			}
			for _, want := range []string{"prepare timed out after 200ms", "docker build", "runtime python", "raise FAAS_PREPARE_TIMEOUT or fix the build"} {
				if !strings.Contains(s.LastError, want) {
					t.Errorf("lastError %q lacks %q", s.LastError, want)
				}
			}
			if n := len(e.running()); n != 0 {
				t.Errorf("%d VMs booted for a version that never prepared", n)
			}
			// The function is not stuck: a fixed build deploys on the next change.
			c.images = fakeImages{}
			writeFunction(t, dir, "hung", "def handler(event, context):\n    return 'y'\n")
			c.Sync("hung")
			waitState(t, c, "hung", func(s Status) bool { return s.State == StateReady })
		})
	}
}
