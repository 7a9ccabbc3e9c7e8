package ignite

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/faasvm/appliance/internal/vm"
)

// machine is one running Ignite VM. A watcher goroutine asks Ignite every
// Config.StatusInterval whether the VM still runs and refreshes the console
// log file every Config.LogInterval, until the VM stops or Stop is called.
type machine struct {
	e        *Engine
	log      *slog.Logger
	id       string // the appliance's VM UID
	uid      string // Ignite UID
	name     string // Ignite VM name
	vmName   string // the appliance's VM name, which names its kept console log
	dir      string
	endpoint string // the agent's data listener
	// controlEndpoint and controlSecret reach the agent's control listener.
	controlEndpoint, controlSecret string
	containerID                    string

	cancelWatch context.CancelFunc
	watchDone   chan struct{}
	exit        *vm.Exit // set once the VM is known to have stopped

	stopOnce sync.Once
	stopErr  error
}

var _ vm.Machine = (*machine)(nil)

func newMachine(b *boot) *machine {
	ctx, cancel := context.WithCancel(context.Background()) // the VM's life, not the boot's
	m := &machine{
		e:               b.e,
		log:             b.log,
		id:              string(b.spec.VM.UID),
		uid:             b.uid,
		name:            b.name,
		vmName:          b.spec.VM.Name,
		dir:             b.dir,
		endpoint:        b.endpointAddr(),
		controlEndpoint: b.controlAddr(),
		controlSecret:   b.spec.Agent.ControlSecret,
		containerID:     b.containerID,
		cancelWatch:     cancel,
		watchDone:       make(chan struct{}),
		exit:            vm.NewExit(b.name),
	}
	go m.watch(ctx)
	return m
}

// ID is the VM's UID (the appliance's, not Ignite's).
func (m *machine) ID() string { return m.id }

// Endpoint is the VM's IP on Ignite's network and the agent's data port.
func (m *machine) Endpoint() string { return m.endpoint }

// ControlEndpoint is the VM's IP and the agent's control port.
func (m *machine) ControlEndpoint() string { return m.controlEndpoint }

// ConsoleLog is the host path of a copy of the VM's console, refreshed
// every Config.LogInterval while the VM runs and once more when it stops
// (the last lines before an unexpected stop are there only with the docker
// runtime). Stop removes it (or moves it to Config.KeepLogsDir).
func (m *machine) ConsoleLog() string { return filepath.Join(m.dir, consoleLogName) }

// Wait blocks until the VM stops, returning an error that wraps
// vm.ErrExited and says what Ignite reported, or until ctx is done. After
// it returns, call Stop to remove the VM.
func (m *machine) Wait(ctx context.Context) error { return m.exit.Wait(ctx) }

// watch follows the VM until it stops or ctx (cancelled by Stop) ends.
func (m *machine) watch(ctx context.Context) {
	defer close(m.watchDone)
	status := time.NewTicker(m.e.cfg.StatusInterval)
	defer status.Stop()
	logs := time.NewTicker(m.e.cfg.LogInterval)
	defer logs.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-logs.C:
			m.saveConsole(ctx)
		case <-status.C:
			st, err := m.e.status(ctx, m.uid)
			switch {
			case ctx.Err() != nil:
				return
			case err != nil:
				if !failing {
					m.log.Warn("cannot read the vm's state from ignite; will retry", "error", err)
				}
				failing = true
				continue
			case st == stateRunning:
				failing = false
				continue
			}
			m.saveConsole(ctx)
			m.log.Warn("vm stopped by itself", "state", st.String())
			m.exit.Set(fmt.Errorf("ignite reports the vm %s%s", st, m.consoleSuffix()))
			return
		}
	}
}

// saveConsole refreshes the console log file. Failures are logged only at
// debug level: the VM may be going away, and the file keeps what it had.
func (m *machine) saveConsole(ctx context.Context) {
	out, err := m.e.console(ctx, m.uid, m.containerID)
	if err == nil {
		err = writeConsole(m.dir, out)
	}
	if err != nil && ctx.Err() == nil {
		m.log.Debug("refreshing the console log", "error", err)
	}
}

// consoleSuffix quotes the tail of the saved console log.
func (m *machine) consoleSuffix() string {
	b, err := os.ReadFile(m.ConsoleLog())
	if err != nil {
		return "; console log empty"
	}
	return "; console: " + tail(b, consoleTailBytes)
}

// Stop powers the VM off and removes it and its directory: it asks the
// agent to power off and waits up to Config.StopTimeout (or ctx's deadline,
// if sooner) for Ignite to see the VM stopped, then removes it with
// `ignite rm -f`, which kills it if it still runs. The removal gets its own
// Config.CommandTimeout even when ctx is over. Only the first call does
// anything; later calls return its result.
func (m *machine) Stop(ctx context.Context) error {
	m.stopOnce.Do(func() { m.stopErr = m.stop(ctx) })
	return m.stopErr
}

func (m *machine) stop(ctx context.Context) error {
	begin := time.Now()
	m.cancelWatch()
	<-m.watchDone
	how := "already stopped"
	if !m.exit.Exited() {
		how = m.shutdown(ctx)
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.e.cfg.CommandTimeout)
	defer cancel()
	m.saveConsole(rctx)
	var errs []error
	if err := m.e.remove(rctx, m.uid); err != nil {
		errs = append(errs, fmt.Errorf("removing vm: %w", err))
	}
	m.exit.Set(errors.New("stopped by the engine"))
	if len(errs) == 0 { // a VM that may still exist keeps its files
		if err := vm.RemoveVMDir(m.dir, m.ConsoleLog(), m.e.cfg.KeepLogsDir, m.vmName, m.id); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("stopping vm %s (%s): %w", m.name, how, errors.Join(errs...))
	}
	m.log.Info("vm stopped", "how", how, "took", time.Since(begin))
	return nil
}

// shutdown asks the agent to power the guest off and waits for Ignite to
// see it stopped. It says how the VM ended ("poweroff"), or that it will
// be killed by the removal ("kill").
func (m *machine) shutdown(ctx context.Context) string {
	m.saveConsole(ctx) // the last chance while `ignite logs` still answers
	grace, cancel := context.WithTimeout(ctx, m.e.cfg.StopTimeout)
	defer cancel()
	if err := m.e.agents.Poweroff(grace, m.log, m.controlEndpoint, m.controlSecret); err != nil {
		m.log.Debug("agent poweroff failed", "error", err)
		return "kill"
	}
	tick := time.NewTicker(stopPollInterval)
	defer tick.Stop()
	for {
		st, err := m.e.status(grace, m.uid)
		if err == nil && st != stateRunning {
			return "poweroff"
		}
		select {
		case <-grace.Done():
			return "kill"
		case <-tick.C:
		}
	}
}
