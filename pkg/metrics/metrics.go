// Package metrics exposes intransit's Prometheus metrics and the health
// endpoints.
package metrics

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/intransit/intransit/pkg/audit"
	"github.com/intransit/intransit/pkg/upstream"
)

const namespace = "intransit"

// Values of the direction label on intransit_bytes_total.
const (
	DirectionSent     = "sent"
	DirectionReceived = "received"
)

// ReasonNoRule labels a redirected connection whose rule no longer enforces
// (removed or changed by a reload).
const ReasonNoRule = "no_rule"

// ReasonRecording labels a session refused because its recording could not
// start under recordings.onError: close.
const ReasonRecording = "recording_error"

// UpstreamErrorReasons returns every reason label value: upstream.Reason's
// fixed set plus ReasonNoRule, so the label stays low-cardinality.
func UpstreamErrorReasons() []string {
	return append(upstream.Reasons(), ReasonNoRule, ReasonRecording)
}

// Metrics holds intransit's collectors, registered on their own Registry.
type Metrics struct {
	Connections      *prometheus.CounterVec   // {rule,verdict}
	Bytes            *prometheus.CounterVec   // {rule,direction}
	ActiveSessions   *prometheus.GaugeVec     // {rule}
	HandshakeSeconds *prometheus.HistogramVec // {rule}
	UpstreamErrors   *prometheus.CounterVec   // {rule,reason}
	SessionSeconds   *prometheus.HistogramVec // {rule}
	EventsLost       prometheus.Counter
	Registry         *prometheus.Registry

	Recordings        *prometheus.CounterVec // {rule,level}
	RecordingErrors   *prometheus.CounterVec // {rule,action}
	ConfigReloads     *prometheus.CounterVec // {result}: applied, refused
	ConfigLastApplied prometheus.Gauge
	// WorkloadConnections is nil unless EnableWorkloadLabels ran.
	WorkloadConnections *prometheus.CounterVec // {rule,verdict,workload}
	recordings          recordingMetrics

	auditErrors atomic.Pointer[func() uint64]
	mapFill     *mapFillCollector
}

// New creates and registers all metrics (plus the Go and process
// collectors) and pre-sets the series of the given rules to zero.
func New(rules []string) *Metrics {
	m := &Metrics{
		Connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "connections_total",
			Help:      "Intercepted connections by rule and verdict.",
		}, []string{"rule", "verdict"}),
		Bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "bytes_total",
			Help:      "Bytes relayed by rule and direction (sent to or received from upstream).",
		}, []string{"rule", "direction"}),
		ActiveSessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace,
			Name:      "active_sessions",
			Help:      "Proxied sessions currently open.",
		}, []string{"rule"}),
		HandshakeSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace,
			Name:      "upstream_handshake_duration_seconds",
			Help:      "Time to dial and complete the TLS handshake with the upstream.",
			Buckets:   []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5},
		}, []string{"rule"}),
		UpstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "upstream_errors_total",
			Help:      "Failures reaching or verifying the upstream, by reason.",
		}, []string{"rule", "reason"}),
		SessionSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace,
			Name:      "session_duration_seconds",
			Help:      "Lifetime of proxied sessions.",
			Buckets:   []float64{0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 14400},
		}, []string{"rule"}),
		EventsLost: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "bpf_events_lost_total",
			Help:      "BPF events lost in the ring buffer or failing to decode.",
		}),
		Registry: prometheus.NewRegistry(),
	}
	auditErrors := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "audit_errors_total",
		Help:      "Audit trail lines that could not be written.",
	}, m.readAuditErrors)
	m.mapFill = newMapFillCollector()

	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.Connections, m.Bytes, m.ActiveSessions, m.HandshakeSeconds,
		m.UpstreamErrors, m.SessionSeconds, m.EventsLost, auditErrors, m.mapFill,
	)
	m.registerRecordings()
	m.ConfigReloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "config_reloads_total",
		Help:      "Configuration reloads (file change, SIGHUP) by result: applied or refused (the previous configuration keeps serving).",
	}, []string{"result"})
	m.ConfigLastApplied = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace,
		Name:      "config_last_applied_timestamp_seconds",
		Help:      "When the configuration in service was loaded (start or last applied reload).",
	})
	m.ConfigReloads.WithLabelValues("applied")
	m.ConfigReloads.WithLabelValues("refused")
	m.ConfigLastApplied.SetToCurrentTime()
	m.Registry.MustRegister(m.ConfigReloads, m.ConfigLastApplied)
	m.AddRules(rules)
	return m
}

// AddRules pre-sets the series of rules (e.g. new ones after a config
// reload) so dashboards and rate() see zeros rather than missing series.
// Existing series keep their values.
func (m *Metrics) AddRules(rules []string) {
	for _, r := range rules {
		for _, v := range audit.Verdicts() {
			m.Connections.WithLabelValues(r, string(v))
		}
		m.Bytes.WithLabelValues(r, DirectionSent)
		m.Bytes.WithLabelValues(r, DirectionReceived)
		for _, reason := range UpstreamErrorReasons() {
			m.UpstreamErrors.WithLabelValues(r, reason)
		}
		// WithLabelValues creates the child without resetting a live gauge.
		m.ActiveSessions.WithLabelValues(r)
		m.HandshakeSeconds.WithLabelValues(r)
		m.SessionSeconds.WithLabelValues(r)
		m.RecordingErrors.WithLabelValues(r, "continue")
		m.RecordingErrors.WithLabelValues(r, "close")
	}
}

// SetAuditErrorsSource makes intransit_audit_errors_total report fn, e.g.
// (*audit.Logger).Errors.
func (m *Metrics) SetAuditErrorsSource(fn func() uint64) {
	m.auditErrors.Store(&fn)
}

func (m *Metrics) readAuditErrors() float64 {
	fn := m.auditErrors.Load()
	if fn == nil || *fn == nil {
		return 0
	}
	return float64((*fn)())
}

// SetMapFillSource sets the function reporting BPF map fill levels. It is
// called at scrape time, at most every two seconds.
func (m *Metrics) SetMapFillSource(fn func() ([]MapFill, error)) {
	m.mapFill.setSource(fn)
}
