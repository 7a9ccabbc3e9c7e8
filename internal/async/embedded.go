package async

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// embedded is a NATS server with JetStream running inside the appliance,
// its file storage under the state directory. It listens on no port
// unless listen is set; the appliance connects to it in-process.
type embedded struct {
	srv *server.Server
}

// maxNATSPayload is the largest message a NATS server accepts at all.
const maxNATSPayload = 64 << 20

func startEmbedded(ctx context.Context, storeDir, listen string, maxPayload int32, log *slog.Logger) (*embedded, error) {
	if err := os.MkdirAll(storeDir, 0o700); err != nil {
		return nil, fmt.Errorf("making the queue's store dir: %w", err)
	}
	opts := &server.Options{
		ServerName: "faasvm",
		JetStream:  true,
		StoreDir:   storeDir,
		DontListen: listen == "",
		MaxPayload: maxPayload,
		NoSigs:     true, // the appliance handles signals
		// No system account: nothing here uses it, and it would add
		// internal subscriptions and a second account to reason about.
		NoSystemAccount: true,
	}
	if listen != "" {
		host, port, err := net.SplitHostPort(listen)
		if err != nil {
			return nil, fmt.Errorf("nats listen address %q: %w", listen, err)
		}
		n, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("nats listen address %q: port: %w", listen, err)
		}
		if n == 0 {
			n = server.RANDOM_PORT
		}
		opts.Host, opts.Port = host, n
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("configuring the embedded nats server: %w", err)
	}
	srv.SetLoggerV2(natsLogger{log.With("component", "nats")}, false, false, false)
	log = log.With("component", "async")
	go srv.Start()
	// Recovering a large store takes a while; honour ctx meanwhile.
	deadline := time.Now().Add(2 * time.Minute)
	for !srv.ReadyForConnections(250 * time.Millisecond) {
		if ctx.Err() != nil || time.Now().After(deadline) {
			srv.Shutdown()
			return nil, errors.Join(fmt.Errorf("the embedded nats server did not start"), ctx.Err())
		}
	}
	if listen != "" {
		log.Info("nats listening", "addr", srv.Addr().String())
	}
	return &embedded{srv: srv}, nil
}

func (e *embedded) close() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

// natsLogger sends the server's log lines to slog: its notices at debug
// level (they are chatty), its warnings and errors as such.
type natsLogger struct{ log *slog.Logger }

func (l natsLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Warnf(format string, v ...any) {
	if strings.HasPrefix(format, "Maximum payloads over") {
		// The message limit follows max_body, which may be large on purpose.
		l.log.Info(fmt.Sprintf(format, v...))
		return
	}
	l.log.Warn(fmt.Sprintf(format, v...))
}
func (l natsLogger) Fatalf(format string, v ...any) { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Errorf(format string, v ...any) { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Debugf(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Tracef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
