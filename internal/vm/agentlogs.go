package vm

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/faasvm/appliance/guest/protocol"
)

// maxLogLine bounds one line of the agent's log stream.
const maxLogLine = 1 << 20

// FollowLogs reads the agent's stream of the function's output
// (protocol.LogsPath on its control listener at endpoint, with the VM's
// control secret) from the entry after seq on, calling each for every
// entry, until the stream ends, ctx ends or the agent fails. It returns
// the Seq of the last entry handed to each (seq if none), so the caller
// can resume without repeats.
func (c *AgentClient) FollowLogs(ctx context.Context, endpoint, secret string, seq uint64, each func(protocol.LogEntry)) (uint64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		"http://"+endpoint+protocol.LogsPath+"?after="+strconv.FormatUint(seq, 10), nil)
	if err != nil {
		return seq, err
	}
	req.Header.Set(protocol.ControlHeader, secret)
	resp, err := c.http.Do(req)
	if err != nil {
		return seq, fmt.Errorf("following the agent's logs: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return seq, fmt.Errorf("following the agent's logs: status %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), maxLogLine)
	for sc.Scan() {
		var e protocol.LogEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return seq, fmt.Errorf("following the agent's logs: bad entry: %w", err)
		}
		if e.Seq <= seq {
			continue // never twice
		}
		seq = e.Seq
		each(e)
	}
	if err := sc.Err(); err != nil {
		return seq, fmt.Errorf("following the agent's logs: %w", err)
	}
	return seq, nil
}
