// Package protocol is the only code shared by the host and the guest agent:
// the agent's configuration, the disk labels that identify the guest's
// block devices, and the HTTP contract between the host and the agent.
//
// The agent serves two listeners. The data listener (AgentPort) hands
// every request, whatever its path or method, to the function; it is what
// the gateway proxies /invoke to. The control listener (ControlPort) serves
// the host's own operations (HealthPath, PoweroffPath) and nothing else.
// Each has its own secret: the data secret travels with every invocation,
// the control secret only from the engine and the controller to the
// control port, so no client request can ever carry it.
package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// The agent's HTTP contract.
const (
	// AgentPort is the TCP port of the agent's data listener inside the
	// guest: every path and method goes to the function.
	AgentPort = 8080
	// ControlPort is the TCP port of the agent's control listener inside
	// the guest: HealthPath and PoweroffPath, nothing else.
	ControlPort = 8081
	// SecretHeader carries the per-VM data secret (Config.Secret) on the
	// data listener. The agent answers 403 to any request without the
	// right value, so a guest cannot call another VM, and removes it
	// before the function sees the request.
	SecretHeader = "X-Faas-Secret"
	// ControlHeader carries the per-VM control secret
	// (Config.ControlSecret) on the control listener (403 without it). The
	// data path never carries it and the gateway never learns it.
	ControlHeader = "X-Faas-Control"
	// AgentErrorHeader (value "1") marks a response whose body the agent
	// wrote itself, always JSON {"error": "..."}: a bad secret, a handler
	// that is not ready, timed out, crashed or exited non-zero. Responses
	// produced by the handler never carry it.
	AgentErrorHeader = "X-Faas-Agent-Error"
	// HealthPath (GET, control listener) answers 200 when the handler is
	// ready, 503 before.
	HealthPath = "/health"
	// PoweroffPath (POST, control listener) syncs, stops the handler and
	// powers the VM off.
	PoweroffPath = "/poweroff"
	// LogsPath (GET, control listener) streams the function's own output
	// as newline-delimited JSON LogEntry values: every kept entry whose Seq
	// is above the after= query parameter, then new ones as they are
	// written, until the client leaves.
	LogsPath = "/logs"
	// RequestIDHeader is the request id the gateway gives every invocation;
	// the agent tags the log lines written during it with the value.
	RequestIDHeader = "X-Request-Id"
	// SecretsDir is where the function's secrets appear in the guest, one
	// file per secret, mode 0400 (OpenFaaS's path).
	SecretsDir = "/var/openfaas/secrets"
	// CodeDir is where the function's code appears, read-only, in the guest.
	CodeDir = "/function"
	// DepsDir is where the dependency disk appears, read-only, in the
	// guest: DepsPython (pip --target) is on PYTHONPATH, DepsNode
	// (node_modules) on NODE_PATH.
	DepsDir    = "/deps"
	DepsPython = DepsDir + "/python"
	DepsNode   = DepsDir + "/node_modules"
)

// Handler contracts (Config.Template): how the agent and the bootstraps
// call the function.
const (
	// TemplateFaasVM is our own: handle(req) in http mode, a script that
	// prints its answer in exec mode.
	TemplateFaasVM = "faasvm"
	// TemplateOpenFaaSHTTP is OpenFaaS's python3-http / python3-flask:
	// handle(event, context).
	TemplateOpenFaaSHTTP = "openfaas-http"
	// TemplateOpenFaaSNode is OpenFaaS's node20 / node22:
	// async (event, context) with context.status().headers().succeed().
	TemplateOpenFaaSNode = "openfaas-node"
	// TemplateOpenFaaSClassic is OpenFaaS's classic python3 / node
	// templates (exec mode): handle(req) with the body on stdin, the
	// answer printed.
	TemplateOpenFaaSClassic = "openfaas-classic"
	// TemplateLambda is AWS Lambda's: fn(event, context) with an API
	// Gateway HTTP API payload 2.0 event.
	TemplateLambda = "lambda"
)

