package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/intransit/intransit/pkg/api"
	"github.com/intransit/intransit/pkg/config"
	"github.com/intransit/intransit/pkg/recording"
	"github.com/intransit/intransit/pkg/transcript"
)

// store says where recordings are read from: the agent's answer, or --dir.
type store struct {
	dir    string
	key    []byte
	active map[string]bool
}

type storeFlags struct {
	cfgPath, socket, dir, keyFile string
}

func (f *storeFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&f.cfgPath, "config", "c", "/etc/intransit/intransit.yaml", "configuration file (for api.socket, recordings.dir and recordings.keyFile)")
	cmd.Flags().StringVar(&f.socket, "socket", "", "agent API socket (overrides the config)")
	cmd.Flags().StringVar(&f.dir, "dir", "", "read recordings from this directory instead of asking the agent")
	cmd.Flags().StringVar(&f.keyFile, "key-file", "", "HMAC key of the hash chain (recordings.keyFile), with --dir")
}

// open finds the recordings: --dir, else the agent's API, else the config.
func (f *storeFlags) open(ctx context.Context) (*store, error) {
	s := &store{active: map[string]bool{}}
	cfg, cfgErr := config.Load(f.cfgPath)
	keyFile := f.keyFile
	switch {
	case f.dir != "":
		s.dir = f.dir
	default:
		socket := f.socket
		if socket == "" && cfgErr == nil {
			socket = cfg.API.Socket
		}
		if socket == "" {
			socket = config.DefaultAPISocket
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		r, err := api.NewClient(socket).Recordings(cctx)
		cancel()
		switch {
		case err == nil:
			s.dir = r.Dir
			if keyFile == "" {
				keyFile = r.KeyFile
			}
			for _, id := range r.Active {
				s.active[id] = true
			}
		case cfgErr == nil:
			// Agent not running: the files are still there.
			s.dir = cfg.Recordings.Dir
			if keyFile == "" {
				keyFile = cfg.Recordings.KeyFile
			}
		default:
			return nil, fmt.Errorf("%w; and no readable config (%v): pass --dir", err, cfgErr)
		}
	}
	if keyFile != "" {
		k, err := os.ReadFile(keyFile)
		if err != nil {
			// The path may come from the agent or the config, not the flag.
			return nil, fmt.Errorf("recordings key file (--key-file, recordings.keyFile): %w", err)
		}
		s.key = k
	}
	return s, nil
}

// status is a recording's status as the CLI shows it: an unsealed
// recording of a session the agent says is open is "open", not
// "unfinished" (the file lock says so too, where it is visible). A file
// read while the agent was writing it may also end mid-chunk: that is
// "open" too, as the reader says when it sees the lock.
func (s *store) status(id string, st recording.Status) string {
	if s.reopened(id, st) {
		return string(recording.StatusOpen)
	}
	return string(st)
}

// reopened says whether status maps st to open.
func (s *store) reopened(id string, st recording.Status) bool {
	return s.active[id] && (st == recording.StatusUnfinished || st == recording.StatusTruncated)
}

// problems drops, for a recording the agent says is open, the reader's
// "unfinished: no seal" and "truncated: ..." problems: they describe a
// writer that is gone, and the reader does not report them either when it
// sees the writer's lock.
func (s *store) problems(id string, st recording.Status, ps []string) []string {
	if !s.reopened(id, st) {
		return ps
	}
	var out []string
	for _, p := range ps {
		if !strings.HasPrefix(p, "unfinished: ") && !strings.HasPrefix(p, "truncated: ") {
			out = append(out, p)
		}
	}
	return out
}

func sessionsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sessions",
		Short: "List, show, replay, export and verify recorded sessions",
	}
	cmd.AddCommand(sessionsListCmd(), sessionsShowCmd(), sessionsReplayCmd(), sessionsExportCmd(), sessionsVerifyCmd())
	return cmd
}

// listFilter selects sessions for `sessions list`.
type listFilter struct {
	since, until, workload, destination, verdict string
}

// parseWhen accepts RFC 3339 times and durations meaning "that long ago".
func parseWhen(flag, s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--%s %q: want an RFC 3339 time (2026-11-22T10:00:00Z) or a duration ago (90m)", flag, s)
	}
	return t, nil
}

