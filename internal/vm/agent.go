package vm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/faasvm/appliance/guest/protocol"
)

// AgentRequestTimeout bounds each request an AgentClient sends.
const AgentRequestTimeout = 2 * time.Second

// ErrSecretRefused is wrapped by AgentClient errors when the agent answered
// 403: it does not take the VM's control secret, so asking again cannot
// help.
var ErrSecretRefused = errors.New("refused the secret (403)")

// AgentClient talks to guest agents' control listeners (health,
// poweroff): every request goes to a machine's ControlEndpoint with the
// VM's control secret (protocol.ControlHeader), never to the data listener
// the gateway proxies to. It is safe for concurrent use.
type AgentClient struct {
	http *http.Client
}

// NewAgentClient returns an AgentClient sending through c, or, when c is
// nil, through a client that uses no proxy (agents are on loopback or a
// host-local bridge) and no keep-alives.
func NewAgentClient(c *http.Client) *AgentClient {
	if c == nil {
		c = &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	}
	return &AgentClient{http: c}
}

// Health asks the agent's control listener at endpoint (host:port) whether
// its handler is ready; secret is the VM's control secret. ready is true, and err nil, only on a 200. Otherwise err says why:
// no answer, a status other than 200, or a 403 (wrapping ErrSecretRefused).
// failedReason is the agent's reason when its answer says the handler
// failed to start (a 503 with status "failed"), so waiting longer is
// pointless; "" otherwise.
func (c *AgentClient) Health(ctx context.Context, endpoint, secret string) (ready bool, failedReason string, err error) {
	status, body, err := c.do(ctx, http.MethodGet, endpoint, protocol.HealthPath, secret)
	switch {
	case err != nil:
		return false, "", err
	case status == http.StatusOK:
		return true, "", nil
	case status == http.StatusForbidden:
		return false, "", fmt.Errorf("agent at %s %w", endpoint, ErrSecretRefused)
	case status == http.StatusServiceUnavailable:
		failedReason = HandlerFailed(body)
	}
	return false, failedReason, fmt.Errorf("health check answered %d", status)
}

// Poweroff asks the agent's control listener at endpoint to power the guest
// off; secret is the VM's control secret. It fails at
// once when nothing listens or the agent refuses, so the caller waits for
// the VM to stop only when the guest may really be shutting down. A
// request that breaks off mid-answer (the guest may be going down) is not
// an error; it is logged to log at debug level.
func (c *AgentClient) Poweroff(ctx context.Context, log *slog.Logger, endpoint, secret string) error {
	status, _, err := c.do(ctx, http.MethodPost, endpoint, protocol.PoweroffPath, secret)
	var opErr *net.OpError
	switch {
	case errors.As(err, &opErr) && opErr.Op == "dial":
		// Nothing listens: the guest cannot power itself off.
		return err
	case err != nil:
		// The guest may have gone down mid-answer: wait and see.
		log.Debug("poweroff request ended early", "error", err)
		return nil
	case status/100 != 2:
		return fmt.Errorf("poweroff answered %d", status)
	}
	return nil
}

// RestoreTimeout bounds a Restore request: the agent waits up to 5 s for
// the handler's on_restore hook before it answers.
const RestoreTimeout = 10 * time.Second

// Restore re-keys a VM restored from a snapshot: it posts r to the agent's
// control listener at endpoint with secret, the control secret the VM had
// when it was snapshotted (protocol.RestorePath). On a 403 the error wraps
// ErrSecretRefused.
func (c *AgentClient) Restore(ctx context.Context, endpoint, secret string, r *protocol.Restore) (*protocol.RestoreResult, error) {
	body, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encoding restore request: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, RestoreTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+endpoint+protocol.RestorePath, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set(protocol.ControlHeader, secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode == http.StatusForbidden:
		return nil, fmt.Errorf("agent at %s %w", endpoint, ErrSecretRefused)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("restore answered %d: %s", resp.StatusCode, bytes.TrimSpace(answer))
	}
	var res protocol.RestoreResult
	if err := json.Unmarshal(answer, &res); err != nil {
		return nil, fmt.Errorf("decoding the restore answer: %w", err)
	}
	return &res, nil
}

// do sends a bodiless request with the VM's control secret to the agent and
// returns the response status and (the first 64 KiB of) its body. Once a
// status has arrived it counts: a body cut off (the guest going down) is
// returned as far as it was read.
func (c *AgentClient) do(ctx context.Context, method, endpoint, path, secret string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, AgentRequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+endpoint+path, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set(protocol.ControlHeader, secret)
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, body, nil
}

// HandlerFailed returns the agent's reason when a health answer's body says
// the handler failed to start, "" otherwise.
func HandlerFailed(body []byte) string {
	var h struct {
		Status string `json:"status"`
		Error  string `json:"error"`
	}
	if json.Unmarshal(body, &h) != nil || h.Status != "failed" {
		return ""
	}
	if h.Error == "" {
		return "no reason given"
	}
	return h.Error
}
