package metrics

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/intransit/intransit/pkg/audit"
)

var testRules = []string{"postgres", "redis"}

func TestNamesPresentAndPresetToZero(t *testing.T) {
	m := New(testRules)
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, f := range families {
		got[f.GetName()] = true
	}
	for _, name := range []string{
		"intransit_connections_total",
		"intransit_bytes_total",
		"intransit_active_sessions",
		"intransit_upstream_handshake_duration_seconds",
		"intransit_upstream_errors_total",
		"intransit_session_duration_seconds",
		"intransit_bpf_events_lost_total",
		"intransit_audit_errors_total",
		"intransit_bpf_map_fill_errors_total",
		"go_goroutines",
		"process_cpu_seconds_total",
	} {
		if !got[name] {
			t.Errorf("metric %s not exported", name)
		}
	}

	counts := map[string]int{
		"intransit_connections_total":                   len(testRules) * len(audit.Verdicts()),
		"intransit_bytes_total":                         len(testRules) * 2,
		"intransit_active_sessions":                     len(testRules),
		"intransit_upstream_errors_total":               len(testRules) * len(UpstreamErrorReasons()),
		"intransit_upstream_handshake_duration_seconds": len(testRules),
		"intransit_session_duration_seconds":            len(testRules),
	}
	for name, want := range counts {
		if n, err := testutil.GatherAndCount(m.Registry, name); err != nil || n != want {
			t.Errorf("%s: %d series (err %v), want %d", name, n, err, want)
		}
	}

	for _, r := range testRules {
		for _, v := range audit.Verdicts() {
			if got := testutil.ToFloat64(m.Connections.WithLabelValues(r, string(v))); got != 0 {
				t.Errorf("connections{%s,%s} = %v", r, v, got)
			}
		}
		for _, d := range []string{DirectionSent, DirectionReceived} {
			if got := testutil.ToFloat64(m.Bytes.WithLabelValues(r, d)); got != 0 {
				t.Errorf("bytes{%s,%s} = %v", r, d, got)
			}
		}
		if got := testutil.ToFloat64(m.ActiveSessions.WithLabelValues(r)); got != 0 {
			t.Errorf("active_sessions{%s} = %v", r, got)
		}
	}
	if got := testutil.ToFloat64(m.EventsLost); got != 0 {
		t.Errorf("events lost = %v", got)
	}
}

