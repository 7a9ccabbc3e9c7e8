package qemu

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// DetectAccel decides, once per Engine, whether VMs run under KVM or TCG
// and returns the choice and the reason. With Accel AccelAuto or AccelKVM
// it boots kernel and initrd once under KVM with faas.probe=1: KVM is usable
// only if the guest agent prints FAAS-PROBE-OK (on hosts whose /dev/kvm
// opens but cannot run an unmodified guest, QEMU dies with "KVM internal
// error" instead). Start calls it; call it earlier to log the choice at
// start-up. A probe cut short by ctx decides nothing.
func (e *Engine) DetectAccel(ctx context.Context, kernel, initrd string) (accel, reason string, err error) {
	select {
	case e.probing <- struct{}{}:
		defer func() { <-e.probing }()
	case <-ctx.Done():
		return "", "", fmt.Errorf("waiting for the kvm probe: %w", context.Cause(ctx))
	}
	e.mu.Lock()
	accel, reason, err = e.accel, e.reason, e.accErr
	e.mu.Unlock()
	if accel != "" || err != nil {
		return accel, reason, err
	}

	ok, why, err := e.probeKVM(ctx, kernel, initrd)
	if err != nil {
		return "", "", err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case ok:
		e.accel, e.reason = AccelKVM, "a probe guest booted under KVM"
	case e.cfg.Accel == AccelKVM:
		e.accErr = fmt.Errorf("accel kvm configured but kvm is unusable: %s", why)
		return "", "", e.accErr
	default:
		e.accel, e.reason = AccelTCG, why
		e.warnTCG()
		return e.accel, e.reason, nil
	}
	e.log.Info("KVM works, running VMs under KVM", "reason", e.reason)
	return e.accel, e.reason, nil
}

// openKVM checks that the KVM device opens read-write.
func openKVM(dev string) error {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", dev, err)
	}
	return f.Close()
}

// kvmInternalError is what QEMU prints when KVM cannot run the guest.
const kvmInternalError = "KVM internal error"

// probeKVM boots the probe guest under KVM. usable reports the outcome and
// why explains a failure; err is set only when the probe could not be run
// to an outcome (ctx ended, missing files, QEMU would not start).
func (e *Engine) probeKVM(ctx context.Context, kernel, initrd string) (usable bool, why string, err error) {
	if err := openKVM(e.kvmDev); err != nil {
		return false, err.Error(), nil
	}
	cred, release, err := e.users.take(false, true)
	if err != nil {
		return false, "", fmt.Errorf("probing kvm: %w", err)
	}
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, p := range []string{kernel, initrd} {
		f, err := openReadable(p, cred)
		if err != nil {
			release()
			return false, "", fmt.Errorf("probing kvm: %w", err)
		}
		files = append(files, f)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return false, "", fmt.Errorf("probing kvm: %w", err)
	}
	defer outR.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		outW.Close()
		release()
		return false, "", fmt.Errorf("probing kvm: %w", err)
	}
	defer errR.Close()
	cmd := exec.Command(e.cfg.QEMUPath, probeArgs(e.tscKHz)...)
	cmd.Stdout, cmd.Stderr = outW, errW
	cmd.ExtraFiles = files
	cmd.Dir = "/"
	p, err := startProcess("qemu", cmd, cred)
	outW.Close()
	errW.Close()
	if err != nil {
		release()
		return false, "", fmt.Errorf("probing kvm: %w", err)
	}
	defer func() {
		p.killAndWait(killWait)
		if p.exited() {
			release()
		}
	}()

	w := newProbeWatch()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); w.scan(outR, false) }()
	go func() { defer wg.Done(); w.scan(errR, true) }()
	outputDone := make(chan struct{})
	go func() { wg.Wait(); close(outputDone) }()

	t := time.NewTimer(e.cfg.ProbeTimeout)
	defer t.Stop()
	select {
	case <-w.ok:
		return true, "", nil
	case <-w.internal:
		return false, "the probe guest hit a KVM internal error: " + w.stderrTail(), nil
	case <-p.done:
		// The guest reboots right after printing: read what it left.
		<-outputDone
		select {
		case <-w.ok:
			return true, "", nil
		default:
		}
		return false, fmt.Sprintf("probe %v before printing %s", p.exitError(""), probeOKLine) + stderrSuffix(w.stderrTail()), nil
	case <-t.C:
		return false, fmt.Sprintf("no %s from the probe guest within %s", probeOKLine, e.cfg.ProbeTimeout) + stderrSuffix(w.stderrTail()), nil
	case <-ctx.Done():
		return false, "", fmt.Errorf("probing kvm: %w", context.Cause(ctx))
	}
}

func stderrSuffix(tail string) string {
	if tail == "" {
		return ""
	}
	return ": " + tail
}

// probeWatch follows the probe's console and stderr.
type probeWatch struct {
	ok, internal         chan struct{} // closed when seen
	okOnce, internalOnce sync.Once
	mu                   sync.Mutex
	stderr               []string // last lines of stderr
}

func newProbeWatch() *probeWatch {
	return &probeWatch{ok: make(chan struct{}), internal: make(chan struct{})}
}

// probeStderrLines is how many of the probe's stderr lines a reason quotes.
const probeStderrLines = 5

// scan reads r line by line until EOF.
func (w *probeWatch) scan(r io.Reader, isStderr bool) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !isStderr {
			if strings.Contains(line, probeOKLine) {
				w.okOnce.Do(func() { close(w.ok) })
			}
			continue
		}
		w.mu.Lock()
		w.stderr = append(w.stderr, strings.TrimSpace(line))
		if len(w.stderr) > probeStderrLines {
			w.stderr = w.stderr[1:]
		}
		w.mu.Unlock()
		if strings.Contains(line, kvmInternalError) {
			w.internalOnce.Do(func() { close(w.internal) })
		}
	}
	io.Copy(io.Discard, r) // after a too-long line: drain so QEMU never blocks
}

func (w *probeWatch) stderrTail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.stderr, " | ")
}
