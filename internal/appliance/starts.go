package appliance

import (
	"time"

	"github.com/faasvm/appliance/internal/controller"
	"github.com/faasvm/appliance/internal/gateway"
	"github.com/faasvm/appliance/internal/metrics"
)

// chartedRecorder is the controller's recorder: the Prometheus metrics,
// and the dashboard's series for VM starts (boot vs restore), so the
// start-time chart reads what the histogram counts. Every other method is
// the metrics' own.
type chartedRecorder struct {
	*metrics.Metrics
	series *gateway.Series
}

var _ controller.Recorder = chartedRecorder{}

func (r chartedRecorder) VMStarted(function, method string, took time.Duration) {
	r.Metrics.VMStarted(function, method, took)
	r.series.VMStarted(function, method, took)
}

func (r chartedRecorder) Forget(function string) {
	r.Metrics.Forget(function)
	r.series.Forget(function)
}
