package metrics

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// RecordingsSource reports the recording store's state at scrape time.
type RecordingsSource struct {
	Usage   func() int64  // bytes on disk
	Evicted func() uint64 // recordings evicted so far
}

// recordingMetrics are the session recording series.
type recordingMetrics struct {
	src atomic.Pointer[RecordingsSource]
}

func (m *Metrics) registerRecordings() {
	r := &m.recordings
	m.RecordingErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "recording_errors_total",
		Help:      "Recordings stopped by a write error (disk full, unwritable), by rule and recordings.onError action.",
	}, []string{"rule", "action"})
	m.Recordings = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "recordings_total",
		Help:      "Session recordings started, by rule and level.",
	}, []string{"rule", "level"})
	m.Registry.MustRegister(
		m.RecordingErrors, m.Recordings,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace,
			Name:      "recordings_bytes",
			Help:      "Disk used by session recordings (bounded by recordings.maxTotalSize).",
		}, func() float64 {
			if s := r.src.Load(); s != nil && s.Usage != nil {
				return float64(s.Usage())
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "recordings_evicted_total",
			Help:      "Recordings deleted, oldest first, to stay under recordings.maxTotalSize.",
		}, func() float64 {
			if s := r.src.Load(); s != nil && s.Evicted != nil {
				return float64(s.Evicted())
			}
			return 0
		}),
	)
}

// SetRecordingsSource sets where the recordings gauges read from.
func (m *Metrics) SetRecordingsSource(s RecordingsSource) { m.recordings.src.Store(&s) }

// EnableWorkloadLabels registers intransit_workload_connections_total
// (metrics.workloadLabels). Workload label values are bounded: a pod's
// namespace and service account, a container runtime, a systemd unit.
func (m *Metrics) EnableWorkloadLabels() {
	if m.WorkloadConnections != nil {
		return
	}
	m.WorkloadConnections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "workload_connections_total",
		Help:      "Intercepted connections by rule, verdict and workload (enabled by metrics.workloadLabels).",
	}, []string{"rule", "verdict", "workload"})
	m.Registry.MustRegister(m.WorkloadConnections)
}

// CountReload counts a configuration reload by result; the gauge keeps the
// time of the last applied one (alert when a refused reload is not followed
// by an applied one).
func (m *Metrics) CountReload(applied bool) {
	if applied {
		m.ConfigReloads.WithLabelValues("applied").Inc()
		m.ConfigLastApplied.SetToCurrentTime()
		return
	}
	m.ConfigReloads.WithLabelValues("refused").Inc()
}
