package qemu_test

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/faasvm/appliance/guest/protocol"
	"github.com/faasvm/appliance/internal/vm/qemu"
)

// chattyExec writes about 1.6 MB to the guest's console (as a chatty
// function or a kernel spewing warnings would) and answers "done".
const chattyExec = `pad=$(printf '%080d' 0)
for i in $(seq 1 16000); do echo "chatty line $i $pad"; done > /dev/console
echo done
`

// TestRealVMConsoleCapped: a guest printing far more than the cap to its
// console leaves a console log no larger than the cap, holding the newest
// output.
func TestRealVMConsoleCapped(t *testing.T) {
	const maxBytes = 64 << 10
	h := newHarness(t, func(c *qemu.Config) { c.ConsoleMaxSize = maxBytes })
	fc := fnCase{name: "chatty", runtime: "bash", mode: protocol.ModeExec, handler: "handler.sh", code: chattyExec,
		command: []string{"bash", "handler.sh"}}
	s := h.spec(t, fc, false)
	s.Agent.Timeout = protocol.Duration(3 * time.Minute)
	m := h.start(t, s)
	done := make(chan reply, 1)
	go func() { done <- call(t, m, s.Agent.Secret, "POST", "/", "", nil) }()
	peak := int64(0)
	var r reply
poll:
	for {
		select {
		case r = <-done:
			break poll
		case <-time.After(20 * time.Millisecond):
			if st, err := os.Stat(m.ConsoleLog()); err == nil {
				peak = max(peak, st.Size())
			}
		}
	}
	if r.status != 200 || strings.TrimSpace(r.body) != "done" {
		t.Fatalf("chatty call: %d %q", r.status, r.body)
	}
	// The last lines travel through the serial port after the answer.
	deadline := time.Now().Add(30 * time.Second)
	var b []byte
	for {
		var err error
		if b, err = os.ReadFile(m.ConsoleLog()); err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte("chatty line 16000 ")) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	peak = max(peak, int64(len(b)))
	if peak > maxBytes {
		t.Errorf("console log grew to %d bytes, cap %d", peak, maxBytes)
	}
	if !bytes.Contains(b, []byte("chatty line 16000 ")) {
		t.Errorf("console log (%d bytes) lacks the newest line; ends %q", len(b), b[max(0, len(b)-200):])
	}
	if bytes.Contains(b, []byte("chatty line 1 ")) {
		t.Errorf("console log still holds the oldest line: not capped")
	}
	if len(b) < maxBytes/4 {
		t.Errorf("console log keeps only %d bytes, want at least a quarter of the cap", len(b))
	}
	t.Logf("console log %d bytes after ~1.6 MB written (peak %d, cap %d)", len(b), peak, maxBytes)
}
