// Package async is the appliance's queue of asynchronous invocations: NATS
// JetStream, embedded in the appliance (file storage under the state dir,
// no port unless asked) or an existing server or cluster, and the workers
// that deliver each queued call through the gateway's own /invoke handler,
// so that it takes exactly the synchronous path (admission, scale from
// zero, queueing, limits, metrics).
//
// Layout on the server:
//
//	stream FAAS_CALLS   subjects faas.calls.<function>   work queue, explicit acks
//	consumer calls-<function>                            durable, one per function
//	stream FAAS_DEAD    subjects faas.dead.<function>    dead letters, with the last error
//	kv bucket faas_calls                                 one Result per call id, TTL'd
//
// Delivery is at least once: a call is acknowledged only after its result
// is recorded (and its callback posted), so a crash between the function's
// answer and the ack runs it again. Retries on 429, 502, 503, 504 and no
// answer wait with exponential backoff on the server (a delayed NAK), so
// they survive restarts too.
package async

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/faasvm/appliance/internal/controller"
)

// Names on the NATS server.
const (
	callsStream   = "FAAS_CALLS"
	callsSubject  = "faas.calls."
	deadStream    = "FAAS_DEAD"
	deadSubject   = "faas.dead."
	resultsBucket = "faas_calls"
	consumerPref  = "calls-"
)

// Errors the gateway maps to HTTP statuses.
var (
	// ErrCallNotFound: no call of that id (404).
	ErrCallNotFound = errors.New("call not found")
	// ErrCallbackRefused: X-Callback-Url is not allowed (400).
	ErrCallbackRefused = errors.New("callback url refused")
	// ErrQueueFull: the queue holds its limit of bytes (429).
	ErrQueueFull = errors.New("async queue is full")
	// ErrUnavailable: the NATS server cannot be reached (503).
	ErrUnavailable = errors.New("async queue unavailable")
)

// Options configure a Queue. Zero values take the defaults noted.
type Options struct {
	// URL names an external NATS server or cluster (comma-separated
	// URLs, credentials in them if needed); "" runs one embedded.
	URL string
	// StoreDir holds the embedded server's JetStream files.
	StoreDir string
	// Listen is the embedded server's client address, e.g.
	// 127.0.0.1:4222 (port 0: any); "" listens on no port.
	Listen string
	// MaxBody is the largest request body a call may carry; the embedded
	// server's message limit is set from it.
	MaxBody int64
	// MaxBytes bounds the queued calls' total size; beyond it Enqueue
	// fails with ErrQueueFull. It also bounds the results bucket and the
	// dead letters. 0: 1 GiB, or with the embedded server an eighth of
	// the store's free space when that is less. With the embedded server
	// a value whose three reservations do not fit the store's disk makes
	// Open fail, naming FAAS_ASYNC_MAX_BYTES.
	MaxBytes int64
	// MaxRetries is how many times a call is retried after its first
	// attempt (0: never).
	MaxRetries int
	// RetryBackoff is the first retry's delay (default 1s); it doubles
	// with each retry, up to MaxBackoff (default 10m).
	RetryBackoff time.Duration
	MaxBackoff   time.Duration
	// ResultTTL is how long a result is kept after its last change
	// (default 24h); dead letters are kept as long.
	ResultTTL time.Duration
	// ResultBytes is how much of an answer a result keeps (default 4 KiB).
	ResultBytes int
	// CallbackHosts is the X-Callback-Url allowlist (nil: none allowed).
	CallbackHosts *Allowlist
	// CallbackTimeout bounds one callback request (default 10s).
	CallbackTimeout time.Duration
	// AckWait is how long the server waits for a worker's ack or progress
	// report before it redelivers a call (default 30s): after a crash,
	// calls that were running run again this long after they started.
	AckWait time.Duration
	// StatsInterval is how often queue gauges are refreshed (default 2s).
	StatsInterval time.Duration
	// DrainTimeout bounds how long Close waits for running calls before
	// it interrupts them (they run again later) (default 10s).
	DrainTimeout time.Duration
	// Metrics receives counts and gauges (default: none).
	Metrics Recorder
	Logger  *slog.Logger
}

