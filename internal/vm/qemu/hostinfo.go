package qemu

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// parseTSCKHz reads the first "cpu MHz" line of /proc/cpuinfo content and
// returns the rate in kHz, as the kernel's tsc_early_khz wants it.
func parseTSCKHz(r io.Reader) (int, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(key) != "cpu MHz" {
			continue
		}
		mhz, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			return 0, fmt.Errorf("parsing cpu MHz %q: %w", strings.TrimSpace(val), err)
		}
		if mhz <= 0 || mhz > 1e6 {
			return 0, fmt.Errorf("cpu MHz %v is out of range", mhz)
		}
		return int(math.Round(mhz * 1000)), nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("reading cpuinfo: %w", err)
	}
	return 0, errors.New("no cpu MHz line in cpuinfo")
}

// parseHostForward finds, in the output of the HMP command "info usernet",
// the host port of the TCP forward of netdev netdevID to guestPort.
//
// QEMU 7.2 prints one section per user-mode netdev:
//
//	Hub -1 (n0):
//	  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ
//	  TCP[HOST_FORWARD]   8       127.0.0.1 37975       10.0.2.15  8080     0     0
//
// (older releases say "VLAN" instead of "Hub"; lines end in \r\n).
func parseHostForward(out, netdevID string, guestPort int) (int, error) {
	section := ""
	for line := range strings.Lines(out) {
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			continue
		}
		if line[0] != ' ' && strings.HasSuffix(line, "):") {
			if i := strings.LastIndexByte(line, '('); i >= 0 {
				section = line[i+1 : len(line)-2]
			}
			continue
		}
		f := strings.Fields(line)
		if section != netdevID || len(f) < 6 || f[0] != "TCP[HOST_FORWARD]" {
			continue
		}
		if f[5] != strconv.Itoa(guestPort) {
			continue
		}
		port, err := strconv.Atoi(f[3])
		if err != nil || port < 1 || port > 65535 {
			return 0, fmt.Errorf("host forward line %q: bad host port %q", strings.TrimSpace(line), f[3])
		}
		return port, nil
	}
	return 0, fmt.Errorf("no TCP host forward to guest port %d for netdev %s in %q", guestPort, netdevID, out)
}
