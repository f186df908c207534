package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/intransit/intransit/pkg/api"
	"github.com/intransit/intransit/pkg/config"
	"github.com/intransit/intransit/pkg/redirect"
)

func statusCmd() *cobra.Command {
	var cfgPath, socket string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show attached programs, rules, counters and active sessions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pin := config.DefaultPinPath
			if cfg, err := config.Load(cfgPath); err == nil {
				if socket == "" {
					socket = cfg.API.Socket
				}
				pin = cfg.BPF.PinPath
			} else if cmd.Flags().Changed("config") {
				return err
			}
			if socket == "" {
				socket = config.DefaultAPISocket
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
			defer cancel()
			st, err := api.GetStatus(ctx, socket)
			out := cmd.OutOrStdout()
			if err != nil {
				return offlineStatus(out, pin, err)
			}
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			printStatus(out, st)
			return nil
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "/etc/intransit/intransit.yaml", "configuration file (for api.socket and bpf.pinPath)")
	cmd.Flags().StringVar(&socket, "socket", "", "agent API socket (overrides the config)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// offlineStatus reports what the pins say when no agent answers: this is the
// fail-closed state, worth spelling out.
func offlineStatus(w io.Writer, pin string, cause error) error {
	fmt.Fprintf(w, "agent: not running (%v)\n", cause)
	progs, err := redirect.Pinned(pin)
	if err != nil {
		return fmt.Errorf("inspect pins under %s: %w", pin, err)
	}
	if len(progs) == 0 {
		fmt.Fprintf(w, "datapath: nothing pinned under %s: no interception\n", pin)
		return errNotRunning
	}
	fmt.Fprintf(w, "datapath: %d programs still attached (pinned under %s): enforced connects are refused until the agent is back (fail closed)\n", len(progs), pin)
	for _, p := range progs {
		fmt.Fprintf(w, "  %-13s cgroup id %d  prog id %d\n", p.Name, p.CgroupID, p.ProgID)
	}
	if stats, err := redirect.PinnedStats(pin); err == nil {
		fmt.Fprintf(w, "counters: %s\n", formatCounters(stats))
	}
	return errNotRunning
}

func printStatus(w io.Writer, st api.Status) {
	ready := "ready"
	if !st.Ready {
		ready = "NOT ready"
	}
	fmt.Fprintf(w, "agent: %s, pid %d, version %s, up %s\n", ready, st.PID, st.Version, time.Since(st.Started).Round(time.Second))
	fmt.Fprintf(w, "cgroup: %s\nproxy: %s\npins: %s\n", st.Cgroup, strings.Join(st.Proxy, ", "), st.PinPath)
	if st.Metrics != "" {
		fmt.Fprintf(w, "metrics: http://%s/metrics\n", st.Metrics)
	}
	fmt.Fprintf(w, "\nprograms (%d attached):\n", len(st.Programs))
	for _, p := range st.Programs {
		fmt.Fprintf(w, "  %-13s cgroup id %d  prog id %d\n", p.Name, p.Cgroup, p.ProgID)
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nRULE\tMODE\tPORTS\tDESTINATIONS\tUPSTREAM")
	for _, r := range st.Rules {
		dst := strings.Join(r.Destinations, ",")
		if dst == "" {
			dst = "any"
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\n", r.Name, r.Mode, r.Ports, dst, r.Upstream)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nconnections: %s\n", formatCounters(st.Connections))
	fmt.Fprintf(w, "datapath: %s\n", formatCounters(st.Datapath))
	for _, m := range st.Maps {
		fmt.Fprintf(w, "map %s: %d/%d\n", m.Map, m.Entries, m.Capacity)
	}
	fmt.Fprintf(w, "\nactive sessions: %d\n", len(st.ActiveSessions))
	for _, s := range st.ActiveSessions {
		fmt.Fprintf(w, "  %s %s %s(%d) %s -> %s via %s [%s]\n", s.ID, s.Rule, s.Comm, s.PID, s.Source, s.Destination, s.Upstream, s.TLS)
	}
}

func formatCounters(m map[string]uint64) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}
