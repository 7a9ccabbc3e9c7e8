// Command standin plays ignite (and docker) for the engine's tests. Run
// under the name of the program it stands in for, it appends a record of
// the call (argv, stdin, the content of the file --config names) to
// $FAAS_IGNITE_STANDIN_DIR/calls.jsonl and answers with the next of the
// answers the test wrote to answers/<program>_<subcommand>.json (the last
// one repeats). See ../../standin_test.go.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

type answer struct {
	Stdout     string `json:"stdout,omitempty"`
	StdoutFile string `json:"stdoutFile,omitempty"`
	Stderr     string `json:"stderr,omitempty"`
	Exit       int    `json:"exit,omitempty"`
	Hang       bool   `json:"hang,omitempty"`
}

type call struct {
	Argv   []string `json:"argv"`
	Stdin  string   `json:"stdin"`
	Config string   `json:"config,omitempty"`
}

func main() {
	dir := os.Getenv("FAAS_IGNITE_STANDIN_DIR")
	if dir == "" {
		fmt.Fprintln(os.Stderr, "standin: FAAS_IGNITE_STANDIN_DIR is not set")
		os.Exit(97)
	}
	os.Exit(run(dir))
}

func run(dir string) int {
	c := call{Argv: append([]string{filepath.Base(os.Args[0])}, os.Args[1:]...)}
	if in, err := io.ReadAll(os.Stdin); err == nil {
		c.Stdin = string(in)
	}
	for i, a := range os.Args {
		if a == "--config" && i+1 < len(os.Args) {
			b, _ := os.ReadFile(os.Args[i+1])
			c.Config = string(b)
		}
	}
	line, _ := json.Marshal(c)
	f, err := os.OpenFile(filepath.Join(dir, "calls.jsonl"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, "standin:", err)
		return 99
	}
	f.Write(append(line, '\n'))
	f.Close()

	a, err := nextAnswer(dir, key(c.Argv))
	if err != nil {
		fmt.Fprintln(os.Stderr, "standin:", err)
		return 98
	}
	if a.Hang {
		time.Sleep(time.Hour)
	}
	out := a.Stdout
	if a.StdoutFile != "" {
		b, _ := os.ReadFile(filepath.Join(dir, a.StdoutFile))
		out = string(b)
	}
	fmt.Fprint(os.Stdout, out)
	fmt.Fprint(os.Stderr, a.Stderr)
	return a.Exit
}

// key is "<program>_<first non-flag argument>", e.g. "ignite_run".
func key(argv []string) string {
	for _, a := range argv[1:] {
		if !strings.HasPrefix(a, "-") {
			return argv[0] + "_" + a
		}
	}
	return argv[0]
}

func nextAnswer(dir, key string) (answer, error) {
	file := filepath.Join(dir, "answers", key+".json")
	b, err := os.ReadFile(file)
	if err != nil {
		return answer{}, fmt.Errorf("no answer for %q: %w", key, err)
	}
	var as []answer
	if err := json.Unmarshal(b, &as); err != nil || len(as) == 0 {
		return answer{}, fmt.Errorf("bad answers for %q: %v", key, err)
	}
	countFile := file + ".count"
	n := 0
	if c, err := os.ReadFile(countFile); err == nil {
		n, _ = strconv.Atoi(string(c))
	}
	os.WriteFile(countFile, []byte(strconv.Itoa(n+1)), 0o600)
	return as[min(n, len(as)-1)], nil
}
