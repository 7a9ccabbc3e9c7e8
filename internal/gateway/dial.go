package gateway

import (
	"context"
	"net"
	"sync"
)

// An instance's endpoint under QEMU's user-mode network is a listening
// socket of slirp's hostfwd, and slirp listens with a backlog of 1. A burst
// of connections opened at once — the requests that queued while a VM
// booted, all let go when it becomes ready — overflows that backlog: the
// host kernel answers with SYN cookies ("Possible SYN flooding on port
// 127.0.0.1:…" in the kernel log), and a cookie that fails its check when
// the accept queue is still full is answered with a RST. The request then
// fails with "connection reset by peer" although the guest never saw it
// (seen in the soak: two of twelve requests released together onto a
// freshly booted exec-mode VM, reset a second later).
//
// serialDialer therefore opens at most one connection at a time to each
// address. A connect on loopback takes microseconds, so this costs nothing
// in the common case; with it no second handshake is ever pending on the
// listener, no cookie is sent, and a connection that does not fit the
// accept queue waits for its SYN to be retransmitted instead of being
// reset. Connections already open (the transport's keep-alive pool) are not
// affected.
type serialDialer struct {
	dial  func(ctx context.Context, network, addr string) (net.Conn, error)
	mu    sync.Mutex
	gates map[string]*dialGate
}

// dialGate is one address's turn; users counts the dials holding or
// waiting for it, so the map keeps only addresses being dialled.
type dialGate struct {
	turn  chan struct{}
	users int
}

func newSerialDialer(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *serialDialer {
	return &serialDialer{dial: dial, gates: make(map[string]*dialGate)}
}

// DialContext dials addr once no other dial to it is in progress; it gives
// up when ctx ends while waiting for its turn.
func (d *serialDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	key := network + " " + addr
	d.mu.Lock()
	g := d.gates[key]
	if g == nil {
		g = &dialGate{turn: make(chan struct{}, 1)}
		d.gates[key] = g
	}
	g.users++
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		if g.users--; g.users == 0 {
			delete(d.gates, key)
		}
		d.mu.Unlock()
	}()
	select {
	case g.turn <- struct{}{}:
	case <-ctx.Done():
		return nil, &net.OpError{Op: "dial", Net: network, Err: context.Cause(ctx)}
	}
	defer func() { <-g.turn }()
	return d.dial(ctx, network, addr)
}

// pending is how many addresses have a dial in progress or waiting (tests).
func (d *serialDialer) pending() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.gates)
}
