package vm

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/faasvm/appliance/internal/vmtest"
)

func TestBootRun(t *testing.T) {
	errBoom := errors.New("boom")
	// Each step records its name, registers (unless noUndo) an undo that
	// records "undo NAME" and returns undoErr, and returns err.
	type stepDef struct {
		name    string
		timed   bool
		err     error
		undoErr error
		noUndo  bool
	}
	tests := []struct {
		name      string
		steps     []stepDef
		explain   bool
		wantOrder []string
		wantErr   []string // substrings; nil for no error
	}{
		{
			name:      "all succeed: nothing undone",
			steps:     []stepDef{{name: "assets"}, {name: "disk"}, {name: "process", timed: true}},
			wantOrder: []string{"assets", "disk", "process"},
		},
		{
			name:      "failure undoes earlier steps in reverse",
			steps:     []stepDef{{name: "assets"}, {name: "disk"}, {name: "process", err: errBoom}, {name: "agent ready"}},
			wantOrder: []string{"assets", "disk", "process", "undo process", "undo disk", "undo assets"},
			wantErr:   []string{"step process: boom"},
		},
		{
			name: "undo errors are joined",
			steps: []stepDef{{name: "assets", undoErr: errors.New("rm failed")}, {name: "disk", noUndo: true},
				{name: "network", undoErr: errors.New("kill failed")}, {name: "process", err: errBoom, noUndo: true}},
			wantOrder: []string{"assets", "disk", "network", "process", "undo network", "undo assets"},
			wantErr:   []string{"step process: boom", "undoing earlier steps: kill failed\nrm failed"},
		},
		{
			name:      "explain runs before undo",
			steps:     []stepDef{{name: "run"}, {name: "endpoint", err: errBoom}},
			explain:   true,
			wantOrder: []string{"run", "endpoint", "explain", "undo endpoint", "undo run"},
			wantErr:   []string{"step endpoint: boom; console: last words"},
		},
		{
			name:      "first step fails: nothing to undo but its own",
			steps:     []stepDef{{name: "assets", err: errBoom, noUndo: true}, {name: "disk"}},
			wantOrder: []string{"assets"},
			wantErr:   []string{"step assets: boom"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var order []string
			logs := &vmtest.LogBuffer{}
			b := &Boot{Timeout: time.Minute, Log: vmtest.NewLogger(logs)}
			if tt.explain {
				b.Explain = func(_ context.Context, err error) error {
					order = append(order, "explain")
					return fmt.Errorf("%w; console: last words", err)
				}
			}
			var steps []Step
			for _, d := range tt.steps {
				steps = append(steps, Step{Name: d.name, Timed: d.timed, Run: func(context.Context) error {
					order = append(order, d.name)
					if !d.noUndo {
						b.Cleanup(func() error { order = append(order, "undo "+d.name); return d.undoErr })
					}
					return d.err
				}})
			}
			err := b.Run(context.Background(), steps)
			if got, want := strings.Join(order, ", "), strings.Join(tt.wantOrder, ", "); got != want {
				t.Errorf("order: got %q, want %q", got, want)
			}
			if tt.wantErr == nil {
				if err != nil {
					t.Errorf("error: got %v, want none", err)
				}
			}
			for _, w := range tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error: got %v, want one containing %q", err, w)
				}
			}
			if err != nil && !errors.Is(err, errBoom) {
				t.Errorf("errors.Is(err, step error): got false for %v, want true", err)
			}
			if tt.wantErr == nil && !strings.Contains(logs.String(), "step=process") {
				t.Errorf("logs: got %q, want a boot step done line for process", logs.String())
			}
		})
	}
}

// TestBootRunTimeout checks which steps run under the boot timeout: none
// before the first timed step, every one from it on.
func TestBootRunTimeout(t *testing.T) {
	tests := []struct {
		name         string
		timed        []bool
		wantDeadline []bool
	}{
		{name: "untimed then timed", timed: []bool{false, false, true, true}, wantDeadline: []bool{false, false, true, true}},
		{name: "timeout carries on past the first timed step", timed: []bool{false, true, false}, wantDeadline: []bool{false, true, true}},
		{name: "no timed step", timed: []bool{false, false}, wantDeadline: []bool{false, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &Boot{Timeout: time.Hour}
			var got []bool
			var deadlines []time.Time
			var steps []Step
			for i, timed := range tt.timed {
				steps = append(steps, Step{Name: fmt.Sprint("s", i), Timed: timed, Run: func(ctx context.Context) error {
					d, ok := ctx.Deadline()
					got = append(got, ok)
					if ok {
						deadlines = append(deadlines, d)
					}
					return nil
				}})
			}
			if err := b.Run(context.Background(), steps); err != nil {
				t.Fatalf("Run: %v", err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.wantDeadline) {
				t.Errorf("deadline per step: got %v, want %v", got, tt.wantDeadline)
			}
			for _, d := range deadlines {
				if !d.Equal(deadlines[0]) {
					t.Errorf("deadlines: got %v, want one shared deadline", deadlines)
					break
				}
			}
		})
	}
}

// TestBootRunTimeoutExpires checks that a timed step sees the boot
// timeout run out, and that the error says which step it was.
func TestBootRunTimeoutExpires(t *testing.T) {
	b := &Boot{Timeout: 10 * time.Millisecond}
	err := b.Run(context.Background(), []Step{
		{Name: "assets", Run: func(context.Context) error { return nil }},
		{Name: "agent ready", Timed: true, Run: func(ctx context.Context) error {
			<-ctx.Done()
			return fmt.Errorf("agent not healthy: %w", context.Cause(ctx))
		}},
	})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "step agent ready:") {
		t.Errorf("got %v, want a step agent ready error wrapping context.DeadlineExceeded", err)
	}
}
