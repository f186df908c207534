package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

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
			return nil, fmt.Errorf("--key-file: %w", err)
		}
		s.key = k
	}
	return s, nil
}

// status is a recording's status as the CLI shows it: an unsealed
// recording of a session the agent says is open is "open", not
// "unfinished" (the file lock says so too, where it is visible).
func (s *store) status(id string, st recording.Status) string {
	if st == recording.StatusUnfinished && s.active[id] {
		return string(recording.StatusOpen)
	}
	return string(st)
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
			w := m.Process.Workload()
			if m.Process != nil {
				w += " " + m.Process.Comm + " " + m.Process.Exe
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, m.Start.UTC().Format(time.RFC3339),
			dur, safe(m.Process.Workload()), m.Source, m.Destination, m.Upstream, sent, recv, verdict, m.Level, r.Status)
	}
	tw.Flush()
}

// safe quotes workload-controlled strings that carry control characters,
// so a recording cannot drive the terminal.
func safe(s string) string {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Sprintf("%q", s)
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
	t, err := transcript.Build(transcript.Input{Meta: rec.Meta, Chunks: rec.Chunks, End: rec.End, Status: s.status(id, rec.Status)})
	if err != nil {
		return nil, nil, err
	}
	return rec, t, nil
}

func sessionsShowCmd() *cobra.Command {
	var sf storeFlags
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show a session's metadata, integrity and exchanges",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := sf.open(cmd.Context())
			if err != nil {
				return err
			}
			rec, t, err := s.load(args[0])
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
			s, err := sf.open(cmd.Context())
			if err != nil {
				return err
			}
			_, t, err := s.load(args[0])
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
			s, err := sf.open(cmd.Context())
			if err != nil {
				return err
			}
			_, t, err := s.load(args[0])
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if outPath != "" && outPath != "-" {
				f, err := os.OpenFile(outPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
				if err != nil {
					return err
				}
				defer f.Close()
				out = f
			}
			switch format {
			case "pcapng":
				return transcript.PCAPNG(t, out)
			case "har":
				b, err := transcript.HAR(t)
				if err != nil {
					return err
				}
				_, err = out.Write(b)
				return err
			default:
				b, err := transcript.JSON(t)
				if err != nil {
					return err
				}
				_, err = out.Write(b)
				return err
			}
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
