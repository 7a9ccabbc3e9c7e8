package metrics

import (
	"testing"
	"time"
)

func TestSnapshotMetrics(t *testing.T) {
	m := New()
	// Unknown functions make no series.
	m.SnapshotRestoreFailed("ghost", "corrupt")
	m.SnapshotSaved("ghost", 10, time.Now())
	m.InstancePSS("ghost", "vm1", 10)
	for _, name := range []string{"faasvm_snapshot_restore_failures_total", "faasvm_snapshot_bytes", "faasvm_snapshot_age_seconds", "faasvm_instance_pss_bytes"} {
		if got := series(t, m, name); len(got) != 0 {
			t.Fatalf("%s has series for an unknown function: %v", name, got)
		}
	}

	m.FunctionState("fn", 1, 0)
	m.SnapshotRestoreFailed("fn", "corrupt")
	m.SnapshotRestoreFailed("fn", "corrupt")
	m.SnapshotRestoreFailed("fn", "timeout")
	m.SnapshotSaved("fn", 4096, time.Now().Add(-90*time.Second))
	m.InstancePSS("fn", "vm1", 1<<20)
	m.InstancePSS("fn", "vm2", 2<<20)

	if got := series(t, m, "faasvm_snapshot_restore_failures_total"); got["function_name=fn,reason=corrupt"] != 2 || got["function_name=fn,reason=timeout"] != 1 {
		t.Errorf("restore failures = %v", got)
	}
	if got := series(t, m, "faasvm_snapshot_bytes"); got["function_name=fn"] != 4096 {
		t.Errorf("snapshot bytes = %v", got)
	}
	if age := series(t, m, "faasvm_snapshot_age_seconds")["function_name=fn"]; age < 89 || age > 120 {
		t.Errorf("snapshot age = %v, want about 90", age)
	}
	if got := series(t, m, "faasvm_instance_pss_bytes"); got["function_name=fn,instance=vm1"] != 1<<20 || got["function_name=fn,instance=vm2"] != 2<<20 {
		t.Errorf("pss = %v", got)
	}

	m.InstanceGone("fn", "vm1")
	if got := series(t, m, "faasvm_instance_pss_bytes"); len(got) != 1 {
		t.Errorf("pss after vm1 stopped = %v", got)
	}
	m.SnapshotGone("fn")
	if got := series(t, m, "faasvm_snapshot_bytes"); len(got) != 0 {
		t.Errorf("snapshot bytes after it went = %v", got)
	}
	if got := series(t, m, "faasvm_snapshot_age_seconds"); len(got) != 0 {
		t.Errorf("snapshot age after it went = %v", got)
	}

	m.SnapshotSaved("fn", 1, time.Now())
	m.Forget("fn")
	for _, name := range []string{"faasvm_snapshot_restore_failures_total", "faasvm_snapshot_bytes", "faasvm_snapshot_age_seconds", "faasvm_instance_pss_bytes"} {
		if got := series(t, m, name); len(got) != 0 {
			t.Errorf("%s after Forget = %v", name, got)
		}
	}
}
