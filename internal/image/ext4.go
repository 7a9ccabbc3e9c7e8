package image

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The ext4 superblock starts 1024 bytes into the file system.
const (
	ext4SuperOffset = 1024
	ext4MagicOffset = ext4SuperOffset + 0x38
	ext4LabelOffset = ext4SuperOffset + 0x78
	ext4Magic       = 0xEF53
	ext4LabelSize   = 16
)

// ext4Maker makes ext4 images with mke2fs -d, which copies a directory
// tree (or, from e2fsprogs 1.47.1 on, a tarball) into the new file system
// without mounting anything.
type ext4Maker struct {
	mke2fs string
	log    *slog.Logger

	probe  sync.Once
	tarOK  bool
	tarWhy string
}

func newExt4Maker(log *slog.Logger) (*ext4Maker, error) {
	path, err := lookSbin("mke2fs")
	if err != nil {
		return nil, fmt.Errorf("finding mke2fs (Debian package e2fsprogs): %w", err)
	}
	return &ext4Maker{mke2fs: path, log: log}, nil
}

// lookSbin finds a program in PATH or, for users whose PATH lacks them, in
// /usr/sbin and /sbin.
func lookSbin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH, /usr/sbin or /sbin", name)
}

// ext4Image describes one image to make.
type ext4Image struct {
	// Out is the image file to write (created or overwritten).
	Out string
	// Label is the volume label.
	Label string
	// Source is a directory, or a tar file when the maker takes tarballs.
	Source string
	// Bytes is the image size; Inodes the least number of inodes.
	Bytes, Inodes int64
}

// make runs mke2fs. The images are read-only once made, so they carry no
// journal and reserve no blocks for root.
func (m *ext4Maker) make(ctx context.Context, img ext4Image) error {
	args := []string{
		"-q", "-F", "-t", "ext4",
		"-L", img.Label,
		"-N", strconv.FormatInt(img.Inodes, 10),
		"-m", "0",
		"-O", "^has_journal",
		"-d", img.Source,
		img.Out,
		strconv.FormatInt(img.Bytes/1024, 10) + "k",
	}
	cmd := exec.CommandContext(ctx, m.mke2fs, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("mke2fs %s: %w", img.Out, ctx.Err())
		}
		return fmt.Errorf("mke2fs %s: %w: %s", img.Out, err, strings.TrimSpace(string(out)))
	}
	label, err := ext4Label(img.Out)
	if err != nil {
		return fmt.Errorf("checking the image mke2fs made: %w", err)
	}
	if label != img.Label {
		return fmt.Errorf("mke2fs %s: label is %q, want %q", img.Out, label, img.Label)
	}
	return nil
}

// takesTar reports whether this mke2fs accepts a tarball for -d (e2fsprogs
// 1.47.1 and later), by trying it once on a tiny image in tmpDir.
func (m *ext4Maker) takesTar(ctx context.Context, tmpDir string) bool {
	m.probe.Do(func() {
		// The answer is kept, so a caller's cancellation must not decide it.
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		m.tarOK, m.tarWhy = m.probeTar(pctx, tmpDir)
		m.log.Info("mke2fs tarball support probed", "step", "ext4", "mke2fs", m.mke2fs, "takes_tar", m.tarOK, "detail", m.tarWhy)
	})
	return m.tarOK
}

func (m *ext4Maker) probeTar(ctx context.Context, tmpDir string) (bool, string) {
	dir, err := os.MkdirTemp(tmpDir, "mke2fs-probe-*")
	if err != nil {
		return false, err.Error()
	}
	defer os.RemoveAll(dir)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	content := []byte("probe\n")
	if err := tw.WriteHeader(&tar.Header{Name: "probe", Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
		return false, err.Error()
	}
	tw.Write(content)
	if err := tw.Close(); err != nil {
		return false, err.Error()
	}
	src := filepath.Join(dir, "probe.tar")
	if err := os.WriteFile(src, buf.Bytes(), 0o644); err != nil {
		return false, err.Error()
	}
	err = m.make(ctx, ext4Image{Out: filepath.Join(dir, "probe.ext4"), Label: "probe", Source: src, Bytes: 1 << 20, Inodes: 16})
	if err != nil {
		lines := strings.Split(strings.TrimSpace(err.Error()), "\n")
		return false, lines[len(lines)-1]
	}
	return true, "mke2fs -d accepts a tarball"
}

// imageSize is the size of an image holding content bytes: content * 1.3
// plus margin, rounded up to a MiB.
func imageSize(content, margin int64) int64 {
	const mib = 1 << 20
	n := content + content*3/10 + margin
	return (n + mib - 1) / mib * mib
}

// inodeCount is the least number of inodes for files entries, with room.
func inodeCount(files int64) int64 {
	return files + files*3/10 + 1024
}

// blockBytes is the space a file of size bytes takes in 4 KiB blocks; every
// entry takes at least one block's worth, which also covers directories.
func blockBytes(size int64) int64 {
	const block = 4096
	if size <= 0 {
		return block
	}
	return (size + block - 1) / block * block
}

// ext4Label reads the volume label of the ext4 file system in path, the way
// the guest agent identifies its disks.
func ext4Label(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sb := make([]byte, ext4LabelOffset+ext4LabelSize)
	if _, err := io.ReadFull(f, sb); err != nil {
		return "", fmt.Errorf("reading superblock of %s: %w", path, err)
	}
	if binary.LittleEndian.Uint16(sb[ext4MagicOffset:]) != ext4Magic {
		return "", fmt.Errorf("%s has no ext4 superblock magic", path)
	}
	label := sb[ext4LabelOffset:]
	if i := bytes.IndexByte(label, 0); i >= 0 {
		label = label[:i]
	}
	return string(label), nil
}
