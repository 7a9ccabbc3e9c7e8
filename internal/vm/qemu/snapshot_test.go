package qemu

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeSnapshot lays out a snapshot in a new dir as Snapshot would, with
// the manifest changed by modify, and returns the dir.
func writeSnapshot(t *testing.T, e *Engine, modify func(m *manifest, dir string)) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "snap")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	man := &manifest{
		Format: snapFormat, Key: "k1", QEMUVersion: e.qemuVersion(), Created: time.Now().UTC(),
		Accel: AccelTCG, MemoryMiB: 1, CPUs: 1, MAC: "02:00:00:00:00:01", ControlSecret: "c",
		MemFile: "mem-1.img", StateFile: "state-1.bin", MemBytes: 1 << 20,
	}
	mem, err := createMemFile(filepath.Join(dir, man.MemFile), 1<<20, 0)
	if err != nil {
		t.Fatal(err)
	}
	mem.Close()
	if err := os.WriteFile(filepath.Join(dir, man.StateFile), []byte("QEVM device state"), 0o600); err != nil {
		t.Fatal(err)
	}
	if man.StateBytes, man.StateSHA256, err = hashFile(filepath.Join(dir, man.StateFile)); err != nil {
		t.Fatal(err)
	}
	if modify != nil {
		modify(man, dir)
	}
	js, _ := json.Marshal(man)
	if err := writeFileAtomic(filepath.Join(dir, snapManifestName), js); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestOpenChecksSnapshot(t *testing.T) {
	e, _ := testEngine(t, Config{})
	tests := []struct {
		name    string
		key     string
		modify  func(m *manifest, dir string)
		wantErr string // "" for none
	}{
		{name: "whole", key: "k1"},
		{name: "another key", key: "k2", wantErr: `made for key "k1", not "k2"`},
		{name: "another format", key: "k1", modify: func(m *manifest, _ string) { m.Format = 99 },
			wantErr: "format 99"},
		{name: "another qemu", key: "k1", modify: func(m *manifest, _ string) { m.QEMUVersion = "QEMU emulator version 1.0" },
			wantErr: `made by "QEMU emulator version 1.0"`},
		{name: "file outside the dir", key: "k1", modify: func(m *manifest, _ string) { m.StateFile = "../state-1.bin" },
			wantErr: "outside the snapshot dir"},
		{name: "no control secret", key: "k1", modify: func(m *manifest, _ string) { m.ControlSecret = "" },
			wantErr: "incomplete"},
		{name: "RAM file missing", key: "k1", modify: func(m *manifest, dir string) { os.Remove(filepath.Join(dir, m.MemFile)) },
			wantErr: "RAM file"},
		{name: "RAM file truncated", key: "k1", modify: func(m *manifest, dir string) { os.Truncate(filepath.Join(dir, m.MemFile), 4096) },
			wantErr: "RAM file is 4096 bytes"},
		{name: "state file truncated", key: "k1", modify: func(m *manifest, dir string) { os.Truncate(filepath.Join(dir, m.StateFile), 3) },
			wantErr: "state file changed"},
		{name: "state file corrupted", key: "k1", modify: func(m *manifest, dir string) {
			os.WriteFile(filepath.Join(dir, m.StateFile), []byte("QEVM device stat3"), 0o600)
		}, wantErr: "state file changed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeSnapshot(t, e, tt.modify)
			snap, err := e.Open(dir, tt.key)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Open: %v", err)
			case tt.wantErr == "":
				if snap.Key != "k1" || snap.Dir != dir || snap.Size <= 0 || snap.Created.IsZero() {
					t.Errorf("Open: got %+v", snap)
				}
			case err == nil || !strings.Contains(err.Error(), tt.wantErr):
				t.Errorf("Open: got %v, want an error containing %q", err, tt.wantErr)
			case !strings.Contains(err.Error(), "make a new"):
				t.Errorf("Open: %v does not say what to do", err)
			}
		})
	}
	t.Run("damaged manifest", func(t *testing.T) {
		for name, content := range map[string]string{"not json": "{", "too large": strings.Repeat(" ", maxManifestBytes+1)} {
			dir := writeSnapshot(t, e, nil)
			os.WriteFile(filepath.Join(dir, snapManifestName), []byte(content), 0o600)
			if _, err := e.Open(dir, "k1"); err == nil || !strings.Contains(err.Error(), "make a new snapshot") {
				t.Errorf("%s: got %v, want a refusal", name, err)
			}
		}
	})
}

func TestSnapshotGroups(t *testing.T) {
	e, _ := testEngine(t, Config{UIDBase: DefaultUIDBase})
	first, last := e.snapshotGroupRange()
	if first != DefaultUIDBase+2*DefaultUIDCount {
		t.Errorf("first snapshot group %d, want %d", first, DefaultUIDBase+2*DefaultUIDCount)
	}
	if _, egr, _ := e.cfg.UIDPools(); first != egr.Last+1 || last-first+1 != uint32(2*e.cfg.UIDCount) {
		t.Fatalf("range %d-%d, want right after the egress pool (%d), 2 x %d long", first, last, egr.Last, e.cfg.UIDCount)
	}
	base := t.TempDir()
	a, b := filepath.Join(base, "a"), filepath.Join(base, "b")
	for _, d := range []string{a, b} {
		os.Mkdir(d, 0o700)
	}
	ga, _, err := e.snapshotGroup(a)
	if err != nil {
		t.Fatal(err)
	}
	gb, releaseB, err := e.snapshotGroup(b)
	if err != nil {
		t.Fatal(err)
	}
	if again, _, _ := e.snapshotGroup(a); ga != first || gb == ga || again != ga {
		t.Errorf("groups: a %d, b %d, a again %d; want a the first (%d), b another, a its own again", ga, gb, again, first)
	}
	releaseB()
	if g, _, _ := e.snapshotGroup(filepath.Join(base, "c")); g != gb {
		t.Errorf("after b's group was given back: got %d, want %d again", g, gb)
	}
	// A group whose dir is gone is free again.
	os.RemoveAll(a)
	if g, _, _ := e.snapshotGroup(filepath.Join(base, "d")); g != ga {
		t.Errorf("a's dir gone: got %d, want its group %d again", g, ga)
	}
}
