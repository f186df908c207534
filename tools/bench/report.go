package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// row is one line of the table: a metric of (a) and (b), and how (b)
// compares with (a) in the same round.
type row struct {
	name   string
	key    string
	format string
	delta  bool // compare as b-a (latency) rather than b/a
	target func(v float64) (string, bool)
}

var rows = []row{
	{name: "tput Gbit/s (1 stream)", key: "tput", format: "%.2f",
		target: func(v float64) (string, bool) { return "ratio ≥ 0.80", v >= 0.8 }},
	{name: "proxy CPU s/GiB (tput)", key: "tputcpu", format: "%.2f"},
	{name: "RR p50 µs (1 KiB)", key: "p50", format: "%.0f", delta: true,
		target: func(v float64) (string, bool) { return "added < 60 µs", v < 60 }},
	{name: "RR p99 µs (1 KiB)", key: "p99", format: "%.0f", delta: true},
	{name: "conn/s (c=32)", key: "cps", format: "%.0f"},
	{name: "conn p99 ms", key: "cp99", format: "%.1f"},
	{name: "proxy CPU ms/conn", key: "conncpu", format: "%.3f"},
	{name: "agent idle RSS KiB/conn", key: "idle", format: "%.1f"},
}

// spread is "median [min–max]" of vals, or "-" when there are none.
func spread(format string, vals []float64) string {
	if len(vals) == 0 {
		return "-"
	}
	s := slices.Sorted(slices.Values(vals))
	if len(s) == 1 {
		return fmt.Sprintf(format, s[0])
	}
	return fmt.Sprintf(format+" ["+format+"–"+format+"]", median(s), s[0], s[len(s)-1])
}

func median(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// recordRows are -mode record's: (a) record: off vs (b) record: full.
var recordRows = []row{
	{name: "tput Gbit/s (1 stream)", key: "tput", format: "%.2f",
		target: func(v float64) (string, bool) { return "recording costs < 25% (ratio > 0.75)", v > 0.75 }},
	{name: "proxy CPU s/GiB (tput)", key: "tputcpu", format: "%.2f"},
	{name: "RR p50 µs (1 KiB)", key: "p50", format: "%.0f", delta: true},
	{name: "RR p99 µs (1 KiB)", key: "p99", format: "%.0f", delta: true},
	{name: "conn/s (c=32)", key: "cps", format: "%.0f"},
	{name: "proxy CPU ms/conn", key: "conncpu", format: "%.3f"},
	{name: "agent idle RSS KiB/conn", key: "idle", format: "%.1f"},
}

func printReport(w io.Writer, p params, res *results, bin, load0 string) {
	rows, colA, colB := rows, "(a) direct TLS", "(b) via intransit"
	if p.record {
		rows, colA, colB = recordRows, "(a) record: off", "(b) record: full"
		fmt.Fprintf(w, "## intransit bench: plaintext client → intransit → TLS server, (a) record: off vs (b) record: full with redaction\n\n")
	} else {
		fmt.Fprintf(w, "## intransit bench: (a) client speaks TLS itself vs (b) plaintext client → intransit → same TLS server\n\n")
	}
	fmt.Fprintf(w, "Command: `%s` (agent: %s)  \n", strings.Join(append([]string{"go run ./tools/bench"}, os.Args[1:]...), " "), bin)
	fmt.Fprintf(w, "Machine: %s, %d CPUs, Linux %s, %s, %s  \n", cpuModel(), runtime.NumCPU(), kernel(), runtime.Version(), time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(w, "Load average (1/5/15 min): %s at start, %s at end (anything else running shares the cores)  \n", load0, loadAvg())
	fmt.Fprintf(w, "Sizes: %d rounds; tput %d MiB in %d KiB writes; pingpong %d+%d; connrate c=%d for %v; idle %d conns, hold %v\n\n",
		p.rounds, p.tputBytes>>20, p.chunk>>10, p.rrWarm, p.rrN, p.conc, p.connDur, p.idleN, p.idleHold)

	fmt.Fprintf(w, "| metric | n | %s | %s | b vs a, per round | target |\n", colA, colB)
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for _, r := range rows {
		var av, bv, cmp []float64
		for _, m := range res.rounds {
			a, okA := m["a."+r.key]
			b, okB := m["b."+r.key]
			if okA {
				av = append(av, a)
			}
			if okB {
				bv = append(bv, b)
			}
			if okA && okB {
				if r.delta {
					cmp = append(cmp, b-a)
				} else if a != 0 {
					cmp = append(cmp, b/a)
				}
			}
		}
		cmpS, tgt := "", ""
		if len(cmp) > 0 {
			if r.delta {
				cmpS = "+" + spread("%.0f", cmp) + " µs"
			} else {
				cmpS = "×" + spread("%.3f", cmp)
			}
			if r.target != nil {
				what, ok := r.target(median(slices.Sorted(slices.Values(cmp))))
				verdict := "MISS"
				if ok {
					verdict = "PASS"
				}
				tgt = what + ": **" + verdict + "**"
			}
		} else if r.target != nil {
			what, _ := r.target(0)
			tgt = what + ": no data"
		}
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s |\n", r.name, max(len(av), len(bv)),
			spread(r.format, av), spread(r.format, bv), cmpS, tgt)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Cells: median [min–max] over rounds. \"b vs a\": b/a (×) or b−a (+ µs) within each round, median [min–max];")
	fmt.Fprintln(w, "targets are judged on that median. Proxy CPU and RSS are the agent process's (utime+stime at 100 Hz, VmRSS).")
	if len(res.notes) > 0 {
		fmt.Fprintln(w, "\nNotes:")
		for _, n := range res.notes {
			fmt.Fprintf(w, "- %s\n", n)
		}
	}
}

func cpuModel() string {
	data, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
		}
	}
	return runtime.GOARCH
}