// Disk identification. The guest finds its disks by content, not by the
// order the kernel happens to probe them in.
const (
	// RootFSLabel is the ext4 volume label of a runtime root filesystem.
	RootFSLabel = "faas-root"
	// CodeLabel is the ext4 volume label of a function code snapshot.
	CodeLabel = "faas-code"
	// DepsLabel is the ext4 volume label of a function's dependency disk.
	DepsLabel = "faas-deps"
	// ConfigMagic starts the raw config disk; the JSON config follows it,
	// then NUL padding up to ConfigDiskSize.
	ConfigMagic = "FAASCFG1\n"
	// ConfigDiskSize is the size of the raw config disk image.
	ConfigDiskSize = 1 << 20
)

// Modes a function can run in.
const (
	// ModeExec runs one process per request (OpenFaaS classic watchdog).
	ModeExec = "exec"
	// ModeHTTP starts the handler once behind a per-language bootstrap.
	ModeHTTP = "http"
)

// Guest network defaults (user-mode networking).
const (
	GuestAddress = "10.0.2.15/24"
	GuestGateway = "10.0.2.2"
	GuestDNS     = "10.0.2.3"
)

// Config is everything the agent needs to know. The host writes it to the
// config disk; the agent reads it at boot.
type Config struct {
	// Name of the function (for logs).
	Name string `json:"name"`
	// Secret every request to the data listener must carry in SecretHeader.
	Secret string `json:"secret"`
	// ControlSecret every request to the control listener must carry in
	// ControlHeader. It differs from Secret.
	ControlSecret string `json:"controlSecret"`
	// Mode is ModeExec or ModeHTTP.
	Mode string `json:"mode"`
	// Runtime names the bootstrap for ModeHTTP ("python3", "node").
	Runtime string `json:"runtime"`
	// Handler is the file (exec mode) or module/file (http mode) relative to CodeDir.
	Handler string `json:"handler"`
	// Command is the argv run per request in exec mode (cwd CodeDir).
	Command []string `json:"command,omitempty"`
	// Env is added to the handler's environment.
	Env map[string]string `json:"env,omitempty"`
	// Secrets are the function's secrets by name. The agent writes each to
	// SecretsDir/<name> (mode 0400) at boot and forgets them; they are
	// never in the handler's environment or a log.
	Secrets map[string][]byte `json:"secrets,omitempty"`
	// Timeout bounds one invocation.
	Timeout Duration `json:"timeout"`
	// ContentType of exec-mode responses; sniffed from the body when empty.
	ContentType string `json:"contentType,omitempty"`
	// Template is the handler contract (Template*; "": TemplateFaasVM).
	Template string `json:"template,omitempty"`
	// Function is the function the handler file defines or exports that is
	// called ("": the contract's default, handle or the module itself).
	Function string `json:"function,omitempty"`
	// MemoryMB is the VM's memory, for the Lambda context.
	MemoryMB int `json:"memoryMB,omitempty"`
	// Deps says a dependency disk (DepsLabel) is attached: the agent waits
	// for it and mounts it at DepsDir.
	Deps bool `json:"deps,omitempty"`
	// Network of the guest's eth0.
	Network Network `json:"network"`
}

// Log streams.
const (
	StreamStdout = "stdout"
	StreamStderr = "stderr"
)

// LogEntry is one line of the function's own output, as LogsPath streams it.
type LogEntry struct {
	// Seq numbers the entries of one agent from 1, without gaps.
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	// Stream is StreamStdout or StreamStderr.
	Stream string `json:"stream"`
	// RequestID is the invocation the line was written during, when the
	// agent can tell (see the agent's README).
	RequestID string `json:"requestId,omitempty"`
	Line      string `json:"line"`
}

// Network is the guest's interface configuration.
type Network struct {
	Address string `json:"address"` // CIDR, e.g. 10.0.2.15/24
	Gateway string `json:"gateway"` // empty: no default route
	DNS     string `json:"dns"`     // empty: no resolv.conf
}

// Duration is a time.Duration that encodes as a Go duration string.
type Duration time.Duration

// MarshalJSON encodes d as a string such as "30s".
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON decodes a string such as "30s".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"30s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("parsing duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