func (f listFilter) match(now time.Time) (func(recording.Summary) bool, error) {
	since, err := parseWhen("since", f.since, now)
	if err != nil {
		return nil, err
	}
	until, err := parseWhen("until", f.until, now)
	if err != nil {
		return nil, err
	}
	var dst netip.Prefix
	if f.destination != "" && strings.Contains(f.destination, "/") {
		if dst, err = netip.ParsePrefix(f.destination); err != nil {
			return nil, fmt.Errorf("--destination %q: %w", f.destination, err)
		}
	}
	verdict := strings.ToUpper(f.verdict)
	return func(s recording.Summary) bool {
		m := s.Meta
		if !since.IsZero() && m.Start.Before(since) || !until.IsZero() && m.Start.After(until) {
			return false
		}
		if f.workload != "" {
			// Everything the flag's help names: pod/NS/NAME (or
			// container/RUNTIME/ID12), the cgroup path and the full
			// container id even when a pod names the workload, comm, exe.
			w := m.Process.Workload()
			if p := m.Process; p != nil {
				w += "\n" + p.CgroupPath + "\n" + p.Comm + "\n" + p.Exe
				if c := p.Container; c != nil {
					w += "\ncontainer/" + c.Runtime + "/" + c.ID
				}
			}
			if !strings.Contains(w, f.workload) {
				return false
			}
		}
		if f.destination != "" {
			if dst.IsValid() {
				ap, err := netip.ParseAddrPort(m.Destination)
				if err != nil || !dst.Contains(ap.Addr().Unmap()) {
					return false
				}
			} else if !strings.Contains(m.Destination, f.destination) {
				return false
			}
		}
		if verdict != "" {
			v := string(m.Verdict)
			if s.End != nil {
				v = string(s.End.Verdict)
			}
			if v != verdict {
				return false
			}
		}
		return true
	}, nil
}

func sessionsListCmd() *cobra.Command {
	var sf storeFlags
	var lf listFilter
	var output string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List recorded sessions, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return fmt.Errorf("-o %q: want table or json", output)
			}
			match, err := lf.match(time.Now())
			if err != nil {
				return err
			}
			s, err := sf.open(cmd.Context())
			if err != nil {
				return err
			}
			all, err := recording.ListKey(s.dir, s.key)
			if err != nil {
				return err
			}
			var sel []recording.Summary
			for _, r := range all {
				if match(r) {
					r.Problems = s.problems(r.ID, r.Status, r.Problems)
					r.Status = recording.Status(s.status(r.ID, r.Status))
					sel = append(sel, r)
				}
			}
			out := cmd.OutOrStdout()
			if output == "json" {
				if sel == nil {
					sel = []recording.Summary{}
				}
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(sel)
			}
			printSessions(out, sel)
			return nil
		},
	}
	sf.add(cmd)
	cmd.Flags().StringVar(&lf.since, "since", "", "sessions started at or after (RFC 3339, or a duration ago: 1h)")
	cmd.Flags().StringVar(&lf.until, "until", "", "sessions started at or before (RFC 3339, or a duration ago)")
	cmd.Flags().StringVar(&lf.workload, "workload", "", "substring of the workload (pod/NS/NAME, container/..., cgroup path), comm or executable")
	cmd.Flags().StringVar(&lf.destination, "destination", "", "original destination: a CIDR, or a substring of ip:port")
	cmd.Flags().StringVar(&lf.verdict, "verdict", "", "verdict: UPGRADED, ERROR ...")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

func printSessions(out io.Writer, sel []recording.Summary) {
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTART\tDURATION\tWORKLOAD\tSOURCE\tDESTINATION\tUPSTREAM\tSENT\tRECEIVED\tVERDICT\tLEVEL\tSTATUS")
	for _, r := range sel {
		m := r.Meta
		dur, sent, recv, verdict := "-", "-", "-", string(m.Verdict)
		if e := r.End; e != nil {
			dur = e.End.Sub(m.Start).Round(time.Millisecond).String()
			sent, recv, verdict = fmt.Sprint(e.BytesSent), fmt.Sprint(e.BytesReceived), string(e.Verdict)
		}
		// Every string from the file goes through safe: a tampered
		// recording is listed too, and any of its fields may carry escapes.
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", safe(r.ID), m.Start.UTC().Format(time.RFC3339),
			dur, safe(m.Process.Workload()), safe(m.Source), safe(m.Destination), safe(m.Upstream), sent, recv,
			safe(verdict), safe(m.Level), safe(string(r.Status)))
	}
	tw.Flush()
}