func (o *Options) setDefaults() {
	if o.MaxBody <= 0 {
		o.MaxBody = 10 << 20
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = defaultMaxBytes
	}
	o.MaxRetries = max(o.MaxRetries, 0)
	if o.RetryBackoff <= 0 {
		o.RetryBackoff = time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 10 * time.Minute
	}
	if o.ResultTTL <= 0 {
		o.ResultTTL = 24 * time.Hour
	}
	if o.ResultBytes <= 0 {
		o.ResultBytes = 4 << 10
	}
	if o.CallbackTimeout <= 0 {
		o.CallbackTimeout = 10 * time.Second
	}
	if o.AckWait <= 0 {
		o.AckWait = 30 * time.Second
	}
	if o.StatsInterval <= 0 {
		o.StatsInterval = 2 * time.Second
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 10 * time.Second
	}
	if o.Metrics == nil {
		o.Metrics = nopRecorder{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Functions is what the workers need from the controller: a function's
// status, for its capacity (maxReplicas × concurrency).
type Functions interface {
	Get(ctx context.Context, name string) (controller.Status, error)
}

// Recorder receives the queue's metrics (the appliance's Prometheus
// metrics). Calls must be quick.
type Recorder interface {
	// AsyncSubmitted counts a call queued for function.
	AsyncSubmitted(function string)
	// AsyncProcessed counts a call that ended (done, failed or dead-lettered).
	AsyncProcessed(function string)
	// AsyncRetried counts an attempt that will be retried.
	AsyncRetried(function string)
	// AsyncDeadLettered counts a call moved to the dead letters.
	AsyncDeadLettered(function string)
	// AsyncQueue reports the calls waiting and running for function.
	AsyncQueue(function string, queued, inFlight int)
}

type nopRecorder struct{}

func (nopRecorder) AsyncSubmitted(string)       {}
func (nopRecorder) AsyncProcessed(string)       {}
func (nopRecorder) AsyncRetried(string)         {}
func (nopRecorder) AsyncDeadLettered(string)    {}
func (nopRecorder) AsyncQueue(string, int, int) {}

// Queue takes asynchronous calls and runs them.
type Queue struct {
	opts      Options
	log       *slog.Logger
	emb       *embedded // nil with an external server
	nc        *nats.Conn
	js        jetstream.JetStream
	results   *results
	callbacks *callbacks
	// payloadLimit is the largest message the server takes.
	payloadLimit int64

	// fetching ends the workers' fetch loops; working ends running calls.
	fetching, working     context.Context
	stopFetch, stopWork   context.CancelFunc
	loops, calls, support sync.WaitGroup
	connClosed            chan struct{} // closed by the connection's ClosedHandler

	mu      sync.Mutex
	workers map[string]*worker
	handler http.Handler
	fns     Functions
	started bool
	closed  bool
}

// Open starts (or connects to) the NATS server and makes sure the stream,
// the dead-letter stream and the results bucket exist. Nothing is
// delivered until Start.
func Open(ctx context.Context, opts Options) (*Queue, error) {
	if opts.URL == "" {
		// The embedded server's store must hold the reservations.
		n, err := embeddedMaxBytes(opts.StoreDir, max(opts.MaxBytes, 0))
		if err != nil {
			return nil, err
		}
		opts.MaxBytes = n
	}
	opts.setDefaults()
	q := &Queue{opts: opts, log: opts.Logger.With("component", "async"), workers: map[string]*worker{}, connClosed: make(chan struct{})}
	q.callbacks = newCallbacks(opts.CallbackHosts, opts.CallbackTimeout)
	q.fetching, q.stopFetch = context.WithCancel(context.Background())
	q.working, q.stopWork = context.WithCancel(context.Background())

	// The embedded server takes a body of MaxBody plus the envelope.
	payload := min(opts.MaxBody+64<<10, maxNATSPayload)
	natsOpts := []nats.Option{
		nats.Name("faasvm-appliance"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				q.log.Warn("nats connection lost", "err", err)
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) { q.log.Info("nats connection back") }),
		nats.ClosedHandler(func(*nats.Conn) { close(q.connClosed) }),
	}
	var err error
	if opts.URL == "" {
		if q.emb, err = startEmbedded(ctx, opts.StoreDir, opts.Listen, int32(payload), opts.Logger); err != nil {
			return nil, err
		}
		q.nc, err = nats.Connect("", append(natsOpts, nats.InProcessServer(q.emb.srv))...)
	} else {
		q.nc, err = nats.Connect(opts.URL, natsOpts...)
	}
	if err != nil {
		q.closeConn()
		return nil, fmt.Errorf("connecting to nats%s: %w", redactedURL(opts.URL), err)
	}
	q.payloadLimit = q.nc.MaxPayload()
	if q.js, err = jetstream.New(q.nc); err != nil {
		q.closeConn()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	if err := q.provision(ctx); err != nil {
		q.closeConn()
		return nil, err
	}
	where := "embedded"
	if opts.URL != "" {
		where = "external" + redactedURL(opts.URL)
	}
	q.log.Info("async queue ready", "nats", where, "max_retries", opts.MaxRetries, "result_ttl", opts.ResultTTL)
	return q, nil
}

// provision creates or updates the streams and the bucket.
func (q *Queue) provision(ctx context.Context) error {
	o := q.opts
	if _, err := q.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        callsStream,
		Description: "faasvm asynchronous calls, one subject per function",
		Subjects:    []string{callsSubject + ">"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		MaxBytes:    o.MaxBytes,
		Discard:     jetstream.DiscardNew,
		MaxMsgSize:  int32(q.payloadLimit),
		Duplicates:  2 * time.Minute,
	}); err != nil {
		return fmt.Errorf("creating stream %s: %w", callsStream, err)
	}
	if _, err := q.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        deadStream,
		Description: "faasvm asynchronous calls whose every attempt failed",
		Subjects:    []string{deadSubject + ">"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      o.ResultTTL,
		MaxBytes:    o.MaxBytes,
		Discard:     jetstream.DiscardOld,
		Duplicates:  min(2*time.Minute, o.ResultTTL),
	}); err != nil {
		return fmt.Errorf("creating stream %s: %w", deadStream, err)
	}
	kv, err := q.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      resultsBucket,
		Description: "faasvm asynchronous call results",
		History:     1,
		TTL:         o.ResultTTL,
		MaxBytes:    o.MaxBytes,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return fmt.Errorf("creating kv bucket %s: %w", resultsBucket, err)
	}
	q.results = &results{kv: kv}
	return nil
}

