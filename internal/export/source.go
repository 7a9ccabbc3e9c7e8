package export

import (
	"context"
	"io/fs"

	api "github.com/weaveworks/ignite/pkg/apis/ignite"

	"github.com/faasvm/appliance/internal/function"
)

// source is one version of a function: its spec, and the private snapshot
// of the folder the spec was read from, which is what goes into the image.
type source struct {
	spec *function.Spec
	// code is the snapshot (function.Load's, under the export's work
	// folder, removed with it).
	code string
}

// loadSource reads the folder dir exactly as the appliance does: the same
// function.Load, defaults, operator policy and template, so an invalid
// folder gets the appliance's reason, and the spec, its version and the
// image's code all come from the one snapshot Load takes (in work).
func loadSource(_ context.Context, dir, work string, d function.Defaults, template *api.VM) (*source, error) {
	d.SnapshotDir = work
	spec, err := function.Load(dir, d, template, function.EngineQEMU)
	if err != nil {
		return nil, err
	}
	return &source{spec: spec, code: spec.Snapshot}, nil
}

// codeMode is a code file's mode: readable by all, executable by all where
// the user made it executable (as on a VM's code disk).
func codeMode(m fs.FileMode) fs.FileMode {
	if m&0o111 != 0 {
		return 0o755
	}
	return 0o644
}
