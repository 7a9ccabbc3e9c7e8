package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/faasvm/appliance/guest/protocol"
)

// ext4 superblock layout (the superblock starts 1024 bytes into the disk).
const (
	superblockOffset = 1024
	ext4MagicOffset  = superblockOffset + 0x38
	ext4LabelOffset  = superblockOffset + 0x78
	ext4LabelSize    = 16
	ext4Magic        = 0xEF53
)

type diskKind int

const (
	diskUnknown diskKind = iota
	diskRoot
	diskCode
	diskConfig
	diskDeps
)

// disks are the guest's block devices, found by content.
type disks struct {
	root, code, config string // device paths
	deps               string // device path of the optional dependency disk
	configData         []byte // the config disk's content
}

// complete reports whether every disk is found: the dependency disk too
// when the config says one is attached.
func (d disks) complete() bool {
	return d.root != "" && d.code != "" && d.config != "" && (d.deps != "" || !d.wantsDeps())
}

// wantsDeps reports whether the config disk (once found) says a
// dependency disk is attached.
func (d disks) wantsDeps() bool {
	if d.configData == nil {
		return false
	}
	cfg, err := protocol.DecodeDisk(d.configData)
	return err == nil && cfg.Deps
}

// missing names what has not been found yet.
func (d disks) missing() []string {
	var m []string
	if d.root == "" {
		m = append(m, "rootfs (ext4 label "+protocol.RootFSLabel+")")
	}
	if d.code == "" {
		m = append(m, "code (ext4 label "+protocol.CodeLabel+")")
	}
	if d.config == "" {
		m = append(m, "config (magic "+strings.TrimSpace(protocol.ConfigMagic)+")")
	}
	if d.deps == "" && d.wantsDeps() {
		m = append(m, "dependencies (ext4 label "+protocol.DepsLabel+")")
	}
	return m
}

// ext4Label returns the volume label of the ext4 filesystem whose first
// bytes (at least 2 KiB) are head, or false if head is not one.
func ext4Label(head []byte) (string, bool) {
	if len(head) < superblockOffset+1024 {
		return "", false
	}
	if binary.LittleEndian.Uint16(head[ext4MagicOffset:]) != ext4Magic {
		return "", false
	}
	label := head[ext4LabelOffset : ext4LabelOffset+ext4LabelSize]
	if i := bytes.IndexByte(label, 0); i >= 0 {
		label = label[:i]
	}
	return string(label), true
}

// identifyDisk says what a disk is from its first bytes.
func identifyDisk(head []byte) diskKind {
	if bytes.HasPrefix(head, []byte(protocol.ConfigMagic)) {
		return diskConfig
	}
	switch label, ok := ext4Label(head); {
	case !ok:
		return diskUnknown
	case label == protocol.RootFSLabel:
		return diskRoot
	case label == protocol.CodeLabel:
		return diskCode
	case label == protocol.DepsLabel:
		return diskDeps
	}
	return diskUnknown
}

// readHead reads up to the config disk's size from the start of a device.
func readHead(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, protocol.ConfigDiskSize)
	n, err := io.ReadFull(f, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return buf[:n], nil
}

// scanDisks looks at every virtio disk (vd*) listed in sysBlock, reading its
// device node in devDir. A disk that cannot be read yet (no node, an I/O
// error) is skipped and its problem returned, so the caller can scan again;
// two disks claiming one role is an error.
func scanDisks(sysBlock, devDir string) (disks, []error, error) {
	var d disks
	var problems []error
	entries, err := os.ReadDir(sysBlock)
	if err != nil {
		return d, nil, fmt.Errorf("listing block devices: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, "vd") {
			continue
		}
		dev := filepath.Join(devDir, name)
		head, err := readHead(dev)
		if err != nil {
			problems = append(problems, err) // e.g. devtmpfs has not created the node yet
			continue
		}
		var slot *string
		switch identifyDisk(head) {
		case diskRoot:
			slot = &d.root
		case diskCode:
			slot = &d.code
		case diskConfig:
			slot = &d.config
			d.configData = head
		case diskDeps:
			slot = &d.deps
		default:
			continue
		}
		if *slot != "" {
			return d, nil, fmt.Errorf("disks %s and %s both look like the same disk", *slot, dev)
		}
		*slot = dev
	}
	return d, problems, nil
}

// waitForDisks scans until the rootfs, code and config disks are all found,
// polling every poll, or fails when ctx ends saying what is missing.
func waitForDisks(ctx context.Context, sysBlock, devDir string, poll time.Duration) (disks, error) {
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		d, problems, err := scanDisks(sysBlock, devDir)
		if err != nil {
			return d, err
		}
		if d.complete() {
			return d, nil
		}
		select {
		case <-ctx.Done():
			seen, _ := filepath.Glob(filepath.Join(sysBlock, "vd*"))
			for i, s := range seen {
				seen[i] = filepath.Base(s)
			}
			slices.Sort(seen)
			return d, fmt.Errorf("waiting for disks: missing %s (virtio disks present: %v): %w",
				strings.Join(d.missing(), ", "), seen, errors.Join(append(problems, ctx.Err())...))
		case <-tick.C:
		}
	}
}
