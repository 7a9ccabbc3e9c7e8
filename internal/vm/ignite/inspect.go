package ignite

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
)

// vmInfo is what the engine needs from `ignite inspect vm`.
type vmInfo struct {
	IP          net.IP // the VM's first address on Ignite's network
	ContainerID string // the sandbox container (Status.Runtime.ID)
}

// parseInspect reads the JSON `ignite inspect vm UID -o json` prints (a
// v1alpha4 VM object) with Ignite's own decoder and checks that it is the
// VM asked for and has an IPv4 address.
func parseInspect(out []byte, uid string) (vmInfo, error) {
	if len(bytes.TrimSpace(out)) == 0 {
		return vmInfo{}, errors.New("ignite inspect printed nothing")
	}
	v, err := decodeVMConfig(out)
	if err != nil {
		return vmInfo{}, fmt.Errorf("parsing ignite inspect output: %w", err)
	}
	if string(v.UID) != uid {
		return vmInfo{}, fmt.Errorf("ignite inspect answered for vm %q, want %q", v.UID, uid)
	}
	var info vmInfo
	if v.Status.Runtime != nil {
		info.ContainerID = v.Status.Runtime.ID
	}
	if v.Status.Network != nil {
		for _, ip := range v.Status.Network.IPAddresses {
			if ip4 := ip.To4(); ip4 != nil {
				info.IP = ip4
				break
			}
		}
	}
	if info.IP == nil {
		return info, fmt.Errorf("vm %s has no IPv4 address in ignite inspect's status.network.ipAddresses", uid)
	}
	return info, nil
}

// vmState is what `ignite ps` says about one VM.
type vmState int

const (
	stateGone    vmState = iota // Ignite does not know the VM (any more)
	stateRunning                // its sandbox container runs
	stateStopped                // it exists but does not run
)

func (s vmState) String() string {
	switch s {
	case stateRunning:
		return "running"
	case stateStopped:
		return "stopped"
	}
	return "gone"
}

// isLogLine reports whether l is one of Ignite's log lines (logrus text
// format), which share stdout with the output proper.
func isLogLine(l string) bool {
	return strings.HasPrefix(l, `time="`) && strings.Contains(l, " level=")
}

// parseStatus reads the output of statusArgs: "true", "false" or nothing.
func parseStatus(out []byte) (vmState, error) {
	var lines []string
	for l := range strings.Lines(string(out)) {
		if l = strings.TrimSpace(l); l != "" && !isLogLine(l) {
			lines = append(lines, l)
		}
	}
	switch {
	case len(lines) == 0:
		return stateGone, nil
	case len(lines) > 1:
		return 0, fmt.Errorf("ignite ps matched %d vms, want one: %q", len(lines), strings.Join(lines, " | "))
	case lines[0] == "true":
		return stateRunning, nil
	case lines[0] == "false":
		return stateStopped, nil
	}
	return 0, fmt.Errorf("parsing ignite ps output: %q is not true or false", lines[0])
}

// parseList reads the output of listArgs and returns the UIDs of the VMs
// whose owner label is owner.
func parseList(out []byte, owner string) ([]string, error) {
	var uids []string
	for l := range strings.Lines(string(out)) {
		l = strings.TrimSpace(l)
		if l == "" || isLogLine(l) {
			continue
		}
		uid, label, _ := strings.Cut(l, " ")
		if !uidPattern(uid) {
			return nil, fmt.Errorf("parsing ignite ps output: line %q does not start with a vm uid", l)
		}
		if label == owner {
			uids = append(uids, uid)
		}
	}
	return uids, nil
}

// uidPattern reports whether s looks like an Ignite UID (16 characters of
// a-z and 0-9).
func uidPattern(s string) bool {
	if len(s) != 16 {
		return false
	}
	for _, c := range s {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}
