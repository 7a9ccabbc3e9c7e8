package appliance

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/faasvm/appliance/internal/async"
	"github.com/faasvm/appliance/internal/config"
)

// openQueue opens the asynchronous calls' queue from the settings: an
// embedded NATS server under the state dir, or FAAS_NATS_URL's.
func openQueue(ctx context.Context, cfg *config.Config, rec async.Recorder, log *slog.Logger) (*async.Queue, error) {
	allow, err := async.ParseAllowlist(cfg.CallbackHosts)
	if err != nil {
		return nil, fmt.Errorf("FAAS_CALLBACK_HOSTS: %w", err)
	}
	q, err := async.Open(ctx, async.Options{
		URL: cfg.NATSURL, StoreDir: filepath.Join(cfg.StateDir, "nats"), Listen: cfg.NATSListen,
		MaxBody: int64(cfg.MaxBody), MaxBytes: int64(cfg.AsyncMaxBytes),
		MaxRetries: cfg.AsyncMaxRetries, RetryBackoff: cfg.AsyncRetryBackoff,
		ResultTTL: cfg.AsyncResultTTL, ResultBytes: int(cfg.AsyncResultBytes),
		CallbackHosts: allow, DrainTimeout: cfg.ShutdownTimeout / 2,
		Metrics: rec, Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("async queue (FAAS_NATS_URL, FAAS_STATE_DIR): %w", err)
	}
	return q, nil
}