// safe quotes workload-controlled strings that carry anything but
// printable characters and spaces (control characters, ESC, C1 controls,
// invalid UTF-8 such as a lone 0x9b byte, which 8-bit terminals take for
// CSI, bidi overrides, zero-width characters), so a recording cannot drive
// the terminal or disguise what it shows.
func safe(s string) string {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, n := utf8.DecodeRuneInString(s[i:]); n == 1 {
				return strconv.Quote(s)
			}
		}
		if !strconv.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// load reads and checks one recording.
func (s *store) load(id string) (*recording.Recording, *transcript.Transcript, error) {
	rec, err := recording.Load(s.dir, id, s.key)
	if err != nil {
		return nil, nil, err
	}
	rec.Problems = s.problems(id, rec.Status, rec.Problems)
	// The reader's problems go into the transcript too, so that replay and
	// the exports say what is wrong with a recording, not only its status.
	t, err := transcript.Build(transcript.Input{Meta: rec.Meta, Chunks: rec.Chunks, End: rec.End,
		Status: s.status(id, rec.Status), Problems: rec.Problems})
	if err != nil {
		return nil, nil, err
	}
	return rec, t, nil
}

// openAndLoad finds the recordings and loads one session.
func (f *storeFlags) openAndLoad(ctx context.Context, id string) (*store, *recording.Recording, *transcript.Transcript, error) {
	s, err := f.open(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	rec, t, err := s.load(id)
	if err != nil {
		return nil, nil, nil, err
	}
	return s, rec, t, nil
}

func sessionsShowCmd() *cobra.Command {
	var sf storeFlags
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show a session's metadata, integrity and exchanges",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, rec, t, err := sf.openAndLoad(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			printShow(cmd.OutOrStdout(), s.status(args[0], rec.Status), rec, t)
			return nil
		},
	}
	sf.add(cmd)
	return cmd
}

func printShow(out io.Writer, status string, rec *recording.Recording, t *transcript.Transcript) {
	m := rec.Meta
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s\t%s\n", k, safe(v))
		}
	}
	row("Session:", m.ID)
	row("Status:", status)
	for _, p := range rec.Problems {
		row("Problem:", p)
	}
	row("Rule:", m.Rule+" (record: "+m.Level+")")
	row("Start:", m.Start.UTC().Format(time.RFC3339Nano))
	if e := rec.End; e != nil {
		row("End:", e.End.UTC().Format(time.RFC3339Nano)+" ("+e.End.Sub(m.Start).Round(time.Microsecond).String()+")")
		row("Bytes:", fmt.Sprintf("%d sent, %d received", e.BytesSent, e.BytesReceived))
		row("Verdict:", string(e.Verdict))
		row("Reason:", e.Reason)
		if e.Truncated {
			row("Truncated:", "yes: the per-session cap stopped stream recording")
		}
	} else {
		row("Verdict:", string(m.Verdict))
	}
	row("Workload:", m.Process.Workload())
	if p := m.Process; p != nil {
		row("Process:", fmt.Sprintf("pid %d, comm %q, uid %d, gid %d", p.PID, p.Comm, p.UID, p.GID))
		row("Executable:", p.Exe)
		row("Cgroup:", p.CgroupPath)
		if c := p.Container; c != nil {
			row("Container:", c.Runtime+" "+c.ID)
		}
		if pod := p.Pod; pod != nil {
			row("Pod:", fmt.Sprintf("%s/%s (uid %s, service account %s)", pod.Namespace, pod.Name, pod.UID, pod.ServiceAccount))
		}
	}
	row("Source:", m.Source)
	row("Destination:", m.Destination)
	row("Upstream:", m.Upstream)
	if tl := m.TLS; tl != nil {
		row("TLS:", strings.TrimSpace(tl.Version+" "+tl.Cipher))
		row("Peer certificate:", tl.PeerSubject)
	}
	if id := m.Identity; id != nil {
		row("Token subject:", id.Subject)
	}
	row("Exchanges:", fmt.Sprint(len(t.Exchanges)))
	if n := len(t.Raw); n > 0 {
		row("Raw segments:", fmt.Sprint(n))
	}
	for _, n := range t.Notes {
		row("Note:", n.Code+": "+n.Message)
	}
	tw.Flush()
	for _, x := range t.Exchanges {
		line := fmt.Sprintf("  #%d", x.N)
		if q := x.Request; q != nil {
			line += " " + q.Head.Method + " " + q.Head.Target
		}
		if r := x.Response; r != nil {
			line += fmt.Sprintf(" -> %d", r.Head.Status)
		}
		fmt.Fprintln(out, safe(line))
	}
}

