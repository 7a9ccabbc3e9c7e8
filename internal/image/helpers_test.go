package image

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// parsedCPIO is one entry read back from a newc archive.
type parsedCPIO struct {
	ino, mode, uid, gid, nlink, mtime uint32
	rdevMajor, rdevMinor              uint32
	name                              string
	data                              []byte
}

// readCPIO parses a newc archive up to and including its trailer, and fails
// on anything the kernel would not accept (bad magic, bad padding, data
// after the trailer other than NULs).
func readCPIO(b []byte) ([]parsedCPIO, error) {
	var out []parsedCPIO
	off := 0
	for {
		if off+cpioHeadSize > len(b) {
			return nil, fmt.Errorf("offset %d: truncated header", off)
		}
		h := b[off : off+cpioHeadSize]
		if string(h[:6]) != cpioMagic {
			return nil, fmt.Errorf("offset %d: magic %q", off, h[:6])
		}
		var f [13]uint32
		for i := range f {
			v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				return nil, fmt.Errorf("offset %d: field %d: %w", off, i, err)
			}
			f[i] = uint32(v)
		}
		nameSize, fileSize := int(f[11]), int(f[6])
		nameStart := off + cpioHeadSize
		if nameStart+nameSize > len(b) || nameSize == 0 || b[nameStart+nameSize-1] != 0 {
			return nil, fmt.Errorf("offset %d: bad name", off)
		}
		name := string(b[nameStart : nameStart+nameSize-1])
		dataStart := align4(nameStart + nameSize)
		if dataStart+fileSize > len(b) {
			return nil, fmt.Errorf("entry %s: truncated data", name)
		}
		e := parsedCPIO{
			ino: f[0], mode: f[1], uid: f[2], gid: f[3], nlink: f[4], mtime: f[5],
			rdevMajor: f[9], rdevMinor: f[10], name: name,
			data: bytes.Clone(b[dataStart : dataStart+fileSize]),
		}
		out = append(out, e)
		off = align4(dataStart + fileSize)
		if name == cpioTrailer {
			if off != len(b) {
				return nil, fmt.Errorf("%d bytes after the trailer", len(b)-off)
			}
			return out, nil
		}
	}
}

func align4(n int) int { return (n + 3) &^ 3 }

// fakeELF returns a minimal x86-64 executable header, with a PT_INTERP
// program header when dynamic.
func fakeELF(t *testing.T, machine elf.Machine, dynamic bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	progs := []elf.Prog64{{Type: uint32(elf.PT_LOAD), Flags: uint32(elf.PF_R | elf.PF_X), Align: 4096}}
	if dynamic {
		progs = append(progs, elf.Prog64{Type: uint32(elf.PT_INTERP), Flags: uint32(elf.PF_R), Align: 1})
	}
	hdr := elf.Header64{
		Type: uint16(elf.ET_EXEC), Machine: uint16(machine), Version: uint32(elf.EV_CURRENT),
		Phoff: 64, Ehsize: 64, Phentsize: 56, Phnum: uint16(len(progs)),
	}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	hdr.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	hdr.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	if err := binary.Write(&buf, binary.LittleEndian, hdr); err != nil {
		t.Fatal(err)
	}
	if err := binary.Write(&buf, binary.LittleEndian, progs); err != nil {
		t.Fatal(err)
	}
	buf.WriteString("payload")
	return buf.Bytes()
}

// kernelFixture describes a fake kernel directory.
type kernelFixture struct {
	modules map[string]string // file name -> content
	list    string            // modules.list
	version string            // VERSION
	vmlinux []byte
}

func defaultKernelFixture(t *testing.T) kernelFixture {
	return kernelFixture{
		modules: map[string]string{"virtio_ring.ko": "ring", "virtio.ko": "virtio", "overlay.ko": "overlay"},
		list:    "virtio_ring.ko\nvirtio.ko\noverlay.ko\n",
		version: "package=linux-image-test\nversion=1.0-1\nrelease=6.1.0-test\n",
		vmlinux: fakeELF(t, elf.EM_X86_64, false),
	}
}

// writeKernelDir writes f into a fresh directory and returns its path.
func writeKernelDir(t *testing.T, f kernelFixture) string {
	t.Helper()
	dir := t.TempDir()
	mustMkdir(t, filepath.Join(dir, "modules"))
	if f.vmlinux != nil {
		mustWrite(t, filepath.Join(dir, "vmlinux"), string(f.vmlinux), 0o644)
	}
	if f.version != "" {
		mustWrite(t, filepath.Join(dir, "VERSION"), f.version, 0o644)
	}
	if f.list != "" {
		mustWrite(t, filepath.Join(dir, "modules", "modules.list"), f.list, 0o644)
	}
	for name, content := range f.modules {
		mustWrite(t, filepath.Join(dir, "modules", name), content, 0o644)
	}
	return dir
}

func mustWrite(t *testing.T, path, content string, perm os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil {
		t.Fatal(err)
	}
}

func mustMkdir(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
}

// testLogger sends the cache's logs to the test's output.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// newTestCache returns a cache in dir (a fresh temporary one when empty).
func newTestCache(t *testing.T, dir string, docker Docker) *Cache {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	c, err := New(Config{Dir: dir, Docker: docker, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

// debugfs runs one debugfs request against an ext4 image (read-only) and
// returns what it printed on stdout and on stderr (where it reports
// requests that fail, exiting 0 all the same).
func debugfs(t *testing.T, img, request string) (stdout, stderr string) {
	t.Helper()
	path, err := lookSbin("debugfs")
	if err != nil {
		t.Fatalf("debugfs (e2fsprogs) is needed: %v", err)
	}
	var out, errOut bytes.Buffer
	cmd := exec.Command(path, "-R", request, img)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("debugfs -R %q %s: %v\n%s", request, img, err, errOut.String())
	}
	return out.String(), errOut.String()
}

// readAll reads a file or fails the test.
func readAll(t *testing.T, r io.Reader) []byte {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
