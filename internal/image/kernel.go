package image

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Kernel is a guest kernel directory as scripts/fetch-kernel.sh leaves it:
//
//	vmlinux               uncompressed x86-64 kernel ELF
//	modules/*.ko          the modules the agent loads
//	modules/modules.list  their file names, one a line, in load order
//	VERSION               package=, version= and release= lines
type Kernel struct {
	// Dir is the kernel directory.
	Dir string
	// VMLinux is the path of the uncompressed kernel.
	VMLinux string
	// Modules are the modules in load order.
	Modules []Module
	// Package, Version and Release come from VERSION: the Debian package,
	// its version and the kernel release (uname -r).
	Package, Version, Release string
}

// Module is one kernel module file.
type Module struct {
	// Name is the file name, e.g. "virtio_blk.ko".
	Name string
	// Path is its host path.
	Path string
}

// ModulesList is the content of modules/modules.list: module file names in
// load order, one a line.
func (k *Kernel) ModulesList() []byte {
	var b bytes.Buffer
	for _, m := range k.Modules {
		b.WriteString(m.Name)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// LoadKernel reads and validates the kernel directory dir.
func LoadKernel(dir string) (*Kernel, error) {
	k := &Kernel{Dir: dir, VMLinux: filepath.Join(dir, "vmlinux")}
	if err := checkELF(k.VMLinux); err != nil {
		return nil, fmt.Errorf("kernel dir %s: %w", dir, err)
	}
	if err := k.readVersion(filepath.Join(dir, "VERSION")); err != nil {
		return nil, fmt.Errorf("kernel dir %s: %w", dir, err)
	}
	if err := k.readModules(filepath.Join(dir, "modules")); err != nil {
		return nil, fmt.Errorf("kernel dir %s: %w", dir, err)
	}
	return k, nil
}

// checkELF verifies that path is a 64-bit little-endian x86-64 ELF.
func checkELF(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("opening vmlinux: %w", err)
	}
	defer f.Close()
	var hdr [20]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil {
		return fmt.Errorf("vmlinux %s is not an ELF: reading header: %w", path, err)
	}
	switch {
	case !bytes.Equal(hdr[:4], []byte("\x7fELF")):
		return fmt.Errorf("vmlinux %s is not an ELF (magic % x); a compressed vmlinuz does not boot on microvm", path, hdr[:4])
	case hdr[4] != 2 || hdr[5] != 1:
		return fmt.Errorf("vmlinux %s is not a 64-bit little-endian ELF", path)
	case binary.LittleEndian.Uint16(hdr[18:20]) != 0x3e:
		return fmt.Errorf("vmlinux %s is not an x86-64 ELF (machine %#x)", path, binary.LittleEndian.Uint16(hdr[18:20]))
	}
	return nil
}

func (k *Kernel) readVersion(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading VERSION: %w", err)
	}
	for line := range strings.Lines(string(b)) {
		key, val, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok {
			continue
		}
		switch key {
		case "package":
			k.Package = val
		case "version":
			k.Version = val
		case "release":
			k.Release = val
		}
	}
	if k.Package == "" || k.Version == "" || k.Release == "" {
		return fmt.Errorf("VERSION %s lacks a package=, version= or release= line", path)
	}
	return nil
}

func (k *Kernel) readModules(dir string) error {
	list := filepath.Join(dir, "modules.list")
	f, err := os.Open(list)
	if err != nil {
		return fmt.Errorf("reading module list: %w", err)
	}
	defer f.Close()
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		name := strings.TrimSpace(sc.Text())
		if name == "" {
			continue
		}
		if strings.ContainsRune(name, '/') || name == "." || name == ".." || !strings.HasSuffix(name, ".ko") {
			return fmt.Errorf("%s line %d: %q is not a module file name (want NAME.ko)", list, n, name)
		}
		if seen[name] {
			return fmt.Errorf("%s line %d: module %s listed twice", list, n, name)
		}
		seen[name] = true
		path := filepath.Join(dir, name)
		fi, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("%s line %d: %w", list, n, err)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s line %d: %s is not a regular file", list, n, path)
		}
		k.Modules = append(k.Modules, Module{Name: name, Path: path})
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading module list: %w", err)
	}
	if len(k.Modules) == 0 {
		return fmt.Errorf("module list %s names no module", list)
	}
	return nil
}
