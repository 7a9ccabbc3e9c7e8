package main

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/faasvm/appliance/guest/protocol"
)

func TestWaitForDepsDisk(t *testing.T) {
	withDeps, err := protocol.EncodeDisk(&protocol.Config{
		Name: "fn", Secret: "s", ControlSecret: "c", Mode: protocol.ModeExec, Command: []string{"true"},
		Timeout: protocol.Duration(time.Second), Deps: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	root, code := superblock(ext4Magic, protocol.RootFSLabel), superblock(ext4Magic, protocol.CodeLabel)
	tests := []struct {
		name     string
		disks    map[string][]byte
		wantDeps string
		wantErr  string
	}{
		{name: "attached and found", disks: map[string][]byte{"vda": root, "vdb": code, "vdc": withDeps, "vdd": superblock(ext4Magic, protocol.DepsLabel)}, wantDeps: "vdd"},
		{name: "announced but missing", disks: map[string][]byte{"vda": root, "vdb": code, "vdc": withDeps}, wantErr: "missing dependencies (ext4 label faas-deps)"},
		{name: "not announced: not waited for", disks: map[string][]byte{"vda": root, "vdb": code, "vdc": configDisk(t)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sysBlock, devDir := fakeDisks(t, tt.disks)
			ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
			defer cancel()
			got, err := waitForDisks(ctx, sysBlock, devDir, time.Millisecond)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := ""
			if tt.wantDeps != "" {
				want = filepath.Join(devDir, tt.wantDeps)
			}
			if got.deps != want {
				t.Errorf("deps disk: got %q, want %q", got.deps, want)
			}
		})
	}
}

func TestWithDepsEnv(t *testing.T) {
	got := withDepsEnv([]string{"PATH=/bin", "PYTHONPATH=/mine"}, true)
	for _, want := range []string{"PATH=/bin", "PYTHONPATH=" + protocol.DepsPython + ":/mine", "NODE_PATH=" + protocol.DepsNode} {
		if !slices.Contains(got, want) {
			t.Errorf("got %v, want it to hold %s", got, want)
		}
	}
	if got := withDepsEnv([]string{"PATH=/bin"}, false); len(got) != 1 {
		t.Errorf("without a deps disk: got %v, want the environment unchanged", got)
	}
}
