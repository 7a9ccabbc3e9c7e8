package vm

import (
	"context"
	"errors"
	"testing"
)

func TestExit(t *testing.T) {
	errCrash := errors.New("qemu exited (signal: killed)")
	tests := []struct {
		name    string
		sets    []error // Set calls, in order
		want    string  // Wait's error
		wantErr error   // what Wait's error wraps besides ErrExited
	}{
		{name: "not exited", want: "context canceled", wantErr: context.Canceled},
		{name: "exited", sets: []error{errCrash}, want: "vm hello: vm exited: qemu exited (signal: killed)", wantErr: errCrash},
		{name: "first reason wins", sets: []error{errCrash, errors.New("stopped by the engine")},
			want: "vm hello: vm exited: qemu exited (signal: killed)", wantErr: errCrash},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := NewExit("hello")
			for _, err := range tt.sets {
				x.Set(err)
			}
			if got, want := x.Exited(), len(tt.sets) > 0; got != want {
				t.Errorf("Exited: got %v, want %v", got, want)
			}
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if len(tt.sets) > 0 {
				ctx = context.Background() // Wait must return without ctx's help
			}
			err := x.Wait(ctx)
			if err == nil || err.Error() != tt.want {
				t.Errorf("Wait: got %v, want %q", err, tt.want)
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Wait: got %v, want it to wrap %v", err, tt.wantErr)
			}
			if got, want := errors.Is(err, ErrExited), len(tt.sets) > 0; got != want {
				t.Errorf("errors.Is(err, ErrExited): got %v, want %v", got, want)
			}
			select {
			case <-x.Done():
				if len(tt.sets) == 0 {
					t.Error("Done: closed, want open")
				}
			default:
				if len(tt.sets) > 0 {
					t.Error("Done: open, want closed")
				}
			}
		})
	}
}
