package controller

import (
	"bytes"
	"io"
	"os"
)

// tailBytes bounds how much of a console log is read to find its last lines.
const tailBytes = 256 << 10

// tail returns the last n lines of the file at path ("" if it cannot be read).
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(st.Size()-tailBytes, 0)
	b, err := io.ReadAll(io.NewSectionReader(f, off, st.Size()-off))
	if err != nil {
		return ""
	}
	return string(lastLines(b, n))
}

func lastLines(b []byte, n int) []byte {
	b = bytes.TrimRight(b, "\n")
	i := len(b)
	for ; n > 0 && i > 0; n-- {
		j := bytes.LastIndexByte(b[:i], '\n')
		if j < 0 {
			i = 0
			break
		}
		i = j
	}
	if i > 0 {
		i++ // skip the newline itself
	}
	out := append([]byte(nil), b[i:]...)
	if len(out) > 0 {
		out = append(out, '\n')
	}
	return out
}
