package ignite

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The stand-in (testdata/standin) plays "ignite" and "docker" through
// symlinks on PATH (see newStandIn): it records every call (argv, stdin,
// and the file --config names) and answers from the scenario the test
// wrote. TestMain builds it once; a small program of its own starts in a
// millisecond, where this test binary (Ignite's packages and all) would
// take up to a second under -race.
const envStandIn = "FAAS_IGNITE_STANDIN_DIR"

// standInBin is the built stand-in, set by TestMain.
var standInBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ignite-standin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	standInBin = filepath.Join(dir, "standin")
	build := exec.Command("go", "build", "-o", standInBin, "./testdata/standin")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the ignite stand-in:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// answer is how the stand-in responds to one call.
type answer struct {
	Stdout string `json:"stdout,omitempty"`
	// StdoutFile, when set, names a file in the stand-in's directory whose
	// content is printed instead of Stdout (so the test can change the
	// answer while the engine runs).
	StdoutFile string `json:"stdoutFile,omitempty"`
	Stderr     string `json:"stderr,omitempty"`
	Exit       int    `json:"exit,omitempty"`
	Hang       bool   `json:"hang,omitempty"` // never answer: wait to be killed
}

// call is one recorded invocation.
type call struct {
	Argv   []string `json:"argv"` // argv[0] is the program's base name
	Stdin  string   `json:"stdin"`
	Config string   `json:"config,omitempty"` // content of the --config file
}

// key is the scenario key of a call: program and subcommand, e.g.
// "ignite run".
func (c call) key() string { return commandName(c.Argv[0], c.Argv[1:]) }

// standIn is the test's side of the stand-in.
type standIn struct {
	dir string // records, answers and state files
	bin string // directory on PATH holding ignite and docker
}

// newStandIn installs the stand-in as "ignite" and "docker" on PATH for
// the rest of the test.
func newStandIn(t *testing.T) *standIn {
	t.Helper()
	s := &standIn{dir: t.TempDir(), bin: t.TempDir()}
	if err := os.Mkdir(filepath.Join(s.dir, "answers"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ignite", "docker"} {
		if err := os.Symlink(standInBin, filepath.Join(s.bin, name)); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", s.bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv(envStandIn, s.dir)
	return s
}

// answer sets the answers to calls of key ("ignite run", "docker logs").
func (s *standIn) answer(t *testing.T, key string, as ...answer) {
	t.Helper()
	b, err := json.Marshal(as)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(s.dir, "answers", strings.ReplaceAll(key, " ", "_")+".json")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Remove(file + ".count")
}

// setFile writes a state file answers can print (answer.StdoutFile).
func (s *standIn) setFile(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(s.dir, name), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// calls returns every recorded call so far.
func (s *standIn) calls(t *testing.T) []call {
	t.Helper()
	f, err := os.Open(filepath.Join(s.dir, "calls.jsonl"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []call
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		var c call
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatalf("bad record %q: %v", sc.Text(), err)
		}
		out = append(out, c)
	}
	return out
}

// callsOf returns the recorded calls with the given key.
func (s *standIn) callsOf(t *testing.T, key string) []call {
	t.Helper()
	var out []call
	for _, c := range s.calls(t) {
		if c.key() == key {
			out = append(out, c)
		}
	}
	return out
}

// keys lists the keys of all recorded calls, in order.
func (s *standIn) keys(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, c := range s.calls(t) {
		out = append(out, c.key())
	}
	return out
}
