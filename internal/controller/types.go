package controller

import (
	"errors"
	"time"
)

// Function states as shown by the API.
const (
	StateDeploying = "deploying" // first instance booting, nothing serves yet
	StateReady     = "ready"     // at least one instance serves
	StateIdle      = "idle"      // scaled to zero: the next request boots an instance
	StateFailed    = "failed"    // nothing serves; LastError says why
	StateInvalid   = "invalid"   // the folder is not a valid function; LastError says why
)

// How an instance started, as Recorder.VMStarted and the API report it.
const (
	StartBoot    = "boot"    // a full boot of kernel, agent and handler
	StartRestore = "restore" // a clone of the version's snapshot
)

// Errors Acquire returns; the gateway maps them to HTTP statuses.
var (
	// ErrNotFound: no function of that name (404).
	ErrNotFound = errors.New("function not found")
	// ErrNotReady: the function exists but no instance became ready in time (503).
	ErrNotReady = errors.New("function not ready")
	// ErrUnavailable: the function cannot serve (invalid or failed) (503, no retry hint).
	ErrUnavailable = errors.New("function unavailable")
	// ErrOverloaded: every replica is at its concurrency limit and the queue is full (429).
	ErrOverloaded = errors.New("function overloaded")
)

// Status is one function as the management API shows it.
type Status struct {
	Name        string    `json:"name"`
	State       string    `json:"state"`
	Runtime     string    `json:"runtime,omitempty"`
	Mode        string    `json:"mode,omitempty"`
	Handler     string    `json:"handler,omitempty"`
	Version     string    `json:"version,omitempty"` // content digest of the deployed folder
	Engine      string    `json:"engine,omitempty"`
	EngineNote  string    `json:"engineNote,omitempty"` // why this engine / accel was chosen
	VMID        string    `json:"vmId,omitempty"`
	StartedAt   time.Time `json:"startedAt,omitzero"`
	LastError   string    `json:"lastError,omitempty"`
	Warnings    []string  `json:"warnings,omitempty"` // e.g. VM config fields the engine ignores
	Invocations Counts    `json:"invocations"`
	Replicas    Replicas  `json:"replicas"`
	InFlight    int       `json:"inFlight"` // requests being served now
	Queued      int       `json:"queued"`   // requests waiting for a free slot or a boot
	Latency     Latency   `json:"latency"`
	Scale       Scale     `json:"scale,omitzero"` // the serving version's settings
	// Instances are the function's VMs, every version's, and how each
	// started; Snapshot the serving version's snapshot (nil before a
	// version is known).
	Instances []InstanceStatus `json:"instances"`
	Snapshot  *SnapshotStatus  `json:"snapshot,omitempty"`
}

// Counts are per-function invocation counters.
type Counts struct {
	Total      uint64 `json:"total"`      // invocations that reached an instance
	Errors     uint64 `json:"errors"`     // of those, 5xx answers or none at all
	ColdStarts uint64 `json:"coldStarts"` // of those, ones that waited for a VM to boot
	Rejected   uint64 `json:"rejected"`   // refused because the queue was full (429)
}

// Replicas counts instances by state, and how many the autoscaler wants.
type Replicas struct {
	Ready   int `json:"ready"`
	Booting int `json:"booting"`
	// QueuedBoots are the booting replicas still waiting in line for a
	// slot under the concurrent boot limit (counted in Booting too).
	QueuedBoots int `json:"queuedBoots"`
	Draining    int `json:"draining"`
	Desired     int `json:"desired"`
}

// Latency summarises the most recent invocations (at most LatencyWindow),
// each from its arrival at the controller, queueing and cold start
// included, to the end of its response. Times are in milliseconds.
type Latency struct {
	Samples int     `json:"samples"`
	MeanMs  float64 `json:"meanMs"`
	P50Ms   float64 `json:"p50Ms"`
	P99Ms   float64 `json:"p99Ms"`
}

// Scale is the serving version's scale settings, as the API shows them.
type Scale struct {
	MinReplicas       int     `json:"minReplicas"`
	MaxReplicas       int     `json:"maxReplicas"`
	Concurrency       int     `json:"concurrency"`
	IdleTimeout       string  `json:"idleTimeout"`
	TargetUtilization float64 `json:"targetUtilization"`
}

// Instance is a ready instance handed to the gateway for one request.
// The caller must call Release exactly once when the request is done.
type Instance struct {
	Function string
	VMID     string
	Endpoint string // host:port of the guest agent
	Secret   string // value for protocol.SecretHeader
	// Timeout is the function's invocation timeout (the agent enforces it
	// too; the gateway adds a margin so the agent's 504 wins).
	Timeout time.Duration
	// Release reports the request's outcome (HTTP status, 0 if none was
	// received) and frees the instance's concurrency slot.
	Release func(status int)
	// Suspect reports that the instance refused or reset the connection:
	// it gets no more requests until a health check (run at once) passes,
	// and is replaced if that fails. Nil: nothing to report to.
	Suspect func()
}
