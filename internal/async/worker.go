package async

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/faasvm/appliance/internal/controller"
)

// fetchWait bounds one pull request; an idle worker asks again after it.
const fetchWait = 2 * time.Second

// worker delivers one function's calls, at most its capacity at once.
type worker struct {
	q    *Queue
	fn   string
	cons jetstream.Consumer

	inflight    atomic.Int64
	freed       chan struct{} // a slot was freed (buffered 1)
	retries     atomic.Uint64
	deadLetters atomic.Uint64

	// capacity cache, owned by loop
	capacity   int
	capacityAt time.Time
}

func newWorker(q *Queue, fn string, cons jetstream.Consumer) *worker {
	return &worker{q: q, fn: fn, cons: cons, freed: make(chan struct{}, 1)}
}

// loop pulls as many calls as there are free slots and hands each to its
// own goroutine, until ctx ends.
func (w *worker) loop(ctx context.Context) {
	log := w.q.log.With("function", w.fn)
	failures := 0
	for ctx.Err() == nil {
		free := w.limit(ctx) - int(w.inflight.Load())
		if free <= 0 {
			select {
			case <-w.freed:
			case <-time.After(time.Second): // the capacity may have grown
			case <-ctx.Done():
			}
			continue
		}
		fetchCtx, cancel := context.WithTimeout(ctx, fetchWait)
		batch, err := w.cons.Fetch(free, jetstream.FetchContext(fetchCtx))
		if err == nil {
			for msg := range batch.Messages() {
				w.inflight.Add(1)
				w.q.calls.Add(1)
				go w.handle(msg)
			}
			err = batch.Error()
		}
		cancel()
		switch {
		case err == nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || ctx.Err() != nil:
			failures = 0
		default:
			failures++
			log.Warn("fetching async calls", "err", err, "failures", failures)
			select {
			case <-time.After(min(time.Duration(failures)*time.Second, 10*time.Second)):
			case <-ctx.Done():
			}
		}
	}
}

// limit is the function's capacity: maxReplicas × concurrency of the
// serving version, re-read at most once a second; 1 while the function
// is unknown or has no version (its calls then fail and are retried).
func (w *worker) limit(ctx context.Context) int {
	if time.Since(w.capacityAt) < time.Second && w.capacity > 0 {
		return w.capacity
	}
	n := 1
	if st, err := w.q.fns.Get(ctx, w.fn); err == nil && st.Scale.MaxReplicas > 0 && st.Scale.Concurrency > 0 {
		n = st.Scale.MaxReplicas * st.Scale.Concurrency
	}
	w.capacity, w.capacityAt = n, time.Now()
	return n
}

// release frees a slot and wakes the loop.
func (w *worker) release() {
	w.inflight.Add(-1)
	select {
	case w.freed <- struct{}{}:
	default:
	}
}

// handle runs one attempt of one call and settles it with the server:
// ack when it ended (done, failed, dead-lettered), delayed nak when it
// is retried, plain nak when the appliance is shutting down.
func (w *worker) handle(msg jetstream.Msg) {
	defer w.q.calls.Done()
	released := false
	defer func() {
		if !released {
			w.release()
		}
	}()
	ctx := w.q.working
	q := w.q
	log := q.log.With("function", w.fn)

	env, body, err := decodeCall(msg.Data())
	if err != nil {
		// Nothing can ever deliver it: drop it, saying so.
		log.Error("dropping an unreadable async call", "err", err, "subject", msg.Subject())
		_ = msg.TermWithReason("unreadable call")
		return
	}
	log = log.With("call_id", env.ID)
	meta, err := msg.Metadata()
	if err != nil {
		log.Error("async call without metadata", "err", err)
		_ = msg.Nak()
		return
	}
	attempt := int(meta.NumDelivered)
	rec := &Result{ID: env.ID, Function: env.Function, MaxAttempts: q.maxAttempts(), SubmittedAt: env.Submitted, Attempts: attempt}

	if attempt > q.maxAttempts() {
		// The last attempt ended without settling (a crash before the
		// dead letter was written): finish what it started.
		last, err := q.results.get(ctx, env.ID)
		if err == nil {
			rec.StatusCode, rec.Error, rec.FinishedAt = last.StatusCode, last.Error, last.FinishedAt
		}
		if rec.Error == "" {
			rec.Error = "attempts exhausted"
		}
		rec.Attempts = q.maxAttempts()
		w.deadLetter(ctx, msg, env, rec, nil)
		return
	}

	rec.State, rec.StartedAt = StateRunning, time.Now().UTC()
	w.record(ctx, rec)
	stopBeat := w.heartbeat(msg)
	out := w.deliver(ctx, env, body)
	rec.FinishedAt = time.Now().UTC()
	w.release()
	released = true
	defer stopBeat()

	if ctx.Err() != nil {
		// Shutting down: the call runs again after the restart.
		rec.State, rec.Error = StateQueued, "interrupted by a shutdown; it runs again"
		w.record(context.WithoutCancel(ctx), rec)
		_ = msg.Nak()
		return
	}
	rec.StatusCode, rec.Error = out.status, out.err
	rec.ContentType = out.header.Get("Content-Type")
	rec.setBody(out.body, out.size, q.opts.ResultBytes)

	if out.retry {
		if attempt < q.maxAttempts() {
			delay := w.backoff(attempt)
			rec.State, rec.NextAttemptAt = StateQueued, time.Now().Add(delay).UTC()
			w.record(ctx, rec)
			w.retries.Add(1)
			q.opts.Metrics.AsyncRetried(w.fn)
			log.Info("async call will be retried", "attempt", attempt, "status", out.status, "err", out.err, "delay", delay)
			if err := msg.NakWithDelay(delay); err != nil {
				log.Warn("delaying an async retry", "err", err) // the ack wait redelivers it
			}
			return
		}
		w.deadLetter(ctx, msg, env, rec, &out)
		return
	}
	rec.State = StateDone
	if out.status >= 400 {
		rec.State = StateFailed
	}
	w.callback(ctx, env, rec, &out)
	w.record(ctx, rec)
	w.ack(ctx, msg, log)
	q.opts.Metrics.AsyncProcessed(w.fn)
}

