package gateway

import (
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/faasvm/appliance/internal/controller"
)

// Per-function time series for the dashboard's charts: the last 15
// minutes of invocations and VM starts in 10-second buckets, kept in
// memory only.
const (
	seriesBucket    = 10 * time.Second
	seriesBuckets   = 90  // 15 minutes
	seriesMaxSample = 256 // latencies kept per bucket for p50/p99
	startsMaxSample = 64  // start times kept per bucket and method for the median
)

// startMethods are the ways a VM starts that the series keep, in the
// order of seriesBucketData.starts.
var startMethods = [...]string{controller.StartBoot, controller.StartRestore}

type startData struct {
	n   int
	max float64   // seconds
	s   []float64 // seconds, the first startsMaxSample of the bucket
}

type seriesBucketData struct {
	slot   int64 // unix time / bucket size; stale when not the current one
	n      int
	errors int
	lat    []float64 // ms, the first seriesMaxSample of the bucket
	starts [len(startMethods)]startData
}

// reset makes b the bucket of slot, keeping its slices' memory.
func (b *seriesBucketData) reset(slot int64) {
	if b.slot == slot {
		return
	}
	*b = seriesBucketData{slot: slot, lat: b.lat[:0], starts: b.starts}
	for i := range b.starts {
		b.starts[i] = startData{s: b.starts[i].s[:0]}
	}
}

type fnSeries struct {
	b [seriesBuckets]seriesBucketData
}

// Series holds the dashboard's time series of every function: the
// gateway records invocations that reached an instance, the controller's
// recorder (wired by the appliance) the VM starts, so only functions that
// exist take memory. The zero value is ready; it is safe for concurrent use.
type Series struct {
	mu  sync.Mutex
	fns map[string]*fnSeries
}

// bucket returns the current bucket of name for now, creating it; s.mu is held.
func (s *Series) bucket(name string, now time.Time) *seriesBucketData {
	slot := now.Unix() / int64(seriesBucket/time.Second)
	if s.fns == nil {
		s.fns = map[string]*fnSeries{}
	}
	f := s.fns[name]
	if f == nil {
		f = &fnSeries{}
		s.fns[name] = f
	}
	b := &f.b[slot%seriesBuckets]
	b.reset(slot)
	return b
}

func (s *Series) record(name string, status int, took time.Duration, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.bucket(name, now)
	b.n++
	if status == 0 || status >= 500 {
		b.errors++
	}
	if len(b.lat) < seriesMaxSample {
		b.lat = append(b.lat, float64(took.Microseconds())/1000)
	}
}

// VMStarted records that one VM of function started (method: "boot" or
// "restore"; others are not kept) in took, from start to its agent
// answering. It has the signature of controller.Recorder's method.
func (s *Series) VMStarted(function, method string, took time.Duration) {
	s.vmStarted(function, method, took, time.Now())
}

func (s *Series) vmStarted(function, method string, took time.Duration, now time.Time) {
	i := slices.Index(startMethods[:], method)
	if i < 0 || took < 0 {
		return
	}
	sec := took.Seconds()
	s.mu.Lock()
	defer s.mu.Unlock()
	d := &s.bucket(function, now).starts[i]
	d.n++
	d.max = max(d.max, sec)
	if len(d.s) < startsMaxSample {
		d.s = append(d.s, sec)
	}
}

// Forget drops a removed function's series.
func (s *Series) Forget(function string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.fns, function)
}

// seriesPoint is one bucket of GET /api/functions/<name>/series.
type seriesPoint struct {
	T        int64    `json:"t"` // bucket start, unix seconds
	Requests int      `json:"requests"`
	Errors   int      `json:"errors"`
	RPS      float64  `json:"rps"`
	P50Ms    *float64 `json:"p50Ms"` // null when the bucket has no request
	P99Ms    *float64 `json:"p99Ms"`
	// VM starts in the bucket by method; null when none started that way.
	Boot    *startPoint `json:"boot"`
	Restore *startPoint `json:"restore"`
}

// startPoint sums up the VM starts of one method in one bucket.
type startPoint struct {
	Count         int     `json:"count"`
	MedianSeconds float64 `json:"medianSeconds"`
	MaxSeconds    float64 `json:"maxSeconds"`
}

type seriesAnswer struct {
	Function      string        `json:"function"`
	BucketSeconds int           `json:"bucketSeconds"`
	Points        []seriesPoint `json:"points"` // oldest first, the last 15 minutes
}

func (s *Series) points(name string, now time.Time) []seriesPoint {
	size := int64(seriesBucket / time.Second)
	cur := now.Unix() / size
	out := make([]seriesPoint, 0, seriesBuckets)
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.fns[name]
	for slot := cur - seriesBuckets + 1; slot <= cur; slot++ {
		p := seriesPoint{T: slot * size}
		if f != nil {
			if b := &f.b[slot%seriesBuckets]; b.slot == slot {
				if b.n > 0 {
					p.Requests, p.Errors = b.n, b.errors
					p.RPS = float64(b.n) / float64(size)
					lat := slices.Clone(b.lat)
					slices.Sort(lat)
					p50, p99 := quantile(lat, 0.5), quantile(lat, 0.99)
					p.P50Ms, p.P99Ms = &p50, &p99
				}
				p.Boot, p.Restore = b.starts[0].point(), b.starts[1].point()
			}
		}
		out = append(out, p)
	}
	return out
}

func (d *startData) point() *startPoint {
	if d.n == 0 {
		return nil
	}
	s := slices.Clone(d.s)
	slices.Sort(s)
	return &startPoint{Count: d.n, MedianSeconds: median(s), MaxSeconds: d.max}
}

func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted)-1) + 0.5)
	return sorted[i]
}

// median of sorted (the mean of the middle two for an even count).
func median(sorted []float64) float64 {
	n := len(sorted)
	switch {
	case n == 0:
		return 0
	case n%2 == 1:
		return sorted[n/2]
	default:
		return (sorted[n/2-1] + sorted[n/2]) / 2
	}
}

// recordSeries is deferred by invoke once an instance serves the request.
func (g *Gateway) recordSeries(name string, start time.Time, c echo.Context) {
	now := time.Now()
	g.series.record(name, responseStatus(c), now.Sub(start), now)
}

func (g *Gateway) functionSeries(c echo.Context) error {
	name := functionParam(c)
	if _, err := g.fns.Get(c.Request().Context(), name); err != nil {
		return g.fail(c, err)
	}
	return c.JSON(http.StatusOK, seriesAnswer{Function: name, BucketSeconds: int(seriesBucket / time.Second), Points: g.series.points(name, time.Now())})
}
