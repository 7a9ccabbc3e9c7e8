package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// reseed makes a VM restored from a snapshot diverge from its siblings: it
// steps the wall clock to t (the guest's stood still while the snapshot
// waited) and adds entropy to the kernel's RNG, crediting it, then forces
// the RNG to reseed, so getrandom and /dev/urandom stop repeating the
// snapshot's stream. It returns how far the clock moved.
func reseed(t time.Time, entropy []byte) (time.Duration, error) {
	step := time.Until(t)
	ts := unix.NsecToTimespec(t.UnixNano())
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
		return 0, fmt.Errorf("setting the clock: %w", err)
	}
	if err := addEntropy(entropy); err != nil {
		return step, err
	}
	return step, nil
}

// addEntropy hands entropy to the kernel with RNDADDENTROPY (credited, as
// it comes from the host's RNG) and reseeds the CRNG with RNDRESEEDCRNG.
func addEntropy(entropy []byte) error {
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("opening /dev/urandom: %w", err)
	}
	defer f.Close()
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	buf := make([]byte, 8+len(entropy))
	binary.NativeEndian.PutUint32(buf[0:], uint32(len(entropy)*8))
	binary.NativeEndian.PutUint32(buf[4:], uint32(len(entropy)))
	copy(buf[8:], entropy)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&buf[0]))); errno != 0 {
		return fmt.Errorf("adding entropy (RNDADDENTROPY): %w", errno)
	}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDRESEEDCRNG, 0); errno != 0 {
		return fmt.Errorf("reseeding the kernel rng (RNDRESEEDCRNG): %w", errno)
	}
	return nil
}
