package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Size is a number of bytes.
//
// ParseSize reads "1048576", "512KB", "10MB", "1GiB" or "2 TB". Units are
// binary whatever their spelling: KB, K and KiB all mean 1024 bytes, as in
// QEMU's -m and Ignite's sizes.
type Size int64

// Common sizes.
const (
	KiB Size = 1 << 10
	MiB Size = 1 << 20
	GiB Size = 1 << 30
	TiB Size = 1 << 40
)

var errSizeSyntax = errors.New("is not a size such as 512KB, 10MB or 1GiB")

// ParseSize parses a size such as "10MB" (see Size).
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, errSizeSyntax
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w (too large)", errSizeSyntax)
	}
	var unit Size
	switch strings.ToLower(strings.TrimSpace(t[i:])) {
	case "", "b":
		unit = 1
	case "k", "kb", "kib":
		unit = KiB
	case "m", "mb", "mib":
		unit = MiB
	case "g", "gb", "gib":
		unit = GiB
	case "t", "tb", "tib":
		unit = TiB
	default:
		return 0, errSizeSyntax
	}
	if n > math.MaxInt64/int64(unit) {
		return 0, fmt.Errorf("%w (too large)", errSizeSyntax)
	}
	return Size(n) * unit, nil
}

// String renders s in the largest binary unit that divides it exactly,
// e.g. "10MiB", "1536KiB", "100B".
func (s Size) String() string {
	for _, u := range []struct {
		size Size
		name string
	}{{TiB, "TiB"}, {GiB, "GiB"}, {MiB, "MiB"}, {KiB, "KiB"}} {
		if s != 0 && s%u.size == 0 {
			return strconv.FormatInt(int64(s/u.size), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(s), 10) + "B"
}
