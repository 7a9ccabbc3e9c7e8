package image

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Integrity of cache entries: a file the cache hands out is checked at use,
// so a truncated or altered entry (a disk that filled up under another
// tool, bit rot, a careless operator) is rebuilt instead of booting a VM
// that fails in odd ways. Each entry has a sidecar <entry>.meta written when
// it was published: its size, modification time and sha256. At every use
// the size, the modification time and (ext4) the superblock are checked;
// the first use in a process also reads the whole file against its sha256.

// metaSuffix names an entry's sidecar.
const metaSuffix = ".meta"

// ErrCorrupt is wrapped by the error for a cache entry that fails its check.
var ErrCorrupt = errors.New("cache entry is corrupted")

// entryMeta is the content of a sidecar.
type entryMeta struct {
	Size    int64  `json:"size"`
	ModTime int64  `json:"mtime_ns"`
	SHA256  string `json:"sha256"`
}

// sealEntry writes the sidecar of the just-published entry path; the key
// lock of path is held. An entry without one is checked the legacy way
// (see checkEntry), so a failure here costs only the stronger check.
func (c *Cache) sealEntry(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("sealing %s: %w", path, err)
	}
	sum, err := fileSHA256(path)
	if err != nil {
		return fmt.Errorf("sealing %s: %w", path, err)
	}
	b, _ := json.Marshal(entryMeta{Size: fi.Size(), ModTime: fi.ModTime().UnixNano(), SHA256: sum})
	if err := c.writeSmallAtomic(path+metaSuffix, b); err != nil {
		return fmt.Errorf("sealing %s: %w", path, err)
	}
	c.mu.Lock()
	c.verifiedAt[path] = time.Now()
	c.mu.Unlock()
	return nil
}

// writeSmallAtomic writes b to final through a temporary file in the cache
// tmp directory (fsync, rename, fsync of the directory).
func (c *Cache) writeSmallAtomic(final string, b []byte) error {
	f, err := os.CreateTemp(filepath.Join(c.dir, "tmp"), filepath.Base(final)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op once renamed
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	syncDir(filepath.Dir(final))
	return nil
}

// checkEntry reports whether the entry path is present and whole; the key
// lock of path is held. A corrupted entry is removed (with its sidecar) and
// reported as absent, so the caller makes it again; VMs that have it open
// keep their copy.
func (c *Cache) checkEntry(path string) (bool, error) {
	ok, err := exists(path)
	if err != nil || !ok {
		return ok, err
	}
	why := c.verify(path)
	if why == "" {
		return true, nil
	}
	c.log.Warn("cache entry corrupted: removing it to make it again", "step", "verify", "path", path, "problem", why)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("%s: %w (%s), and removing it failed: %v", path, ErrCorrupt, why, err)
	}
	_ = os.Remove(path + metaSuffix)
	c.mu.Lock()
	delete(c.verifiedAt, path)
	c.corrupt++
	c.mu.Unlock()
	return false, nil
}

// verify returns what is wrong with the entry path ("" when nothing).
func (c *Cache) verify(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return err.Error()
	}
	if strings.HasSuffix(path, ".ext4") {
		if why := checkExt4(path, fi.Size()); why != "" {
			return why
		}
	}
	b, err := os.ReadFile(path + metaSuffix)
	if errors.Is(err, fs.ErrNotExist) {
		// Made before sidecars existed (or the sealing failed): the
		// structural check passed; seal it now so the next use checks more.
		if err := c.sealEntry(path); err != nil {
			c.log.Warn("sealing cache entry", "path", path, "err", err)
		}
		return ""
	}
	var m entryMeta
	if err != nil || json.Unmarshal(b, &m) != nil || m.SHA256 == "" {
		return "its sidecar " + path + metaSuffix + " is unreadable"
	}
	if fi.Size() != m.Size {
		return fmt.Sprintf("%d bytes, sealed with %d", fi.Size(), m.Size)
	}
	if fi.ModTime().UnixNano() != m.ModTime {
		return fmt.Sprintf("modified at %s after it was sealed", fi.ModTime().UTC().Format(time.RFC3339Nano))
	}
	c.mu.Lock()
	_, done := c.verifiedAt[path]
	c.mu.Unlock()
	if done {
		return ""
	}
	sum, err := fileSHA256(path)
	if err != nil {
		return err.Error()
	}
	if sum != m.SHA256 {
		return "content does not match its sha256 " + m.SHA256
	}
	c.mu.Lock()
	c.verifiedAt[path] = time.Now()
	c.mu.Unlock()
	return ""
}

// Corrupted is how many corrupted entries this cache found and removed.
func (c *Cache) Corrupted() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.corrupt
}

// checkExt4 returns what is wrong with the ext4 image path of size bytes
// at a glance: its superblock's magic, and a block count that fits the file
// (a truncated image fails here).
func checkExt4(path string, size int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, ext4SuperOffset); err != nil {
		return "no ext4 superblock: " + err.Error()
	}
	return ext4SuperblockProblem(sb, size)
}

// ext4SuperblockProblem checks the 1024-byte superblock sb of an image of
// size bytes.
func ext4SuperblockProblem(sb []byte, size int64) string {
	if len(sb) < 1024 {
		return "short superblock"
	}
	if binary.LittleEndian.Uint16(sb[0x38:]) != ext4Magic {
		return "no ext4 superblock magic"
	}
	logBlock := binary.LittleEndian.Uint32(sb[0x18:])
	if logBlock > 6 { // 64 KiB is ext4's largest block
		return fmt.Sprintf("block size 2^%d KiB is impossible", logBlock)
	}
	blocks := uint64(binary.LittleEndian.Uint32(sb[0x4:]))
	const incompat64bit = 0x80
	if binary.LittleEndian.Uint32(sb[0x60:])&incompat64bit != 0 {
		blocks |= uint64(binary.LittleEndian.Uint32(sb[0x150:])) << 32
	}
	if blocks > 1<<48 {
		return fmt.Sprintf("%d blocks is impossible", blocks)
	}
	need := blocks * (1024 << logBlock)
	if uint64(size) < need {
		return fmt.Sprintf("truncated: %d bytes, the file system spans %d", size, need)
	}
	return ""
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