// deadLetter moves the call to the dead letters with its last error,
// records it, posts the callback and acks.
func (w *worker) deadLetter(ctx context.Context, msg jetstream.Msg, env envelope, rec *Result, out *outcome) {
	q := w.q
	log := q.log.With("function", w.fn, "call_id", env.ID)
	dl := nats.NewMsg(deadSubject + w.fn)
	dl.Data = msg.Data()
	dl.Header.Set(jetstream.MsgIDHeader, env.ID)
	dl.Header.Set("Faas-Error", sanitizeHeader(rec.Error))
	dl.Header.Set("Faas-Status", strconv.Itoa(rec.StatusCode))
	dl.Header.Set("Faas-Attempts", strconv.Itoa(rec.Attempts))
	if _, err := q.js.PublishMsg(ctx, dl); err != nil {
		log.Warn("writing a dead letter; trying again later", "err", err)
		_ = msg.NakWithDelay(w.backoff(1))
		return
	}
	rec.State, rec.NextAttemptAt = StateDeadLettered, time.Time{}
	if out != nil {
		w.callback(ctx, env, rec, out)
	} else {
		w.callback(ctx, env, rec, &outcome{})
	}
	w.record(ctx, rec)
	w.ack(ctx, msg, log)
	w.deadLetters.Add(1)
	q.opts.Metrics.AsyncDeadLettered(w.fn)
	q.opts.Metrics.AsyncProcessed(w.fn)
	log.Warn("async call dead-lettered", "attempts", rec.Attempts, "status", rec.StatusCode, "err", rec.Error)
}

// callback posts the result when the call asked for it.
func (w *worker) callback(ctx context.Context, env envelope, rec *Result, out *outcome) {
	if env.Callback == "" {
		return
	}
	body, more := out.body, out.size > int64(len(out.body))
	if len(body) > callbackBodyLimit {
		body, more = body[:callbackBodyLimit], true
	}
	rec.Callback = w.q.callbacks.send(ctx, callbackMessage{
		url: env.Callback, result: rec, body: body, more: more,
		ctype: out.header.Get("Content-Type"), maxTries: w.q.maxAttempts(),
	})
	if rec.Callback.State != CallbackSent {
		w.q.log.Warn("async callback failed", "function", w.fn, "call_id", env.ID, "err", rec.Callback.Error)
	}
}

// ack settles the call for good; a lost ack means it runs again.
func (w *worker) ack(ctx context.Context, msg jetstream.Msg, log interface{ Warn(string, ...any) }) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := msg.DoubleAck(actx); err != nil {
		log.Warn("acknowledging an async call; it may run again", "err", err)
	}
}

// record writes rec; a failure is logged, never fatal to the call.
func (w *worker) record(ctx context.Context, rec *Result) {
	if err := w.q.results.put(ctx, rec); err != nil {
		w.q.log.Warn("recording an async call", "function", w.fn, "call_id", rec.ID, "err", err)
	}
}

// heartbeat tells the server the call is still being worked on, so the
// ack wait bounds only how long a crashed appliance holds a call.
func (w *worker) heartbeat(msg jetstream.Msg) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(w.q.opts.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	return func() { close(done) }
}

// backoff is the delay after a failed attempt: RetryBackoff doubled for
// each earlier attempt, at most MaxBackoff.
func (w *worker) backoff(attempt int) time.Duration {
	d := w.q.opts.RetryBackoff
	for i := 1; i < attempt && d < w.q.opts.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, w.q.opts.MaxBackoff)
}

// stats reads the function's consumer state.
func (w *worker) stats(ctx context.Context) FunctionStats {
	inflight := int(w.inflight.Load())
	s := FunctionStats{Function: w.fn, InFlight: inflight, Retries: w.retries.Load(), DeadLetters: w.deadLetters.Load()}
	info, err := w.cons.Info(ctx)
	if err != nil {
		return s
	}
	s.Queued = max(int(info.NumPending)+info.NumAckPending-inflight, 0)
	return s
}

func sortStats(s []FunctionStats) {
	slices.SortFunc(s, func(a, b FunctionStats) int {
		switch {
		case a.Function < b.Function:
			return -1
		case a.Function > b.Function:
			return 1
		}
		return 0
	})
}

// isNotFound says whether err is the controller's unknown function.
func isNotFound(err error) bool { return errors.Is(err, controller.ErrNotFound) }

// describeStatus is the error text of an answer that is not a success.
func describeStatus(status int, body []byte) string {
	if status == 0 {
		return "no answer"
	}
	text := string(trimPartialRune(body[:min(len(body), 200)]))
	if text == "" {
		return fmt.Sprintf("status %d", status)
	}
	return fmt.Sprintf("status %d: %s", status, sanitizeHeader(text))
}
