package ignite

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/faasvm/appliance/guest/protocol"
)

// unitValues parses a systemd unit file into key → values (a key may
// repeat), ignoring sections and comments.
func unitValues(t *testing.T, rel string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(repoFile(rel))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for l := range strings.Lines(string(b)) {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, "[") {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf("%s: line %q is not key=value", rel, l)
		}
		out[k] = append(out[k], v)
	}
	return out
}

// TestGuestUnitsMatchEngine checks that the units in the Ignite runtime
// images use the paths the engine copies files to, the data port it hands
// the gateway and the control port it health-checks.
func TestGuestUnitsMatchEngine(t *testing.T) {
	agent := unitValues(t, "guest/ignite/faas-agent.service")
	mount := unitValues(t, "guest/ignite/function.mount")
	exec := strings.Fields(strings.Join(agent["ExecStart"], " "))
	flag := func(name string) string {
		for i, a := range exec {
			if a == name && i+1 < len(exec) {
				return exec[i+1]
			}
		}
		return ""
	}
	checks := []struct {
		what      string
		got, want string
	}{
		{"agent binary", first(exec), GuestAgentPath},
		{"agent -config", flag("-config"), GuestConfigPath},
		{"agent -code", flag("-code"), protocol.CodeDir},
		{"agent -listen", flag("-listen"), "0.0.0.0:" + strconv.Itoa(protocol.AgentPort)},
		{"agent -control-listen", flag("-control-listen"), "0.0.0.0:" + strconv.Itoa(protocol.ControlPort)},
		{"agent condition", strings.Join(agent["ConditionPathExists"], " "), GuestConfigPath},
		{"agent needs the code", strings.Join(agent["Requires"], " "), "function.mount"},
		{"agent ends the vm", strings.Join(agent["SuccessAction"], " ") + "/" + strings.Join(agent["FailureAction"], " "), "reboot/reboot"},
		{"mount what", strings.Join(mount["What"], " "), GuestCodeImage},
		{"mount where", strings.Join(mount["Where"], " "), protocol.CodeDir},
		{"mount unit name", "function.mount", strings.TrimPrefix(protocol.CodeDir, "/") + ".mount"},
		{"mount options", strings.Join(mount["Options"], " "), "ro,loop,nodev,nosuid"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.what, c.got, c.want)
		}
	}
	docker, err := os.ReadFile(repoFile("guest/ignite/Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"COPY faas-agent.service function.mount /etc/systemd/system/", "systemctl enable faas-agent.service", "systemd-sysv"} {
		if !strings.Contains(string(docker), w) {
			t.Errorf("guest/ignite/Dockerfile does not contain %q", w)
		}
	}
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}