func TestLintClean(t *testing.T) {
	m := New(testRules)
	m.SetMapFillSource(func() ([]MapFill, error) {
		return []MapFill{{Map: "conn_map", Entries: 1, Capacity: 10}}, nil
	})
	problems, err := testutil.GatherAndLint(m.Registry)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestAddRulesKeepsExistingValues(t *testing.T) {
	m := New([]string{"postgres"})
	m.Connections.WithLabelValues("postgres", string(audit.VerdictUpgraded)).Inc()
	m.ActiveSessions.WithLabelValues("postgres").Set(3)

	m.AddRules([]string{"postgres", "mysql"})

	if got := testutil.ToFloat64(m.Connections.WithLabelValues("postgres", string(audit.VerdictUpgraded))); got != 1 {
		t.Errorf("reload reset connections to %v", got)
	}
	if got := testutil.ToFloat64(m.ActiveSessions.WithLabelValues("postgres")); got != 3 {
		t.Errorf("reload reset active sessions to %v", got)
	}
	if n := testutil.CollectAndCount(m.Connections); n != 2*len(audit.Verdicts()) {
		t.Errorf("connections series = %d after adding mysql", n)
	}
	if n := testutil.CollectAndCount(m.ActiveSessions); n != 2 {
		t.Errorf("active sessions series = %d after adding mysql", n)
	}
}

func TestAuditErrorsSource(t *testing.T) {
	m := New(nil)
	if got := gatherValue(t, m, "intransit_audit_errors_total", ""); got != 0 {
		t.Errorf("without source = %v", got)
	}
	m.SetAuditErrorsSource(func() uint64 { return 7 })
	if got := gatherValue(t, m, "intransit_audit_errors_total", ""); got != 7 {
		t.Errorf("with source = %v, want 7", got)
	}
}

func TestMapFillValuesAndCaching(t *testing.T) {
	m := New(nil)
	now := time.Unix(1000, 0)
	m.mapFill.now = func() time.Time { return now }
	calls := 0
	entries := 5
	m.SetMapFillSource(func() ([]MapFill, error) {
		calls++
		return []MapFill{
			{Map: "conn_map", Entries: entries, Capacity: 65536},
			{Map: "rules", Entries: 2, Capacity: 64},
			{Map: "conn_map", Entries: 999, Capacity: 1}, // duplicate: ignored
		}, nil
	})

	if got := gatherValue(t, m, "intransit_bpf_map_entries", "conn_map"); got != 5 {
		t.Errorf("entries{conn_map} = %v, want 5", got)
	}
	if got := gatherValue(t, m, "intransit_bpf_map_capacity", "conn_map"); got != 65536 {
		t.Errorf("capacity{conn_map} = %v, want 65536", got)
	}
	if got := gatherValue(t, m, "intransit_bpf_map_capacity", "rules"); got != 64 {
		t.Errorf("capacity{rules} = %v, want 64", got)
	}
	if calls != 1 {
		t.Fatalf("source called %d times for scrapes within the TTL, want 1", calls)
	}

	entries = 6
	now = now.Add(mapFillTTL - time.Millisecond)
	if got := gatherValue(t, m, "intransit_bpf_map_entries", "conn_map"); got != 5 || calls != 1 {
		t.Errorf("within TTL: entries %v, calls %d; want cached 5, 1 call", got, calls)
	}
	now = now.Add(time.Millisecond)
	if got := gatherValue(t, m, "intransit_bpf_map_entries", "conn_map"); got != 6 || calls != 2 {
		t.Errorf("after TTL: entries %v, calls %d; want 6, 2 calls", got, calls)
	}
}

func TestMapFillErrorsNeverFailScrape(t *testing.T) {
	m := New(nil)
	now := time.Unix(1000, 0)
	m.mapFill.now = func() time.Time { return now }

	m.SetMapFillSource(func() ([]MapFill, error) {
		return []MapFill{{Map: "ok_map", Entries: 1, Capacity: 2}}, errors.New("walk rules: permission denied")
	})
	if got := gatherValue(t, m, "intransit_bpf_map_entries", "ok_map"); got != 1 {
		t.Errorf("partial result entries = %v, want 1", got)
	}
	if got := gatherValue(t, m, "intransit_bpf_map_fill_errors_total", ""); got != 1 {
		t.Errorf("errors = %v, want 1", got)
	}

	m.SetMapFillSource(func() ([]MapFill, error) { panic("boom") })
	if got := gatherValue(t, m, "intransit_bpf_map_fill_errors_total", ""); got != 2 {
		t.Errorf("after panic errors = %v, want 2", got)
	}

	m.SetMapFillSource(func() ([]MapFill, error) {
		return []MapFill{{Map: "bad\xff", Entries: 1, Capacity: 1}}, nil
	})
	now = now.Add(mapFillTTL)
	if _, err := m.Registry.Gather(); err != nil {
		t.Errorf("invalid map name failed the scrape: %v", err)
	}
}

// gatherValue returns the value of the series of name whose only label (if
// any) has value label. It fails the test if the scrape errors.
func gatherValue(t *testing.T, m *Metrics, name, label string) float64 {
	t.Helper()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, s := range f.GetMetric() {
			if label != "" && (len(s.GetLabel()) != 1 || s.GetLabel()[0].GetValue() != label) {
				continue
			}
			switch {
			case s.Gauge != nil:
				return s.GetGauge().GetValue()
			case s.Counter != nil:
				return s.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no series %s{%s}", name, strings.TrimSpace(label))
	return 0
}

func TestCountReload(t *testing.T) {
	m := New([]string{"r"})
	start := testutil.ToFloat64(m.ConfigLastApplied)
	if start == 0 {
		t.Fatal("config_last_applied_timestamp_seconds not set at start")
	}
	m.CountReload(false)
	m.CountReload(true)
	m.CountReload(true)
	if a, r := testutil.ToFloat64(m.ConfigReloads.WithLabelValues("applied")), testutil.ToFloat64(m.ConfigReloads.WithLabelValues("refused")); a != 2 || r != 1 {
		t.Errorf("reloads applied %v refused %v, want 2 and 1", a, r)
	}
	if testutil.ToFloat64(m.ConfigLastApplied) < start {
		t.Error("last-applied time went backwards")
	}
}

func TestRecordingsAndWorkloadMetrics(t *testing.T) {
	m := New([]string{"r"})
	m.SetRecordingsSource(RecordingsSource{Usage: func() int64 { return 4096 }, Evicted: func() uint64 { return 3 }})
	m.EnableWorkloadLabels()
	m.EnableWorkloadLabels() // idempotent
	m.WorkloadConnections.WithLabelValues("r", "UPGRADED", "agents/planner").Inc()
	want := `
# HELP intransit_recordings_bytes Disk used by session recordings (bounded by recordings.maxTotalSize).
# TYPE intransit_recordings_bytes gauge
intransit_recordings_bytes 4096
# HELP intransit_recordings_evicted_total Recordings deleted, oldest first, to stay under recordings.maxTotalSize.
# TYPE intransit_recordings_evicted_total counter
intransit_recordings_evicted_total 3
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want), "intransit_recordings_bytes", "intransit_recordings_evicted_total"); err != nil {
		t.Error(err)
	}
	if got := testutil.ToFloat64(m.WorkloadConnections.WithLabelValues("r", "UPGRADED", "agents/planner")); got != 1 {
		t.Errorf("workload counter = %v", got)
	}
}
