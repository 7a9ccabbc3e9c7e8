package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// initramfsDirs are the directories the agent needs before any file system
// is mounted: mount points for devtmpfs, proc, sysfs, the disks and the new
// root, and the module directory.
func initramfsDirs() []string {
	return []string{"dev", "lib", "lib/modules", "mnt", "newroot", "proc", "sys"}
}

// initramfsEntries lists the initramfs: /init (the agent), the kernel's
// modules and modules.list in /lib/modules, the mount point directories, and
// /dev/console, which the kernel opens as init's stdin, stdout and stderr
// before init runs (devtmpfs is not mounted yet then).
func initramfsEntries(agent []byte, k *Kernel) ([]cpioEntry, error) {
	var entries []cpioEntry
	for _, d := range initramfsDirs() {
		entries = append(entries, cpioEntry{Name: d, Mode: cpioTypeDir | 0o755})
	}
	entries = append(entries,
		cpioEntry{Name: "dev/console", Mode: cpioTypeChar | 0o600, RdevMajor: 5, RdevMinor: 1},
		cpioEntry{Name: "init", Mode: cpioTypeRegular | 0o755, Data: agent},
		cpioEntry{Name: "lib/modules/modules.list", Mode: cpioTypeRegular | 0o644, Data: k.ModulesList()},
	)
	for _, m := range k.Modules {
		data, err := os.ReadFile(m.Path)
		if err != nil {
			return nil, fmt.Errorf("reading module: %w", err)
		}
		entries = append(entries, cpioEntry{Name: "lib/modules/" + m.Name, Mode: cpioTypeRegular | 0o644, Data: data})
	}
	return entries, nil
}

// readAgent reads the agent binary and checks that it can run as /init: a
// statically linked x86-64 ELF executable.
func readAgent(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading agent: %w", err)
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("agent %s is not an ELF executable: %w", path, err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return nil, fmt.Errorf("agent %s is not an x86-64 executable (machine %s, type %s)", path, f.Machine, f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return nil, fmt.Errorf("agent %s is dynamically linked; the initramfs has no libc: build it with CGO_ENABLED=0", path)
		}
	}
	return data, nil
}

// WriteInitramfs writes the initramfs (an uncompressed newc cpio) holding
// the agent at agentPath as /init and k's modules to w. Identical inputs
// give identical bytes.
func WriteInitramfs(w io.Writer, agentPath string, k *Kernel) error {
	agent, err := readAgent(agentPath)
	if err != nil {
		return err
	}
	entries, err := initramfsEntries(agent, k)
	if err != nil {
		return err
	}
	return writeCPIO(w, entries)
}

// Initramfs returns the path of the initramfs holding the agent at
// agentPath and k's modules, making it when the cache lacks it. The file is
// named by the sha256 of its content, which depends only on the inputs.
func (c *Cache) Initramfs(ctx context.Context, agentPath string, k *Kernel) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("making initramfs: %w", err)
	}
	start := time.Now()
	var buf bytes.Buffer
	if err := WriteInitramfs(&buf, agentPath, k); err != nil {
		return "", fmt.Errorf("making initramfs: %w", err)
	}
	sum := sha256.Sum256(buf.Bytes())
	key := hex.EncodeToString(sum[:])
	final := filepath.Join(c.dir, "initramfs", key+".cpio")
	defer c.lock(final)()
	ok, err := c.checkEntry(final)
	if err != nil {
		return "", fmt.Errorf("making initramfs: %w", err)
	}
	if ok {
		c.used(final)
		c.log.Debug("initramfs cached", "step", "initramfs", "path", final)
		return final, nil
	}
	if err := c.writeFileAtomic(final, func(w io.Writer) error {
		_, err := w.Write(buf.Bytes())
		return err
	}); err != nil {
		return "", fmt.Errorf("making initramfs: %w", err)
	}
	c.log.Info("initramfs made", "step", "initramfs", "path", final, "bytes", buf.Len(),
		"modules", len(k.Modules), "kernel", k.Release, "elapsed", time.Since(start).Round(time.Millisecond))
	return final, nil
}
