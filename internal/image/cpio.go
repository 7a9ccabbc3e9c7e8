package image

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"math"
	"path"
	"slices"
	"strings"
)

// The newc ("new ASCII", magic 070701) cpio format the kernel unpacks as an
// initramfs: each entry is a 110-byte ASCII header of thirteen 8-digit hex
// fields, the NUL-terminated name, padding to 4 bytes, the data, padding to
// 4 bytes. The archive ends with the entry "TRAILER!!!".
// See the kernel's Documentation/driver-api/early-userspace/buffer-format.rst.

const (
	cpioMagic    = "070701"
	cpioTrailer  = "TRAILER!!!"
	cpioHeadSize = 110
)

// File type bits of a cpio mode (as in stat's st_mode).
const (
	cpioTypeDir     = 0o040000
	cpioTypeRegular = 0o100000
	cpioTypeSymlink = 0o120000
	cpioTypeChar    = 0o020000
)

// cpioEntry is one member of a cpio archive.
type cpioEntry struct {
	// Name without a leading slash, e.g. "lib/modules/virtio.ko".
	Name string
	// Mode is the type bits and the permissions.
	Mode uint32
	// Data is a regular file's content or a symlink's target.
	Data []byte
	// RdevMajor and RdevMinor are a device node's numbers.
	RdevMajor, RdevMinor uint32
}

// writeCPIO writes entries as a newc archive. The output depends only on
// the entries: they are sorted by name, inode numbers are their position
// in that order (from 1), and every owner, time and device field is 0.
func writeCPIO(w io.Writer, entries []cpioEntry) error {
	sorted := slices.Clone(entries)
	slices.SortFunc(sorted, func(a, b cpioEntry) int { return cmp.Compare(a.Name, b.Name) })
	bw := bufio.NewWriter(w)
	for i, e := range sorted {
		if e.Name == "" || e.Name == "." || e.Name == cpioTrailer || path.Clean(e.Name) != e.Name || strings.ContainsRune(e.Name, 0) ||
			strings.HasPrefix(e.Name, "/") || strings.HasPrefix(e.Name, "../") || e.Name == ".." {
			return fmt.Errorf("cpio entry name %q is invalid", e.Name)
		}
		if int64(len(e.Data)) > math.MaxUint32 {
			return fmt.Errorf("cpio entry %s is too large for the newc format (%d bytes)", e.Name, len(e.Data))
		}
		if i > 0 && sorted[i-1].Name == e.Name {
			return fmt.Errorf("cpio entry %s appears twice", e.Name)
		}
		nlink := uint32(1)
		if e.Mode&0o170000 == cpioTypeDir {
			nlink = 2
		}
		writeCPIOEntry(bw, uint32(i+1), nlink, e)
	}
	writeCPIOEntry(bw, 0, 1, cpioEntry{Name: cpioTrailer})
	// bufio.Writer keeps the first write error and Flush returns it.
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing cpio: %w", err)
	}
	return nil
}

func writeCPIOEntry(w *bufio.Writer, ino, nlink uint32, e cpioEntry) {
	fields := [13]uint32{
		ino,
		e.Mode,
		0, // uid
		0, // gid
		nlink,
		0, // mtime
		uint32(len(e.Data)),
		0, 0, // device of the file system holding the file
		e.RdevMajor, e.RdevMinor,
		uint32(len(e.Name) + 1), // name size with its NUL
		0,                       // checksum (unused by newc)
	}
	w.WriteString(cpioMagic)
	for _, f := range fields {
		fmt.Fprintf(w, "%08X", f)
	}
	w.WriteString(e.Name)
	w.WriteByte(0)
	writePad(w, cpioHeadSize+len(e.Name)+1)
	w.Write(e.Data)
	writePad(w, len(e.Data))
}

// writePad writes the NULs that bring n up to a multiple of 4.
func writePad(w *bufio.Writer, n int) {
	for range (4 - n%4) % 4 {
		w.WriteByte(0)
	}
}
