package controller

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/faasvm/appliance/internal/vm"
)

func TestBootLimiterFIFO(t *testing.T) {
	l := newBootLimiter(1)
	first, err := l.acquire(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	queued := make(chan struct{})
	for i := range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rel, err := l.acquire(context.Background(), func(int) { queued <- struct{}{} })
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			rel()
		}()
		<-queued // in line before the next one comes
	}
	if s := l.state(); s.Booting != 1 || s.Queued != 5 {
		t.Errorf("state %+v, want 1 booting, 5 queued", s)
	}
	first()
	wg.Wait()
	for i, got := range order {
		if got != i {
			t.Fatalf("slots granted in order %v, want first come first served", order)
		}
	}
	if s := l.state(); s.Booting != 0 || s.Queued != 0 {
		t.Errorf("after all released: %+v, want empty", s)
	}
}

func TestBootLimiterLeaveLine(t *testing.T) {
	l := newBootLimiter(1)
	first, _ := l.acquire(context.Background(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	queued := make(chan struct{})
	done := make(chan error)
	go func() {
		_, err := l.acquire(ctx, func(int) { close(queued) })
		done <- err
	}()
	<-queued
	go func() { // the next one in line gets the slot the leaver would have had
		rel, err := l.acquire(context.Background(), nil)
		if err == nil {
			rel()
		}
		done <- err
	}()
	for l.state().Queued != 2 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait: got %v, want context.Canceled", err)
	}
	if s := l.state(); s.Queued != 1 {
		t.Errorf("after leaving: %+v, want 1 queued", s)
	}
	first()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if s := l.state(); s != (BootQueue{Limit: 1}) {
		t.Errorf("end state %+v", s)
	}
	// Double release gives back one slot only.
	a, _ := l.acquire(context.Background(), nil)
	a()
	a()
	if s := l.state(); s.Booting != 0 {
		t.Errorf("double release: %+v", s)
	}
}

func TestBootLimiterNil(t *testing.T) {
	l := newBootLimiter(0)
	if l != nil {
		t.Fatal("limit 0 should mean no limiter")
	}
	rel, err := l.acquire(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	rel()
	if s := l.state(); s != (BootQueue{}) {
		t.Errorf("%+v", s)
	}
}

// TestConcurrentBootLimit deploys five functions with a limit of two:
// never more than two boots run, the others show as queued boots, a
// removed function's queued boot leaves the line without booting, and the
// rest boot in the order they came.
func TestConcurrentBootLimit(t *testing.T) {
	gate := make(chan struct{})
	var mu sync.Mutex
	running, peak := 0, 0
	var booted []string
	e := &fakeEngine{hold: func(ctx context.Context, spec *vm.Spec) error {
		mu.Lock()
		running++
		peak = max(peak, running)
		booted = append(booted, spec.VM.Name)
		mu.Unlock()
		defer func() { mu.Lock(); running--; mu.Unlock() }()
		select {
		case <-gate:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
	c, dir := newTestController(t, e, func(o *Options) { o.MaxConcurrentBoots = 2 })
	names := []string{"f0", "f1", "f2", "f3", "f4"}
	for _, n := range names {
		writeFunction(t, dir, n, "def handler(event, context):\n    return 'x'\n")
		c.Sync(n)
		// One at a time, so that the line's order is known.
		deadline := time.Now().Add(5 * time.Second)
		for {
			q := c.BootQueue()
			if q.Booting+q.Queued == len(booted0(c, names)) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never reached the boot limiter: %+v", n, q)
			}
			time.Sleep(time.Millisecond)
		}
	}
	if q := c.BootQueue(); q != (BootQueue{Limit: 2, Booting: 2, Queued: 3}) {
		t.Fatalf("boot queue %+v, want 2 booting, 3 queued", q)
	}
	for _, n := range names[2:] {
		s, _ := c.Get(context.Background(), n)
		if s.Replicas.QueuedBoots != 1 || s.Replicas.Booting != 1 {
			t.Errorf("%s: replicas %+v, want 1 booting of which 1 queued", n, s.Replicas)
		}
	}
	// f3 goes away while in line: it leaves the line and never boots.
	if err := os.RemoveAll(filepath.Join(dir, "f3")); err != nil {
		t.Fatal(err)
	}
	c.Sync("f3")
	deadline := time.Now().Add(5 * time.Second)
	for c.BootQueue().Queued != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("removed function's boot still queued: %+v", c.BootQueue())
		}
		time.Sleep(time.Millisecond)
	}
	// One boot ends at a time, so that each freed slot's taker shows.
	nBooted := func() int { mu.Lock(); defer mu.Unlock(); return len(booted) }
	for i, want := range []int{3, 4, 4, 4} {
		gate <- struct{}{}
		deadline := time.Now().Add(5 * time.Second)
		for nBooted() != want {
			if time.Now().After(deadline) {
				t.Fatalf("after %d boots ended: %d started, want %d", i+1, nBooted(), want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	for _, n := range []string{"f0", "f1", "f2", "f4"} {
		waitState(t, c, n, func(s Status) bool { return s.State == StateReady && s.Replicas.QueuedBoots == 0 })
	}
	mu.Lock()
	defer mu.Unlock()
	if peak > 2 {
		t.Errorf("%d boots ran at once, limit 2", peak)
	}
	if fmt.Sprint(booted[2:]) != "[f2 f4]" {
		t.Errorf("boot order %v: want f0,f1 then f2, f4 (first come first served, f3 removed)", booted)
	}
	if q := c.BootQueue(); q != (BootQueue{Limit: 2}) {
		t.Errorf("final boot queue %+v", q)
	}
}

// booted0 is how many of names the controller knows.
func booted0(c *Controller, names []string) []string {
	var out []string
	for _, n := range names {
		if _, err := c.Get(context.Background(), n); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// TestBootTimeoutExcludesWait: a boot that waited in line longer than the
// boot timeout still gets its whole timeout once it has a slot.
func TestBootTimeoutExcludesWait(t *testing.T) {
	gate := make(chan struct{})
	e := &fakeEngine{hold: func(ctx context.Context, spec *vm.Spec) error {
		if spec.VM.Name == "slow" {
			<-gate // ignores its context: holds the only slot
		}
		return nil
	}}
	c, dir := newTestController(t, e, func(o *Options) {
		o.MaxConcurrentBoots = 1
		o.BootTimeout = 100 * time.Millisecond
	})
	writeFunction(t, dir, "slow", "def handler(event, context):\n    return 'x'\n")
	c.Sync("slow")
	for c.BootQueue().Booting != 1 {
		time.Sleep(time.Millisecond)
	}
	writeFunction(t, dir, "next", "def handler(event, context):\n    return 'x'\n")
	c.Sync("next")
	waitState(t, c, "next", func(s Status) bool { return s.Replicas.QueuedBoots == 1 })
	time.Sleep(300 * time.Millisecond) // three boot timeouts in line
	close(gate)
	waitState(t, c, "next", func(s Status) bool { return s.State == StateReady })
}
