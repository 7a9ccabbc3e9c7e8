package gateway

import (
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
)

// Per-function time series for the dashboard's charts: the last 15
// minutes of invocations in 10-second buckets, kept in memory only.
const (
	seriesBucket    = 10 * time.Second
	seriesBuckets   = 90  // 15 minutes
	seriesMaxSample = 256 // latencies kept per bucket for p50/p99
)

type seriesBucketData struct {
	slot   int64 // unix time / bucket size; stale when not the current one
	n      int
	errors int
	lat    []float64 // ms, the first seriesMaxSample of the bucket
}

type fnSeries struct {
	b [seriesBuckets]seriesBucketData
}

// seriesStore records invocations that reached an instance, so only
// functions that exist take memory.
type seriesStore struct {
	mu  sync.Mutex
	fns map[string]*fnSeries
}

func (s *seriesStore) record(name string, status int, took time.Duration, now time.Time) {
	slot := now.Unix() / int64(seriesBucket/time.Second)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fns == nil {
		s.fns = map[string]*fnSeries{}
	}
	f := s.fns[name]
	if f == nil {
		f = &fnSeries{}
		s.fns[name] = f
	}
	b := &f.b[slot%seriesBuckets]
	if b.slot != slot {
		*b = seriesBucketData{slot: slot, lat: b.lat[:0]}
	}
	b.n++
	if status == 0 || status >= 500 {
		b.errors++
	}
	if len(b.lat) < seriesMaxSample {
		b.lat = append(b.lat, float64(took.Microseconds())/1000)
	}
}

// seriesPoint is one bucket of GET /api/functions/<name>/series.
type seriesPoint struct {
	T        int64    `json:"t"` // bucket start, unix seconds
	Requests int      `json:"requests"`
	Errors   int      `json:"errors"`
	RPS      float64  `json:"rps"`
	P50Ms    *float64 `json:"p50Ms"` // null when the bucket has no request
	P99Ms    *float64 `json:"p99Ms"`
}

type seriesAnswer struct {
	Function      string        `json:"function"`
	BucketSeconds int           `json:"bucketSeconds"`
	Points        []seriesPoint `json:"points"` // oldest first, the last 15 minutes
}

func (s *seriesStore) points(name string, now time.Time) []seriesPoint {
	size := int64(seriesBucket / time.Second)
	cur := now.Unix() / size
	out := make([]seriesPoint, 0, seriesBuckets)
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.fns[name]
	for slot := cur - seriesBuckets + 1; slot <= cur; slot++ {
		p := seriesPoint{T: slot * size}
		if f != nil {
			if b := &f.b[slot%seriesBuckets]; b.slot == slot && b.n > 0 {
				p.Requests, p.Errors = b.n, b.errors
				p.RPS = float64(b.n) / float64(size)
				lat := slices.Clone(b.lat)
				slices.Sort(lat)
				p50, p99 := quantile(lat, 0.5), quantile(lat, 0.99)
				p.P50Ms, p.P99Ms = &p50, &p99
			}
		}
		out = append(out, p)
	}
	return out
}

func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted)-1) + 0.5)
	return sorted[i]
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
