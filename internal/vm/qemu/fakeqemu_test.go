package qemu

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// Environment of the fake QEMU (the test binary run with
// FAAS_QEMU_TEST_HELPER=qemu, see TestMain).
const (
	envHelper      = "FAAS_QEMU_TEST_HELPER"
	envAgentPort   = "FAKE_QEMU_AGENT_PORT"   // data port "info usernet" reports
	envControlPort = "FAKE_QEMU_CONTROL_PORT" // control port "info usernet" reports
	envFail        = "FAKE_QEMU_FAIL"         // if set: print it to stderr and exit 1
	envQuit        = "FAKE_QEMU_QUIT"         // "error": refuse QMP quit
)

// fakeQEMUMain behaves like QEMU as far as the engine can tell: it writes
// its console to stdout, serves QMP on the listening socket it inherited
// (-chardev socket,id=qmp,fd=N), answers "info usernet" with forwards to
// $FAKE_QEMU_AGENT_PORT and $FAKE_QEMU_CONTROL_PORT and exits on "quit".
// The agent itself is an httptest server in the test process.
func fakeQEMUMain() {
	qmpFD := -1
	args := os.Args[1:]
	for i := 0; i+1 < len(args); i++ {
		if args[i] != "-chardev" || !strings.HasPrefix(args[i+1], "socket,id=qmp,") {
			continue
		}
		for _, kv := range strings.Split(args[i+1], ",") {
			if v, ok := strings.CutPrefix(kv, "fd="); ok {
				qmpFD, _ = strconv.Atoi(v)
			}
		}
	}
	if msg := os.Getenv(envFail); msg != "" {
		fmt.Fprintln(os.Stderr, msg)
		os.Exit(1)
	}
	fmt.Println("fake kernel booting\nfake agent up")
	fmt.Fprintln(os.Stderr, "fake qemu running")
	l, err := net.FileListener(os.NewFile(uintptr(qmpFD), "qmp"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "qmp socket:", err)
		os.Exit(1)
	}
	for {
		conn, err := l.Accept()
		if err != nil {
			os.Exit(1)
		}
		serveFakeQMP(conn)
	}
}

func serveFakeQMP(conn net.Conn) {
	defer conn.Close()
	fmt.Fprintln(conn, qmpGreeting)
	sc := bufio.NewScanner(conn)
	for sc.Scan() {
		var cmd struct {
			Execute string          `json:"execute"`
			ID      json.RawMessage `json:"id"`
		}
		if json.Unmarshal(sc.Bytes(), &cmd) != nil {
			return
		}
		reply := func(body string) { fmt.Fprintf(conn, "{%s, \"id\": %s}\r\n", body, cmd.ID) }
		switch cmd.Execute {
		case "qmp_capabilities":
			reply(`"return": {}`)
		case "human-monitor-command":
			out := "Hub -1 (n0):\r\n  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n" +
				"  TCP[HOST_FORWARD]   8       127.0.0.1 " + os.Getenv(envAgentPort) + "       10.0.2.15  8080     0     0\r\n" +
				"  TCP[HOST_FORWARD]   9       127.0.0.1 " + os.Getenv(envControlPort) + "       10.0.2.15  8081     0     0\r\n"
			b, _ := json.Marshal(out)
			reply(`"return": ` + string(b))
		case "quit":
			if os.Getenv(envQuit) == "error" {
				reply(`"error": {"class": "GenericError", "desc": "not today"}`)
				continue
			}
			reply(`"return": {}`)
			os.Exit(0)
		default:
			reply(`"error": {"class": "CommandNotFound", "desc": "no"}`)
		}
	}
}
