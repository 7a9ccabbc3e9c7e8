package image

import (
	"context"
	"encoding/binary"
	"os"
	"strings"
	"testing"
	"time"
)

func TestCorruptedCodeDiskIsRebuilt(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		corrupt func(t *testing.T, path string)
		// fresh: checked by a new Cache (a restarted appliance), which
		// reads the whole file once.
		fresh bool
	}{
		{"truncated", func(t *testing.T, p string) {
			if err := os.Truncate(p, 64<<10); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"bytes flipped", func(t *testing.T, p string) { flip(t, p, 300<<10, false) }, false},
		{"bytes flipped, modification time put back", func(t *testing.T, p string) { flip(t, p, 300<<10, true) }, true},
		{"superblock zeroed, modification time put back", func(t *testing.T, p string) { flip(t, p, ext4MagicOffset, true) }, false},
		{"sidecar garbled", func(t *testing.T, p string) {
			if err := os.WriteFile(p+metaSuffix, []byte("{"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCache(t, "", nil)
			src := writeCodeTree(t)
			path, err := c.CodeDisk(ctx, src)
			if err != nil {
				t.Fatal(err)
			}
			tc.corrupt(t, path)
			if tc.fresh {
				c = newTestCache(t, c.Dir(), nil)
			}
			again, err := c.CodeDisk(ctx, src)
			if err != nil {
				t.Fatalf("CodeDisk after corruption: %v", err)
			}
			if again != path {
				t.Fatalf("path: got %s, want %s", again, path)
			}
			if c.Corrupted() != 1 {
				t.Errorf("corrupted entries found: got %d, want 1", c.Corrupted())
			}
			if why := c.verify(path); why != "" {
				t.Errorf("the rebuilt disk fails its check: %s", why)
			}
			if fi, err := os.Stat(path); err != nil || fi.Size() < 1<<20 {
				t.Errorf("the rebuilt disk: %v, %v", fi, err)
			}
		})
	}
}

func TestIntactEntryIsNotRebuilt(t *testing.T) {
	ctx := context.Background()
	c := newTestCache(t, "", nil)
	src := writeCodeTree(t)
	path, err := c.CodeDisk(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(path)
	for _, cc := range []*Cache{c, newTestCache(t, c.Dir(), nil)} {
		if _, err := cc.CodeDisk(ctx, src); err != nil {
			t.Fatal(err)
		}
		if cc.Corrupted() != 0 {
			t.Errorf("an intact entry was taken for corrupted")
		}
	}
	after, _ := os.Stat(path)
	if !os.SameFile(before, after) {
		t.Errorf("an intact entry was made again")
	}
	// An entry without a sidecar (made by an older appliance) passes its
	// structural check and gets sealed.
	if err := os.Remove(path + metaSuffix); err != nil {
		t.Fatal(err)
	}
	if _, err := newTestCache(t, c.Dir(), nil).CodeDisk(ctx, src); err != nil {
		t.Fatal(err)
	}
	if !present(path + metaSuffix) {
		t.Errorf("a legacy entry was not sealed at use")
	}
}

// flip inverts 16 bytes of path at off, putting the modification time back
// when keepTime (the sidecar's time check then passes).
func flip(t *testing.T, path string, off int64, keepTime bool) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 16)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] ^= 0xff
	}
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	f.Close()
	os.Chmod(path, 0o444)
	if keepTime {
		if err := os.Chtimes(path, time.Now(), fi.ModTime()); err != nil {
			t.Fatal(err)
		}
	}
}

func TestExt4SuperblockProblem(t *testing.T) {
	sb := func(logBlock, blocks uint32, hi uint32, bit64 bool) []byte {
		b := make([]byte, 1024)
		binary.LittleEndian.PutUint16(b[0x38:], ext4Magic)
		binary.LittleEndian.PutUint32(b[0x18:], logBlock)
		binary.LittleEndian.PutUint32(b[0x4:], blocks)
		if bit64 {
			binary.LittleEndian.PutUint32(b[0x60:], 0x80)
			binary.LittleEndian.PutUint32(b[0x150:], hi)
		}
		return b
	}
	for _, tc := range []struct {
		name string
		sb   []byte
		size int64
		want string // substring; "" for no problem
	}{
		{"whole", sb(2, 1024, 0, false), 4 << 20, ""},
		{"larger file", sb(2, 1024, 0, false), 5 << 20, ""},
		{"truncated", sb(2, 1024, 0, false), 4<<20 - 1, "truncated"},
		{"64-bit count", sb(2, 0, 1, true), 4 << 20, "truncated"},
		{"64-bit count ignored without the feature", sb(2, 0, 1, false), 4 << 20, ""},
		{"no magic", make([]byte, 1024), 4 << 20, "magic"},
		{"short", []byte{1, 2}, 4 << 20, "short"},
		{"impossible block size", sb(40, 1, 0, false), 4 << 20, "impossible"},
	} {
		got := ext4SuperblockProblem(tc.sb, tc.size)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}