// Start delivers queued calls through handler (the gateway's routes),
// each function's at most its capacity at once as fns reports it: first
// the calls already queued (from before a restart), then every new one.
func (q *Queue) Start(ctx context.Context, handler http.Handler, fns Functions) error {
	names, err := q.queuedFunctions(ctx)
	if err != nil {
		return err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.started || q.closed {
		return errors.New("async queue already started or closed")
	}
	for _, name := range names {
		if _, err := q.workerLocked(ctx, name); err != nil {
			return err
		}
	}
	// From here on workerLocked starts the workers it makes.
	q.handler, q.fns, q.started = handler, fns, true
	for _, w := range q.workers {
		q.run(w)
	}
	q.support.Add(1)
	go q.statsLoop()
	return nil
}

// queuedFunctions lists the functions with a consumer or with calls in
// the stream.
func (q *Queue) queuedFunctions(ctx context.Context) ([]string, error) {
	seen := map[string]bool{}
	s, err := q.js.Stream(ctx, callsStream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", callsStream, err)
	}
	lister := s.ConsumerNames(ctx)
	for name := range lister.Name() {
		if fn, ok := strings.CutPrefix(name, consumerPref); ok {
			seen[fn] = true
		}
	}
	if err := lister.Err(); err != nil {
		return nil, fmt.Errorf("listing consumers of %s: %w", callsStream, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(callsSubject+">"))
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", callsStream, err)
	}
	for subj := range info.State.Subjects {
		if fn, ok := strings.CutPrefix(subj, callsSubject); ok {
			seen[fn] = true
		}
	}
	out := make([]string, 0, len(seen))
	for fn := range seen {
		out = append(out, fn)
	}
	return out, nil
}

// workerLocked returns the function's worker, making its durable consumer
// first if needed (and starting it once the queue runs); q.mu is held.
func (q *Queue) workerLocked(ctx context.Context, fn string) (*worker, error) {
	if w := q.workers[fn]; w != nil {
		return w, nil
	}
	if q.closed {
		return nil, fmt.Errorf("%w: shutting down", ErrUnavailable)
	}
	cons, err := q.js.CreateOrUpdateConsumer(ctx, callsStream, jetstream.ConsumerConfig{
		Durable:       consumerPref + fn,
		Description:   "faasvm worker of function " + fn,
		FilterSubject: callsSubject + fn,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       q.opts.AckWait,
		MaxDeliver:    -1, // the worker counts attempts and dead-letters
		MaxAckPending: 4096,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: consumer for %s: %w", ErrUnavailable, fn, err)
	}
	w := newWorker(q, fn, cons)
	q.workers[fn] = w
	if q.started {
		q.run(w)
	}
	return w, nil
}

func (q *Queue) run(w *worker) {
	q.loops.Add(1)
	go func() {
		defer q.loops.Done()
		w.loop(q.fetching)
	}()
}

// Enqueue stores call durably and returns its id. Errors wrap
// ErrCallbackRefused, ErrQueueFull or ErrUnavailable, or are an
// *http.MaxBytesError when the call is larger than a message may be.
func (q *Queue) Enqueue(ctx context.Context, call Call) (string, error) {
	if call.CallbackURL != "" {
		if _, err := q.opts.CallbackHosts.CheckURL(call.CallbackURL); err != nil {
			return "", err
		}
	}
	id := uuid.NewString()
	now := time.Now().UTC()
	data, err := encodeCall(id, call, now)
	if err != nil {
		return "", err
	}
	if over := int64(len(data)) - q.payloadLimit; over > 0 {
		return "", &http.MaxBytesError{Limit: max(int64(len(call.Body))-over, 0)}
	}
	q.mu.Lock()
	_, err = q.workerLocked(ctx, call.Function)
	q.mu.Unlock()
	if err != nil {
		return "", err
	}
	// The record first: once the call is published a worker may already
	// be writing its own. A crash in between leaves a "queued" record
	// under an id no client was ever given.
	rec := &Result{ID: id, Function: call.Function, State: StateQueued, MaxAttempts: q.maxAttempts(), SubmittedAt: now}
	if err := q.results.put(ctx, rec); err != nil {
		return "", fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	msg := nats.NewMsg(callsSubject + call.Function)
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, id)
	if _, err := q.js.PublishMsg(ctx, msg); err != nil {
		_ = q.results.delete(context.WithoutCancel(ctx), id)
		if isStoreFull(err) {
			return "", fmt.Errorf("%w: %d bytes queued already (async_max_bytes)", ErrQueueFull, q.opts.MaxBytes)
		}
		return "", fmt.Errorf("%w: queueing call: %w", ErrUnavailable, err)
	}
	q.opts.Metrics.AsyncSubmitted(call.Function)
	return id, nil
}

// isStoreFull recognises the server's refusal of a message past the
// stream's byte limit (discard-new policy).
func isStoreFull(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && strings.Contains(apiErr.Description, "maximum bytes exceeded") ||
		strings.Contains(err.Error(), "maximum bytes exceeded")
}

// Result reports a call; the error wraps ErrCallNotFound for an unknown
// (or expired) id.
func (q *Queue) Result(ctx context.Context, id string) (Result, error) {
	return q.results.get(ctx, id)
}

func (q *Queue) maxAttempts() int { return 1 + q.opts.MaxRetries }

// FunctionStats is one function's share of the queue.
type FunctionStats struct {
	Function string `json:"function"`
	// Queued calls wait for a worker or for their next attempt.
	Queued int `json:"queued"`
	// InFlight calls are being delivered now.
	InFlight int `json:"inFlight"`
	// Retries and DeadLetters count since the appliance started.
	Retries     uint64 `json:"retries"`
	DeadLetters uint64 `json:"deadLetters"`
}

// Stats reports every function with a worker, sorted by name.
func (q *Queue) Stats(ctx context.Context) []FunctionStats {
	q.mu.Lock()
	ws := make([]*worker, 0, len(q.workers))
	for _, w := range q.workers {
		ws = append(ws, w)
	}
	q.mu.Unlock()
	out := make([]FunctionStats, 0, len(ws))
	for _, w := range ws {
		out = append(out, w.stats(ctx))
	}
	sortStats(out)
	return out
}

// statsLoop publishes the queue gauges every StatsInterval.
func (q *Queue) statsLoop() {
	defer q.support.Done()
	t := time.NewTicker(q.opts.StatsInterval)
	defer t.Stop()
	for {
		select {
		case <-q.fetching.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(q.fetching, q.opts.StatsInterval)
		for _, s := range q.Stats(ctx) {
			q.opts.Metrics.AsyncQueue(s.Function, s.Queued, s.InFlight)
		}
		cancel()
	}
}

// Close stops taking calls from the server, lets running calls finish for
// up to DrainTimeout (or until ctx ends), interrupts the rest (the server
// delivers them again later), and closes the connection and the embedded
// server.
func (q *Queue) Close(ctx context.Context) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	q.mu.Unlock()

	q.stopFetch()
	q.loops.Wait()
	q.support.Wait()
	drained := make(chan struct{})
	go func() { q.calls.Wait(); close(drained) }()
	timer := time.NewTimer(q.opts.DrainTimeout)
	defer timer.Stop()
	var err error
	select {
	case <-drained:
	case <-timer.C:
		q.log.Warn("interrupting running async calls; they run again after a restart", "step", "shutdown")
	case <-ctx.Done():
		err = fmt.Errorf("draining async calls: %w", ctx.Err())
	}
	q.stopWork()
	q.calls.Wait()
	q.closeConn()
	return err
}

func (q *Queue) closeConn() {
	if q.nc != nil {
		if err := q.nc.Drain(); err != nil {
			q.nc.Close()
		}
		select {
		case <-q.connClosed:
		case <-time.After(10 * time.Second):
			q.nc.Close()
		}
	}
	if q.emb != nil {
		q.emb.close()
	}
}

// redactedURL renders " <url>" without credentials, for logs and errors.
func redactedURL(raw string) string {
	if raw == "" {
		return ""
	}
	parts := strings.Split(raw, ",")
	for i, p := range parts {
		if at := strings.LastIndex(p, "@"); at >= 0 {
			scheme, _, ok := strings.Cut(p, "://")
			if ok {
				parts[i] = scheme + "://[redacted]@" + p[at+1:]
			} else {
				parts[i] = "[redacted]@" + p[at+1:]
			}
		}
	}
	return " " + strings.Join(parts, ",")
}
