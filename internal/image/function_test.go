package image

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
)

func TestClassify(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name      string
		err       error
		want      error // nil: left as it is
		transient bool
	}{
		{"ENOSPC wrapped", fmt.Errorf("writing: %w", &os.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC}), ErrNoSpace, true},
		{"quota", syscall.EDQUOT, ErrNoSpace, true},
		{"mke2fs output", errors.New("mke2fs /x: exit status 1: Could not allocate block: No space left on device"), ErrNoSpace, true},
		{"engine away", errors.New("runtime bash: Cannot connect to the Docker daemon at unix:///x.sock. Is the docker daemon running?"), ErrEngineUnreachable, true},
		{"a build error", errors.New("Step 2/3 : RUN false: exit 1"), nil, false},
		{"nil", nil, nil, false},
	} {
		got := Classify(tc.err, dir)
		switch {
		case tc.want == nil && got != tc.err:
			t.Errorf("%s: got %v, want it unchanged", tc.name, got)
		case tc.want != nil && !errors.Is(got, tc.want):
			t.Errorf("%s: got %v, want it to wrap %v", tc.name, got, tc.want)
		case tc.want != nil && (!strings.Contains(got.Error(), "retried") || !errors.Is(got, tc.err)):
			t.Errorf("%s: got %q, want the cause kept and the retry said", tc.name, got)
		}
		if Transient(got) != tc.transient {
			t.Errorf("%s: Transient %v, want %v", tc.name, Transient(got), tc.transient)
		}
		if again := Classify(got, dir); tc.want != nil && again != got {
			t.Errorf("%s: classified twice: %v", tc.name, again)
		}
	}
	if got := Classify(syscall.ENOSPC, dir).Error(); !strings.Contains(got, "MiB free in "+dir) {
		t.Errorf("no free space figure: %q", got)
	}
}
