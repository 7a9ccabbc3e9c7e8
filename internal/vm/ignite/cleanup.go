package ignite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Cleanup removes what an earlier run of this engine (same StateDir) left
// behind: every VM Ignite knows whose LabelOwner is this engine's, with
// `ignite rm -f`, and every VM directory under StateDir. VMs of other
// Ignite users, and of appliances with another state dir, are left alone.
// Call it before starting any VM. It returns the Ignite UIDs removed.
func (e *Engine) Cleanup(ctx context.Context) ([]string, error) {
	out, err := e.run.run(ctx, e.cfg.CommandTimeout, e.ignite, listArgs())
	if err != nil {
		return nil, fmt.Errorf("listing ignite vms: %w", err)
	}
	uids, err := parseList(out, e.owner)
	if err != nil {
		return nil, err
	}
	var (
		removed []string
		errs    []error
	)
	for _, uid := range uids {
		if err := e.remove(ctx, uid); err != nil {
			errs = append(errs, fmt.Errorf("removing leftover vm %s: %w", uid, err))
			continue
		}
		removed = append(removed, uid)
		e.log.Info("removed a vm an earlier run left behind", "ignite_uid", uid)
	}
	if len(errs) == 0 {
		root := filepath.Join(e.cfg.StateDir, vmsDirName)
		entries, err := os.ReadDir(root)
		if err != nil {
			errs = append(errs, fmt.Errorf("cleaning up %s: %w", root, err))
		}
		for _, ent := range entries {
			if err := os.RemoveAll(filepath.Join(root, ent.Name())); err != nil {
				errs = append(errs, fmt.Errorf("cleaning up %s: %w", root, err))
			}
		}
	}
	return removed, errors.Join(errs...)
}
