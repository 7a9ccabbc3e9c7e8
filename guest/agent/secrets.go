package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/faasvm/appliance/guest/protocol"
)

// secrets writes the function's secrets to protocol.SecretsDir, a tmpfs of
// its own (never the overlay, never a disk), one file per secret, mode
// 0400, and drops them from the config so that nothing later can log or
// pass them on.
func (b *boot) secrets(context.Context) error {
	names, err := writeSecrets(b.cfg.Secrets, protocol.SecretsDir, func(dir string) error {
		return mountSpec{"tmpfs", dir, "tmpfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "mode=0755,size=2m"}.mount()
	})
	b.cfg.Secrets = nil
	if err != nil {
		return err
	}
	if len(names) > 0 {
		b.log.Info("secrets written", "step", "secrets", "dir", protocol.SecretsDir, "names", names)
	}
	return nil
}

// writeSecrets mounts dir (with mount) and writes each secret into it,
// returning the names written, sorted. No secrets: nothing is mounted.
func writeSecrets(secrets map[string][]byte, dir string, mount func(dir string) error) ([]string, error) {
	if len(secrets) == 0 {
		return nil, nil
	}
	if err := mount(dir); err != nil {
		return nil, fmt.Errorf("mounting the secrets directory: %w", err)
	}
	names := make([]string, 0, len(secrets))
	for name := range secrets {
		if name == "" || name == "." || name == ".." || filepath.Base(name) != name {
			return nil, fmt.Errorf("secret name %q is not a file name", name)
		}
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		p := filepath.Join(dir, name)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o400)
		if err != nil {
			return nil, fmt.Errorf("writing secret %s: %w", name, err)
		}
		_, werr := f.Write(secrets[name])
		if err := f.Close(); werr == nil {
			werr = err
		}
		if werr != nil {
			return nil, fmt.Errorf("writing secret %s: %w", name, werr)
		}
		// The umask may have taken bits away, never added them: be exact.
		if err := os.Chmod(p, 0o400); err != nil {
			return nil, fmt.Errorf("writing secret %s: %w", name, err)
		}
	}
	return names, nil
}
