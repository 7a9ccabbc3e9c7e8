package qemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/faasvm/appliance/internal/vm"
)

// machine is one running QEMU VM.
type machine struct {
	e               *Engine
	log             *slog.Logger
	id, name        string
	dir             string
	endpoint        string // the agent's data listener
	controlEndpoint string // the agent's control listener
	controlSecret   string
	qemu            *process

	exit *vm.Exit // set once QEMU exited: why, with its stderr and console tails

	stopOnce sync.Once
	stopErr  error
}

var _ vm.Machine = (*machine)(nil)

func newMachine(b *boot) *machine {
	m := &machine{
		e:               b.e,
		log:             b.log,
		id:              string(b.spec.VM.UID),
		name:            b.spec.VM.Name,
		dir:             b.dir,
		endpoint:        net.JoinHostPort("127.0.0.1", strconv.Itoa(b.dataPort)),
		controlEndpoint: net.JoinHostPort("127.0.0.1", strconv.Itoa(b.controlPort)),
		controlSecret:   b.spec.Agent.ControlSecret,
		qemu:            b.qemu,
		exit:            vm.NewExit(b.spec.VM.Name),
	}
	release := b.releaseUID
	go func() {
		<-m.qemu.done
		// Read the logs' tails now: Stop removes them once the exit is set.
		err := b.withConsole(m.qemu.exitError(b.path(qemuStderrName)))
		release() // QEMU is reaped: no process runs as its uid any more
		m.exit.Set(err)
	}()
	return m
}

// ID is the VM's UID.
func (m *machine) ID() string { return m.id }

// Endpoint is the loopback host:port of the guest agent's data listener.
func (m *machine) Endpoint() string { return m.endpoint }

// ControlEndpoint is the loopback host:port of the guest agent's control
// listener.
func (m *machine) ControlEndpoint() string { return m.controlEndpoint }

// ConsoleLog is the host path of the VM's console log. Stop removes it (or
// moves it to Config.KeepLogsDir).
func (m *machine) ConsoleLog() string { return filepath.Join(m.dir, consoleLogName) }

// Wait blocks until QEMU exits, returning an error that wraps vm.ErrExited
// and says why, or until ctx is done. After it returns, call Stop to release
// the VM's host resources.
func (m *machine) Wait(ctx context.Context) error { return m.exit.Wait(ctx) }

// Stop powers the VM off and removes its directory. It asks the agent to
// power off and waits up to Config.StopTimeout (or ctx's deadline, if
// sooner); then tells QEMU to quit over QMP; then kills QEMU's process
// group. Only the first call does anything; later calls return its result.
func (m *machine) Stop(ctx context.Context) error {
	m.stopOnce.Do(func() { m.stopErr = m.stop(ctx) })
	return m.stopErr
}

func (m *machine) stop(ctx context.Context) error {
	begin := time.Now()
	how := "already exited"
	var errs []error
	if !m.qemu.exited() {
		var err error
		how, err = m.shutdown(ctx)
		if err != nil {
			errs = append(errs, err)
		}
	}
	if m.qemu.exited() {
		<-m.exit.Done()
	}
	if len(errs) == 0 { // never delete the files of a process that may still run
		if err := vm.RemoveVMDir(m.dir, m.ConsoleLog(), m.e.cfg.KeepLogsDir, m.name, m.id); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("stopping vm %s (%s): %w", m.name, how, errors.Join(errs...))
	}
	m.log.Info("vm stopped", "how", how, "took", time.Since(begin))
	return nil
}

// shutdown ends QEMU as gently as time allows and says how it ended.
func (m *machine) shutdown(ctx context.Context) (how string, err error) {
	grace, cancel := context.WithTimeout(ctx, m.e.cfg.StopTimeout)
	defer cancel()
	if err := m.e.agents.Poweroff(grace, m.log, m.controlEndpoint, m.controlSecret); err != nil {
		m.log.Debug("agent poweroff failed", "error", err)
	} else {
		select {
		case <-m.qemu.done:
			return "poweroff", nil
		case <-grace.Done():
		}
	}

	// Past the caller's bound (the appliance shutting down, say), no more
	// grace: kill at once.
	if ctx.Err() != nil {
		if err := m.qemu.killAndWait(killWait); err != nil {
			return "kill", err
		}
		return "kill", nil
	}
	// The quit gets its own short bound: ctx may end while it runs, and
	// the alternative is a kill.
	qctx, qcancel := context.WithTimeout(context.WithoutCancel(ctx), qmpQuitTimeout)
	defer qcancel()
	if err := m.qmpQuit(qctx); err != nil {
		m.log.Debug("qmp quit failed", "error", err)
	} else {
		select {
		case <-m.qemu.done:
			return "qmp quit", nil
		case <-qctx.Done():
		}
	}

	if err := m.qemu.killAndWait(killWait); err != nil {
		return "kill", err
	}
	return "kill", nil
}

// qmpQuit tells QEMU to exit.
func (m *machine) qmpQuit(ctx context.Context) error {
	c, err := dialQMP(ctx, filepath.Join(m.dir, qmpSocketName))
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.execute(ctx, "quit", nil)
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
		return nil // QEMU closed the socket as it went
	}
	return err
}