// Validate reports the first problem with c.
func (c *Config) Validate() error {
	switch {
	case c.Secret == "":
		return errors.New("config: secret is empty")
	case c.ControlSecret == "":
		return errors.New("config: control secret is empty")
	case c.ControlSecret == c.Secret:
		return errors.New("config: the control secret must differ from the data secret")
	case c.Mode != ModeExec && c.Mode != ModeHTTP:
		return fmt.Errorf("config: mode %q is not %q or %q", c.Mode, ModeExec, ModeHTTP)
	case c.Mode == ModeExec && len(c.Command) == 0:
		return errors.New("config: exec mode needs a command")
	case c.Mode == ModeHTTP && c.Handler == "":
		return errors.New("config: http mode needs a handler")
	case c.Timeout <= 0:
		return errors.New("config: timeout must be positive")
	}
	switch c.Template {
	case "", TemplateFaasVM, TemplateOpenFaaSHTTP, TemplateOpenFaaSNode, TemplateLambda:
		if c.Template != "" && c.Template != TemplateFaasVM && c.Mode != ModeHTTP {
			return fmt.Errorf("config: template %q needs mode %q", c.Template, ModeHTTP)
		}
	case TemplateOpenFaaSClassic:
		if c.Mode != ModeExec {
			return fmt.Errorf("config: template %q needs mode %q", c.Template, ModeExec)
		}
	default:
		return fmt.Errorf("config: unknown template %q", c.Template)
	}
	return nil
}

// EncodeDisk renders c as the content of a config disk image.
func EncodeDisk(c *Config) ([]byte, error) {
	js, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encoding agent config: %w", err)
	}
	if len(ConfigMagic)+len(js) > ConfigDiskSize {
		return nil, fmt.Errorf("agent config is %d bytes, more than the %d a config disk holds", len(js), ConfigDiskSize-len(ConfigMagic))
	}
	out := make([]byte, ConfigDiskSize)
	copy(out, ConfigMagic)
	copy(out[len(ConfigMagic):], js)
	return out, nil
}

// DecodeDisk parses a config disk image.
func DecodeDisk(b []byte) (*Config, error) {
	if !bytes.HasPrefix(b, []byte(ConfigMagic)) {
		return nil, errors.New("not a config disk: magic missing")
	}
	b = b[len(ConfigMagic):]
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return DecodeJSON(b)
}

// DecodeJSON parses and validates a config given as plain JSON.
func DecodeJSON(b []byte) (*Config, error) {
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("decoding agent config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// RestorePath (POST, control listener, with the control secret the VM had
// when it was snapshotted) turns a VM restored from a snapshot into a
// machine of its own: the body is a Restore. The agent sets the clock,
// reseeds the kernel's RNG, takes the new secrets (the old ones are refused
// from then on) and tells the http-mode bootstrap, which reseeds the
// language's PRNG and calls the handler's on_restore hook. It answers 200
// with a RestoreResult once all of that is done.
const RestorePath = "/restore"

// RestoreEntropyBytes is how many bytes of fresh entropy a Restore carries.
const RestoreEntropyBytes = 64

// Restore is the body of a RestorePath request.
type Restore struct {
	// Secret and ControlSecret replace the snapshot's secrets.
	Secret        string `json:"secret"`
	ControlSecret string `json:"controlSecret"`
	// Entropy (RestoreEntropyBytes random bytes) is added to the guest
	// kernel's RNG, which is then reseeded.
	Entropy []byte `json:"entropy"`
	// TimeUnixNano is the host's wall clock when the request was sent.
	TimeUnixNano int64 `json:"timeUnixNano"`
	// Name and VMID are the clone's identity (for logs and on_restore).
	Name string `json:"name"`
	VMID string `json:"vmId"`
}

// Validate reports the first problem with r.
func (r *Restore) Validate() error {
	switch {
	case r.Secret == "" || r.ControlSecret == "":
		return errors.New("restore: both secrets are required")
	case r.Secret == r.ControlSecret:
		return errors.New("restore: the control secret must differ from the data secret")
	case len(r.Entropy) < RestoreEntropyBytes:
		return fmt.Errorf("restore: entropy must be at least %d bytes, got %d", RestoreEntropyBytes, len(r.Entropy))
	case r.TimeUnixNano <= 0:
		return errors.New("restore: no time")
	case r.VMID == "":
		return errors.New("restore: no vm id")
	}
	return nil
}

// RestoreResult is the agent's answer to a RestorePath request.
type RestoreResult struct {
	// Hook is "" when the handler has no on_restore hook or it ran fine,
	// else what went wrong (the clone serves anyway).
	Hook string `json:"hook,omitempty"`
	// ClockStepMs is how far the guest's clock was stepped.
	ClockStepMs int64 `json:"clockStepMs"`
}
