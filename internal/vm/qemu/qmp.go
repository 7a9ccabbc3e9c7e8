package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
)

// qmpError is an error reply from QEMU ({"error": {"class", "desc"}}).
type qmpError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *qmpError) Error() string { return fmt.Sprintf("qmp error %s: %s", e.Class, e.Desc) }

// qmpMessage is any message QEMU sends on a QMP socket: the greeting, a
// command's reply or an asynchronous event.
type qmpMessage struct {
	Greeting json.RawMessage `json:"QMP"`
	Return   json.RawMessage `json:"return"`
	Error    *qmpError       `json:"error"`
	Event    string          `json:"event"`
	ID       *uint64         `json:"id"`
}

// qmpClient is one QMP session. Commands run one at a time; asynchronous
// events are skipped. After an I/O error or a cancelled command the
// session is broken and every later call fails: open a new one.
type qmpClient struct {
	conn   net.Conn
	r      *bufio.Reader
	nextID uint64
	broken error
}

// dialQMP connects to the QMP socket at path, reads the greeting and leaves
// capabilities negotiation mode.
func dialQMP(ctx context.Context, path string) (*qmpClient, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("connecting to qmp: %w", err)
	}
	c := &qmpClient{conn: conn, r: bufio.NewReader(conn)}
	err = c.withContext(ctx, func() error {
		m, err := c.read()
		if err != nil {
			return fmt.Errorf("reading qmp greeting: %w", err)
		}
		if m.Greeting == nil {
			return errors.New("reading qmp greeting: first message is not a greeting")
		}
		return nil
	})
	if err == nil {
		_, err = c.execute(ctx, "qmp_capabilities", nil)
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// Close ends the session.
func (c *qmpClient) Close() error { return c.conn.Close() }

// execute runs command with args (nil for none) and returns its "return"
// value.
func (c *qmpClient) execute(ctx context.Context, command string, args any) (json.RawMessage, error) {
	return c.executeFD(ctx, command, args, nil)
}

// executeFD is execute, passing f's descriptor with the command (SCM_RIGHTS),
// as QMP getfd wants; f nil passes none.
func (c *qmpClient) executeFD(ctx context.Context, command string, args any, f *os.File) (json.RawMessage, error) {
	if c.broken != nil {
		return nil, fmt.Errorf("qmp %s: session unusable after an earlier failure: %w", command, c.broken)
	}
	c.nextID++
	id := c.nextID
	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        uint64 `json:"id"`
	}{command, args, id}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("qmp %s: encoding arguments: %w", command, err)
	}
	var ret json.RawMessage
	err = c.withContext(ctx, func() error {
		if err := c.write(append(b, '\n'), f); err != nil {
			return err
		}
		for {
			m, err := c.read()
			if err != nil {
				return err
			}
			if m.Event != "" || m.ID == nil || *m.ID != id {
				continue // an event, or the late reply to an abandoned command
			}
			if m.Error != nil {
				ret = nil
				return m.Error
			}
			ret = m.Return
			return nil
		}
	})
	if err != nil {
		var qe *qmpError
		if !errors.As(err, &qe) {
			c.broken = err
		}
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	return ret, nil
}

// write sends b, with f's descriptor when f is not nil.
func (c *qmpClient) write(b []byte, f *os.File) error {
	if f == nil {
		_, err := c.conn.Write(b)
		return err
	}
	uc, ok := c.conn.(*net.UnixConn)
	if !ok {
		return errors.New("passing a descriptor needs a unix socket")
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var werr error
	if err := rc.Control(func(fd uintptr) {
		_, _, werr = uc.WriteMsgUnix(b, syscall.UnixRights(int(fd)), nil)
	}); err != nil {
		return err
	}
	return werr
}

// hmp runs a human monitor command and returns its text output.
func (c *qmpClient) hmp(ctx context.Context, commandLine string) (string, error) {
	ret, err := c.execute(ctx, "human-monitor-command", map[string]string{"command-line": commandLine})
	if err != nil {
		return "", err
	}
	var out string
	if err := json.Unmarshal(ret, &out); err != nil {
		return "", fmt.Errorf("qmp human-monitor-command %q: decoding output: %w", commandLine, err)
	}
	return out, nil
}

// read decodes the next message (QMP sends one JSON object per line).
func (c *qmpClient) read() (*qmpMessage, error) {
	line, err := c.r.ReadBytes('\n')
	if err != nil {
		return nil, err
	}
	var m qmpMessage
	if err := json.Unmarshal(line, &m); err != nil {
		return nil, fmt.Errorf("decoding qmp message %q: %w", line, err)
	}
	return &m, nil
}

// withContext runs fn with the connection's deadline tied to ctx, and
// reports ctx's error rather than the I/O timeout it caused.
func (c *qmpClient) withContext(ctx context.Context, fn func() error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	dl, hasDeadline := ctx.Deadline() // the zero time clears any earlier deadline
	c.conn.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)) })
	err := fn()
	stop()
	var ne net.Error
	if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
		return err
	}
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("%w (%v)", context.Cause(ctx), err)
	case hasDeadline && !time.Now().Before(dl):
		return fmt.Errorf("%w (%v)", context.DeadlineExceeded, err)
	}
	return err
}
