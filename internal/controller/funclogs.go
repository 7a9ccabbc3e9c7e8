package controller

import (
	"context"
	"time"

	"github.com/faasvm/appliance/guest/protocol"
	"github.com/faasvm/appliance/internal/logs"
	"github.com/faasvm/appliance/internal/vm"
)

// LogSink stores the functions' own output (internal/logs.Store).
type LogSink interface {
	Append(function string, entries ...logs.Entry) error
}

// logRetry is the pause before following an instance's logs again after
// the stream broke.
const logRetry = time.Second

// collectLogs follows one instance's log stream on its agent's control
// port and stores every line, tagged with the instance, until the VM
// exits or the controller closes. A broken stream is followed again from
// the last line read, so nothing is stored twice.
func (c *Controller) collectLogs(f *fn, in *instance, m vm.Machine) {
	defer c.wg.Done()
	ctx, cancel := context.WithCancel(c.life)
	defer cancel()
	go func() {
		_ = m.Wait(ctx) // the VM is gone (or ctx ended): so is its stream
		cancel()
	}()
	client := vm.NewAgentClient(nil)
	var seq uint64
	warned := false
	for ctx.Err() == nil {
		var err error
		seq, err = client.FollowLogs(ctx, m.ControlEndpoint(), in.control, seq, func(e protocol.LogEntry) {
			if err := c.opts.Logs.Append(f.name, logs.Entry{
				Time: e.Time, Instance: in.id, Stream: e.Stream, RequestID: e.RequestID, Line: e.Line,
			}); err != nil && !warned {
				warned = true
				c.log.Warn("storing function logs", "function", f.name, "vm_id", in.id, "err", err)
			}
		})
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			c.log.Debug("function log stream broke; following it again", "function", f.name, "vm_id", in.id, "err", err)
		}
		t := time.NewTimer(logRetry)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