func loadAvg() string {
	data, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func kernel() string {
	data, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(data))
}

// tunnelRows are the lines of -mode tunnel's table. cmpA: compare (b) and
// (c) with (a); rows without an (a) value compare (b) with (c) only.
var tunnelRows = []row{
	{name: "tput Gbit/s (1 stream)", key: "tput", format: "%.2f"},
	{name: "agents CPU s/GiB (A+B, tput)", key: "tputcpu", format: "%.2f"},
	{name: "… agent A", key: "tputcpuA", format: "%.2f"},
	{name: "… agent B", key: "tputcpuB", format: "%.2f"},
	{name: "RR p50 µs (1 KiB)", key: "p50", format: "%.0f", delta: true},
	{name: "RR p99 µs (1 KiB)", key: "p99", format: "%.0f", delta: true},
	{name: "conn/s (c=32)", key: "cps", format: "%.0f"},
	{name: "conn p99 ms", key: "cp99", format: "%.1f"},
	{name: "agents CPU ms/conn (A+B)", key: "conncpu", format: "%.3f"},
	{name: "… agent A", key: "conncpuA", format: "%.3f"},
	{name: "… agent B", key: "conncpuB", format: "%.3f"},
	{name: "idle RSS KiB/conn (A+B)", key: "idle", format: "%.1f"},
	{name: "… agent A", key: "idleA", format: "%.1f"},
	{name: "… agent B", key: "idleB", format: "%.1f"},
	{name: "TCP conns A→B (idle)", key: "tconns", format: "%.0f"},
}

// compare is "×median [min–max]" of x/y, or "+median µs" of x−y for delta
// rows, over the rounds where both have a value; "" when none do.
func compare(res *results, r row, x, y string) string {
	var cmp []float64
	for _, m := range res.rounds {
		xv, okX := m[x+"."+r.key]
		yv, okY := m[y+"."+r.key]
		switch {
		case !okX || !okY:
		case r.delta:
			cmp = append(cmp, xv-yv)
		case yv != 0:
			cmp = append(cmp, xv/yv)
		}
	}
	if len(cmp) == 0 {
		return ""
	}
	if r.delta {
		return spread("%+.0f", cmp) + " µs"
	}
	return "×" + spread("%.3f", cmp)
}

func printTunnelReport(w io.Writer, p params, res *results, bin, load0 string) {
	fmt.Fprintf(w, "## intransit bench -mode tunnel: (a) direct plaintext vs (b) plaintext → agent A ══TLS 1.3 HTTP/2 CONNECT══► agent B → the same plaintext sink, (c) the same with one TLS connection per client connection\n\n")
	fmt.Fprintf(w, "Command: `%s` (agents: %s)  \n", strings.Join(append([]string{"go run ./tools/bench"}, os.Args[1:]...), " "), bin)
	fmt.Fprintf(w, "Machine: %s, %d CPUs, Linux %s, %s, %s  \n", cpuModel(), runtime.NumCPU(), kernel(), runtime.Version(), time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(w, "Load average (1/5/15 min): %s at start, %s at end (anything else running shares the cores)  \n", load0, loadAvg())
	fmt.Fprintf(w, "Sizes: %d rounds; tput %d MiB in %d KiB writes; pingpong %d+%d; connrate c=%d for %v; idle %d conns, hold %v\n\n",
		p.rounds, p.tputBytes>>20, p.chunk>>10, p.rrWarm, p.rrN, p.conc, p.connDur, p.idleN, p.idleHold)

	fmt.Fprintln(w, "| metric | n | (a) direct plaintext | (b) tunnel, pooled | (c) tunnel, no pooling | b vs a | c vs a | b vs c |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
	for _, r := range tunnelRows {
		vals := map[string][]float64{}
		n := 0
		for _, v := range tunnelVariants {
			for _, m := range res.rounds {
				if x, ok := m[v+"."+r.key]; ok {
					vals[v] = append(vals[v], x)
				}
			}
			n = max(n, len(vals[v]))
		}
		if n == 0 {
			continue
		}
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s | %s | %s |\n", r.name, n,
			spread(r.format, vals["a"]), spread(r.format, vals["b"]), spread(r.format, vals["c"]),
			compare(res, r, "b", "a"), compare(res, r, "c", "a"), compare(res, r, "b", "c"))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Cells: median [min–max] over rounds. \"x vs y\": x/y (×) or x−y (µs) within each round, median [min–max].")
	fmt.Fprintln(w, "Agents CPU: utime+stime of agent A + agent B (100 Hz ticks); idle RSS: growth of VmRSS of A + B per held connection,")
	fmt.Fprintln(w, "each variant on a fresh pair of agents. (a) has no agent on its path, so no CPU or RSS. \"TCP conns A→B\": established")
	fmt.Fprintln(w, "connections to agent B's tunnel port while the idle connections are held.")
	if len(res.notes) > 0 {
		fmt.Fprintln(w, "\nNotes:")
		for _, n := range res.notes {
			fmt.Fprintf(w, "- %s\n", n)
		}
	}
}