func sessionsReplayCmd() *cobra.Command {
	var sf storeFlags
	var speed float64
	cmd := &cobra.Command{
		Use:   "replay ID",
		Short: "Print the transcript in time order (per exchange for HTTP)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, _, t, err := sf.openAndLoad(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return transcript.Replay(t, cmd.OutOrStdout(), transcript.ReplayOptions{Speed: speed})
		},
	}
	sf.add(cmd)
	cmd.Flags().Float64Var(&speed, "speed", 0, "pace: 1 = real time, 10 = ten times faster, 0 = no waiting")
	return cmd
}

func sessionsExportCmd() *cobra.Command {
	var sf storeFlags
	var format, outPath string
	cmd := &cobra.Command{
		Use:   "export ID",
		Short: "Export a session as HAR 1.2 (HTTP), pcapng (Wireshark, tshark) or JSON",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !slices.Contains([]string{"har", "pcapng", "json"}, format) {
				return fmt.Errorf("--format %q: want har, pcapng or json", format)
			}
			_, _, t, err := sf.openAndLoad(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			// Render first: a failed export (a raw session to HAR) must not
			// truncate or create the output file.
			var b []byte
			switch format {
			case "pcapng":
				var buf bytes.Buffer
				if err := transcript.PCAPNG(t, &buf); err != nil {
					return err
				}
				b = buf.Bytes()
			case "har":
				b, err = transcript.HAR(t)
			default:
				b, err = transcript.JSON(t)
			}
			if err != nil {
				return err
			}
			if outPath == "" || outPath == "-" {
				_, err := cmd.OutOrStdout().Write(b)
				return err
			}
			f, err := os.OpenFile(outPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
			if err != nil {
				return err
			}
			if _, err := f.Write(b); err != nil {
				f.Close()
				return err
			}
			// A write error may only show at close (NFS, quota).
			return f.Close()
		},
	}
	sf.add(cmd)
	cmd.Flags().StringVar(&format, "format", "json", "har, pcapng or json")
	cmd.Flags().StringVarP(&outPath, "output", "o", "-", "output file (created 0600); - for stdout")
	return cmd
}

// errVerify makes `sessions verify` exit non-zero for a bad recording.
var errVerify = errors.New("recording failed verification")

func sessionsVerifyCmd() *cobra.Command {
	var sf storeFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify ID",
		Short: "Check a recording's hash chain, seal and index entry (exit 1 unless sealed and intact)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := sf.open(cmd.Context())
			if err != nil {
				return err
			}
			res, err := recording.Verify(s.dir, args[0], s.key)
			if err != nil {
				return err
			}
			status := s.status(args[0], res.Status)
			res.Problems = s.problems(args[0], res.Status, res.Problems)
			// --json reports the status the exit code is based on.
			res.Status = recording.Status(status)
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(res); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(out, "%s: %s (%d chunks)\n", args[0], status, res.Chunks)
				for _, p := range res.Problems {
					fmt.Fprintln(out, "  "+safe(p))
				}
			}
			switch status {
			case string(recording.StatusSealed), string(recording.StatusOpen):
				return nil
			}
			return fmt.Errorf("%s: %w: %s", args[0], errVerify, status)
		},
	}
	sf.add(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
