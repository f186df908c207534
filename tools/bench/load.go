package main

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// dialFunc opens one client connection, ready for application bytes (for
// (a) the TLS handshake is part of it, as it is part of (b)'s first write).
type dialFunc func() (net.Conn, error)

// results are the values of each round, keyed "a.tput", "b.p50", ...
type results struct {
	rounds []map[string]float64
	notes  []string
}

func (r *results) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	progress("NOTE %s", msg)
	r.notes = append(r.notes, msg)
}

// clientTLS is what a good client does: TLS 1.3, X25519 first, session cache.
func clientTLS(caFile string) (*tls.Config, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("no CA certificate in " + caFile)
	}
	return &tls.Config{
		RootCAs:            pool,
		ServerName:         "127.0.0.1", // verified against the IP SAN, as the agent does
		MinVersion:         tls.VersionTLS13,
		CurvePreferences:   []tls.CurveID{tls.X25519, tls.CurveP256},
		ClientSessionCache: tls.NewLRUClientSessionCache(1024),
	}, nil
}

// run measures every round: a fresh agent for the idle scenario, then tput,
// pingpong and connrate with (a) and (b) interleaved, the first mode
// alternating between rounds.
func (b *bench) run() *results {
	res := &results{}
	cfg, err := clientTLS(b.certs.ca)
	if err != nil {
		b.die("%v", err)
	}
	nd := &net.Dialer{Timeout: 5 * time.Second}
	dials := map[string]dialFunc{
		"a": func() (net.Conn, error) { return tls.DialWithDialer(nd, "tcp", b.serverAddr, cfg) },
		"b": func() (net.Conn, error) { return nd.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", b.dummyPort)) },
	}
	p := b.p
	pidA := func() int { return 0 }
	if p.record {
		// Both through the agent: (a) record off, (b) record full.
		dials["a"] = dials["b"]
		dials["b"] = func() (net.Conn, error) { return nd.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", b.recPort)) }
		pidA = b.agentPID
	}
	for round := 1; round <= p.rounds; round++ {
		m := map[string]float64{}
		res.rounds = append(res.rounds, m)
		if err := b.startAgent(); err != nil {
			b.die("round %d: %v", round, err)
		}
		pid := b.agentPID()
		pids := map[string]int{"a": pidA(), "b": pid}
		progress("round %d/%d: agent pid %d", round, p.rounds, pid)

		if p.only["idle"] {
			kib, err := idle(dials["b"], p.idleN, p.idleHold, pid)
			if err != nil {
				res.note("round %d (b) idle: %v", round, err)
			} else {
				m["b.idle"] = kib
				progress("  (b) idle: %.1f KiB/conn", kib)
			}
		}
		// (a) first in odd rounds, (b) first in even ones; nil: not selected.
		modes := func(scenario string) []string {
			switch {
			case !p.only[scenario]:
				return nil
			case round%2 == 0:
				return []string{"b", "a"}
			}
			return []string{"a", "b"}
		}
		for _, mode := range modes("tput") {
			gbps, cpu, err := tput(dials[mode], p.tputBytes, p.chunk, p.tputBound, pids[mode])
			if err != nil {
				res.note("round %d (%s) tput: %v", round, mode, err)
				continue
			}
			m[mode+".tput"] = gbps
			if cpu >= 0 {
				m[mode+".tputcpu"] = cpu
			}
			progress("  (%s) tput: %.2f Gbit/s, proxy CPU %s s/GiB", mode, gbps, fmtOpt(cpu))
		}
		for _, mode := range modes("rr") {
			p50, p99, err := pingpong(dials[mode], p.rrWarm, p.rrN, p.rrBound)
			if err != nil {
				res.note("round %d (%s) pingpong: %v", round, mode, err)
				continue
			}
			m[mode+".p50"], m[mode+".p99"] = p50, p99
			progress("  (%s) pingpong: p50 %.0f µs, p99 %.0f µs", mode, p50, p99)
		}
		for _, mode := range modes("conn") {
			cr, err := connrate(dials[mode], p.conc, p.connDur, p.connBudget, pids[mode])
			if err != nil {
				res.note("round %d (%s) connrate: %v", round, mode, err)
				continue
			}
			if cr.errs > 0 {
				res.note("round %d (%s) connrate: %d failed connections (first: %s)", round, mode, cr.errs, cr.firstErr)
			}
			m[mode+".cps"], m[mode+".cp99"] = cr.perSec, cr.p99ms
			if cr.cpuMs >= 0 {
				m[mode+".conncpu"] = cr.cpuMs
			}
			progress("  (%s) connrate: %.0f conn/s, p99 %.1f ms, proxy CPU %s ms/conn", mode, cr.perSec, cr.p99ms, fmtOpt(cr.cpuMs))
		}
		b.stopAgent()
	}
	return res
}

func fmtOpt(v float64) string {
	if v < 0 {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}

// cpuTicks is utime+stime of pid in clock ticks (100 Hz); -1 without a pid.
func cpuTicks(pid int) int64 {
	if pid == 0 {
		return -1
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return u + k
}

// rssKiB is VmRSS of pid.
func rssKiB(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			return strconv.ParseInt(strings.Fields(v)[0], 10, 64)
		}
	}
	return 0, errors.New("no VmRSS")
}

// tput pushes total bytes over one stream in chunk-sized writes after a 'T'
// header and waits for the server's byte count. It returns Gbit/s and the
// proxy's CPU seconds per GiB (-1 without a proxy).
func tput(dial dialFunc, total int64, chunk int, bound time.Duration, pid int) (gbps, cpuPerGiB float64, err error) {
	buf := make([]byte, chunk)
	_, _ = rand.Read(buf)
	c0 := cpuTicks(pid)
	start := time.Now()
	c, err := dial()
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	deadline := start.Add(bound)
	_ = c.SetDeadline(deadline.Add(10 * time.Second))
	var h [9]byte
	h[0] = 'T'
	binary.BigEndian.PutUint64(h[1:], uint64(total))
	if _, err := c.Write(h[:]); err != nil {
		return 0, 0, err
	}
	for sent := int64(0); sent < total; {
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("time bound %v hit after %d bytes", bound, sent)
		}
		w := buf[:min(int64(len(buf)), total-sent)]
		n, err := c.Write(w)
		sent += int64(n)
		if err != nil {
			return 0, 0, err
		}
	}
	var r [8]byte
	if _, err := io.ReadFull(c, r[:]); err != nil {
		return 0, 0, fmt.Errorf("read count: %w", err)
	}
	el := time.Since(start)
	if got := int64(binary.BigEndian.Uint64(r[:])); got != total {
		return 0, 0, fmt.Errorf("server counted %d bytes, sent %d", got, total)
	}
	cpuPerGiB = -1
	if c0 >= 0 {
		cpuPerGiB = float64(cpuTicks(pid)-c0) / 100 / (float64(total) / (1 << 30))
	}
	return float64(total) * 8 / el.Seconds() / 1e9, cpuPerGiB, nil
}

// pct is the p-quantile of sorted d (nearest rank below, as shared/bench).
func pct(d []time.Duration, p float64) time.Duration {
	return d[int(float64(len(d)-1)*p)]
}

func micros(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

// pingpong does warm+n 1 KiB round trips on one connection and returns the
// p50 and p99 of the measured ones in µs.
func pingpong(dial dialFunc, warm, n int, bound time.Duration) (p50, p99 float64, err error) {
	c, err := dial()
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	deadline := time.Now().Add(bound)
	_ = c.SetDeadline(deadline.Add(10 * time.Second))
	msg := make([]byte, 1024)
	_, _ = rand.Read(msg)
	resp := make([]byte, len(msg))
	if _, err := c.Write([]byte{'E'}); err != nil {
		return 0, 0, err
	}
	lat := make([]time.Duration, 0, n)
	for i := 0; i < warm+n; i++ {
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("time bound %v hit after %d round trips", bound, i)
		}
		t0 := time.Now()
		if _, err := c.Write(msg); err != nil {
			return 0, 0, err
		}
		if _, err := io.ReadFull(c, resp); err != nil {
			return 0, 0, err
		}
		if i >= warm {
			lat = append(lat, time.Since(t0))
		}
	}
	slices.Sort(lat)
	return micros(pct(lat, .5)), micros(pct(lat, .99)), nil
}

type connResult struct {
	perSec, p99ms, cpuMs float64
	n                    int // successful connections
	errs                 int64
	firstErr             string
}

// connrate runs conc workers for dur, each repeating: connect, 'E' + 1 KiB,
// read 1 KiB back, close. It reports successful connections per second,
// their p99 latency in ms and the proxy's CPU ms per connection (-1 without
// a proxy).
func connrate(dial dialFunc, conc int, dur time.Duration, budget int, pid int) (connResult, error) {
	msg := make([]byte, 1025)
	msg[0] = 'E'
	_, _ = rand.Read(msg[1:])
	var (
		wg       sync.WaitGroup
		started  atomic.Int64
		errs     atomic.Int64
		firstErr atomic.Value
		lats     = make([][]time.Duration, conc)
	)
	fail := func(err error) {
		errs.Add(1)
		firstErr.CompareAndSwap(nil, err.Error())
	}
	c0 := cpuTicks(pid)
	start := time.Now()
	deadline := start.Add(dur)
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp := make([]byte, 1024)
			for time.Now().Before(deadline) && started.Add(1) <= int64(budget) {
				t0 := time.Now()
				c, err := dial()
				if err != nil {
					fail(err)
					time.Sleep(10 * time.Millisecond)
					continue
				}
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				_, err = c.Write(msg)
				if err == nil {
					_, err = io.ReadFull(c, resp)
				}
				c.Close()
				if err != nil {
					fail(err)
					continue
				}
				lats[w] = append(lats[w], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	c1 := cpuTicks(pid)
	all := slices.Concat(lats...)
	fe, _ := firstErr.Load().(string)
	if len(all) == 0 {
		return connResult{}, fmt.Errorf("no successful connection (%d errors, first: %s)", errs.Load(), fe)
	}
	slices.Sort(all)
	r := connResult{
		perSec:   float64(len(all)) / el.Seconds(),
		n:        len(all),
		p99ms:    micros(pct(all, .99)) / 1e3,
		cpuMs:    -1,
		errs:     errs.Load(),
		firstErr: fe,
	}
	if c0 >= 0 {
		r.cpuMs = float64(c1-c0) * 10 / float64(len(all))
	}
	return r, nil
}

// idle opens n connections that each complete one 1 KiB echo (so every hop
// is established), holds them, and returns the growth of pid's VmRSS per
// connection in KiB.
func idle(dial dialFunc, n int, hold time.Duration, pid int) (float64, error) {
	kib, err := idleRSS(dial, n, hold, nil, pid)
	if err != nil {
		return 0, err
	}
	return kib[0], nil
}

// idleRSS is idle for several processes: the growth of each pid's VmRSS per
// connection in KiB, in the order of pids. held, if not nil, runs while the
// connections are still open, after the RSS samples.
func idleRSS(dial dialFunc, n int, hold time.Duration, held func(), pids ...int) ([]float64, error) {
	time.Sleep(500 * time.Millisecond)
	r0 := make([]int64, len(pids))
	for i, pid := range pids {
		var err error
		if r0[i], err = rssKiB(pid); err != nil {
			return nil, err
		}
	}
	msg := make([]byte, 1025)
	msg[0] = 'E'
	resp := make([]byte, 1024)
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
		time.Sleep(200 * time.Millisecond) // let the sessions end before the next scenario
	}()
	for range n {
		c, err := dial()
		if err != nil {
			return nil, fmt.Errorf("connection %d: %w", len(conns)+1, err)
		}
		conns = append(conns, c)
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(msg); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(c, resp); err != nil {
			return nil, fmt.Errorf("connection %d: echo: %w", len(conns), err)
		}
		_ = c.SetDeadline(time.Time{})
	}
	time.Sleep(hold)
	kib := make([]float64, len(pids))
	for i, pid := range pids {
		r1, err := rssKiB(pid)
		if err != nil {
			return nil, err
		}
		kib[i] = float64(r1-r0[i]) / float64(n)
	}
	if held != nil {
		held()
	}
	return kib, nil
}
