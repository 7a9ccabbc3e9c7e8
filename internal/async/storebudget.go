package async

import (
	"fmt"
	"os"
	"syscall"
)

// The embedded JetStream server reserves every stream's MaxBytes on its
// store up front, and refuses to start ("insufficient storage resources
// available") when the reservations exceed what it may use of the store's
// disk (three quarters of the free space by default). The queue makes
// three such reservations of MaxBytes: the calls, the dead letters and the
// results. On a small state disk the old fixed default of 1 GiB therefore
// kept the whole appliance from starting.

// defaultMaxBytes is the queue's bound when none is set and the disk has
// room: what it always was.
const defaultMaxBytes = 1 << 30

// queueReservations is how many times MaxBytes is reserved on the store.
const queueReservations = 3

// minMaxBytes is the smallest bound the queue works with (as the
// async_max_bytes setting requires).
const minMaxBytes = 1 << 20

// storeMaxBytes decides the queue's MaxBytes for an embedded server whose
// store has free bytes available. explicit is the configured bound, 0 when
// none was set: then the default is 1 GiB, or an eighth of the free space
// when that is less (half of what would fit, leaving the rest of the disk
// to VM files, logs and images), and an error only when not even the
// minimum fits. An explicit bound is kept as set, or refused with an
// error naming the setting when its reservations do not fit.
func storeMaxBytes(explicit, free int64) (int64, error) {
	usable := free / 4 * 3 // what JetStream may reserve of the free space
	if explicit > 0 {
		if explicit > usable/queueReservations {
			return 0, fmt.Errorf("FAAS_ASYNC_MAX_BYTES (async_max_bytes) is %s, but the queue reserves it %d times (calls, results, dead letters) "+
				"and the state directory's disk has %s free, of which the queue may use three quarters: "+
				"set FAAS_ASYNC_MAX_BYTES to at most %s, leave it unset to size it from the disk, or free space in the state directory",
				human(explicit), queueReservations, human(free), human(max(usable/queueReservations, 0)))
		}
		return explicit, nil
	}
	n := min(int64(defaultMaxBytes), free/8)
	if n < minMaxBytes {
		return 0, fmt.Errorf("the state directory's disk has only %s free: the async queue needs at least %s "+
			"(%d reservations of FAAS_ASYNC_MAX_BYTES, at least 1MB each); free space in the state directory",
			human(free), human(8*minMaxBytes), queueReservations)
	}
	return n, nil
}

// freeBytes is the space an unprivileged writer may still use on dir's
// file system.
func freeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("measuring the free space of %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// embeddedMaxBytes is storeMaxBytes for the store directory dir (made if
// missing).
func embeddedMaxBytes(dir string, explicit int64) (int64, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, fmt.Errorf("making the queue's store dir: %w", err)
	}
	free, err := freeBytes(dir)
	if err != nil {
		return 0, err
	}
	n, err := storeMaxBytes(explicit, free)
	if err != nil {
		return 0, fmt.Errorf("async queue in %s: %w", dir, err)
	}
	return n, nil
}

// human writes n bytes in the largest binary unit that keeps one decimal.
func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
