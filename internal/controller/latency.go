package controller

import (
	"slices"
	"time"
)

// LatencyWindow is how many recent invocations a function's latency
// summary covers.
const LatencyWindow = 1024

// latencies is a ring of the most recent invocation times.
type latencies struct {
	buf  [LatencyWindow]time.Duration
	n    int // samples held, up to LatencyWindow
	next int // where the next sample goes
}

func (l *latencies) add(d time.Duration) {
	l.buf[l.next] = d
	l.next = (l.next + 1) % len(l.buf)
	l.n = min(l.n+1, len(l.buf))
}

// summary computes the mean and the nearest-rank 50th and 99th percentiles.
func (l *latencies) summary() Latency {
	if l.n == 0 {
		return Latency{}
	}
	s := slices.Clone(l.buf[:l.n])
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return Latency{
		Samples: l.n,
		MeanMs:  ms(sum / time.Duration(l.n)),
		P50Ms:   ms(percentile(s, 50)),
		P99Ms:   ms(percentile(s, 99)),
	}
}

// percentile is the nearest-rank p-th percentile of sorted, not empty, s.
func percentile(s []time.Duration, p int) time.Duration {
	rank := (p*len(s) + 99) / 100 // ceil(p/100 × n)
	return s[max(rank, 1)-1]
}

// ms renders d in milliseconds with microsecond precision.
func ms(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}
