package vm

import (
	"context"
	"time"
)

// Snapshotter is the optional engine capability: Engine values that also
// implement it can save a warmed VM and start new ones from it.
type Snapshotter interface {
	// Snapshot boots spec with its guest RAM in a file under dir, waits for
	// the agent, calls warm (may be nil) with the running machine, then
	// pauses it, saves its device state into dir, and stops it. The VM is
	// gone when Snapshot returns; dir holds the snapshot.
	Snapshot(ctx context.Context, spec *Spec, dir string, warm func(ctx context.Context, m Machine) error) (*Snapshot, error)
	// Restore starts a new machine from snap. spec carries the clone's own
	// name, UID and agent config (fresh secrets); it must describe the same
	// guest as the snapshot (same disks, memory, cpus). Returns once the
	// clone has been re-keyed (control POST /restore) and answers its
	// health check.
	Restore(ctx context.Context, snap *Snapshot, spec *Spec) (Machine, error)
	// The caller's key travels into Snapshot as the spec's VM annotation
	// SnapshotKeyAnnotation; Snapshot stores it and Open checks it.
	//
	// Open loads a snapshot saved earlier in dir, checking its files are
	// present and whole; key must match the key it was made with.
	Open(dir, key string) (*Snapshot, error)
	// SnapshotKey is the engine's part of the snapshot key (QEMU version,
	// accelerator, machine type): a snapshot made under another key cannot
	// be restored by this engine.
	SnapshotKey() string
}

// SnapshotKeyAnnotation is the VM object annotation (spec.VM) that carries
// the caller's snapshot key into Snapshotter.Snapshot; the snapshot is
// saved under it, and Open refuses the snapshot under any other key.
const SnapshotKeyAnnotation = "faasvm.dev/snapshot-key"

// Snapshot is a saved, warmed VM that new machines can start from.
type Snapshot struct {
	Dir     string    // directory holding the snapshot's files
	Key     string    // what it was made for (the caller's key; the engine stores and checks it)
	Created time.Time // when it was saved
	Size    int64     // bytes on disk
}
