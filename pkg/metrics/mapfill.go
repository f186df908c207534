package metrics

import (
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// mapFillTTL keeps frequent scrapes from walking big BPF maps every time.
const mapFillTTL = 2 * time.Second

// MapFill is the fill level of one BPF map.
type MapFill struct {
	Map      string
	Entries  int
	Capacity int
}

// mapFillCollector reports MapFill values gathered at scrape time. Source
// errors are counted and never fail the scrape.
type mapFillCollector struct {
	entries  *prometheus.Desc
	capacity *prometheus.Desc
	errors   prometheus.Counter
	now      func() time.Time // swapped in tests

	mu      sync.Mutex // serializes source calls so concurrent scrapes share one walk
	source  func() ([]MapFill, error)
	cached  []MapFill
	fetched time.Time
}

func newMapFillCollector() *mapFillCollector {
	return &mapFillCollector{
		entries: prometheus.NewDesc(namespace+"_bpf_map_entries",
			"Entries currently in a BPF map.", []string{"map"}, nil),
		capacity: prometheus.NewDesc(namespace+"_bpf_map_capacity",
			"Maximum entries of a BPF map.", []string{"map"}, nil),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "bpf_map_fill_errors_total",
			Help:      "Failures reading BPF map fill levels.",
		}),
		now: time.Now,
	}
}

func (c *mapFillCollector) setSource(fn func() ([]MapFill, error)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.source = fn
	c.cached, c.fetched = nil, time.Time{}
}

func (c *mapFillCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.entries
	ch <- c.capacity
	c.errors.Describe(ch)
}

func (c *mapFillCollector) Collect(ch chan<- prometheus.Metric) {
	seen := make(map[string]bool)
	for _, f := range c.fills() {
		// A duplicate series would make the whole scrape fail.
		if seen[f.Map] {
			continue
		}
		seen[f.Map] = true
		entries, err1 := prometheus.NewConstMetric(c.entries, prometheus.GaugeValue, float64(f.Entries), f.Map)
		capacity, err2 := prometheus.NewConstMetric(c.capacity, prometheus.GaugeValue, float64(f.Capacity), f.Map)
		if err1 != nil || err2 != nil { // e.g. a map name that is not valid UTF-8
			c.errors.Inc()
			continue
		}
		ch <- entries
		ch <- capacity
	}
	c.errors.Collect(ch)
}

// fills returns the cached fill levels, refreshing them when stale. Levels
// returned alongside an error are still reported: one unreadable map should
// not hide the others.
func (c *mapFillCollector) fills() []MapFill {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.source == nil {
		return nil
	}
	now := c.now()
	if !c.fetched.IsZero() && now.Sub(c.fetched) < mapFillTTL {
		return c.cached
	}
	fills, err := c.call()
	if err != nil {
		c.errors.Inc()
	}
	c.cached, c.fetched = fills, now
	return fills
}

// call runs the source, turning a panic into an error so a buggy source
// cannot take the process down during a scrape.
func (c *mapFillCollector) call() (fills []MapFill, err error) {
	defer func() {
		if r := recover(); r != nil {
			fills, err = nil, fmt.Errorf("metrics: map fill source panicked: %v", r)
		}
	}()
	return c.source()
}
