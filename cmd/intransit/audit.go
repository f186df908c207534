package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/intransit/intransit/pkg/api"
	"github.com/intransit/intransit/pkg/audit"
	"github.com/intransit/intransit/pkg/config"
)

func auditCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Read the agent's audit trail",
	}
	cmd.AddCommand(auditTailCmd())
	return cmd
}

func auditTailCmd() *cobra.Command {
	var cfgPath, socket, output string
	var follow bool
	cmd := &cobra.Command{
		Use:   "tail",
		Short: "Print the recent audit events, then follow new ones (-f)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "json" && output != "compact" {
				return fmt.Errorf("-o %q: want json or compact", output)
			}
			if socket == "" {
				if cfg, err := config.Load(cfgPath); err == nil {
					socket = cfg.API.Socket
				} else if cmd.Flags().Changed("config") {
					return err
				} else {
					socket = config.DefaultAPISocket
				}
			}
			body, err := api.NewClient(socket).Audit(cmd.Context(), follow)
			if err != nil {
				return err
			}
			defer body.Close()
			return copyAudit(cmd.OutOrStdout(), body, output)
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "/etc/intransit/intransit.yaml", "configuration file (for api.socket)")
	cmd.Flags().StringVar(&socket, "socket", "", "agent API socket (overrides the config)")
	cmd.Flags().StringVarP(&output, "output", "o", "compact", "json (the lines as written) or compact (one short line per event)")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events")
	return cmd
}

func copyAudit(out io.Writer, in io.Reader, output string) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if output == "json" {
			fmt.Fprintf(out, "%s\n", line)
			continue
		}
		var e audit.Event
		if err := json.Unmarshal(line, &e); err != nil {
			fmt.Fprintf(out, "(unreadable line: %v)\n", err)
			continue
		}
		fmt.Fprintln(out, compact(e))
	}
	return sc.Err()
}

// compact renders an event on one line; workload-controlled strings are
// quoted when they hold control characters.
func compact(e audit.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-15s %-8s", e.Time.Local().Format(time.TimeOnly+".000"), e.Event, e.Verdict)
	if e.Rule != "" {
		fmt.Fprintf(&b, " rule=%s", e.Rule)
	}
	if e.Session != "" {
		fmt.Fprintf(&b, " session=%s", e.Session)
	}
	if e.Process != nil {
		fmt.Fprintf(&b, " workload=%s comm=%s pid=%d", safe(e.Process.Workload()), safe(e.Process.Comm), e.Process.PID)
	}
	if e.Source != "" {
		fmt.Fprintf(&b, " src=%s", e.Source)
	}
	if e.Destination != "" {
		fmt.Fprintf(&b, " dst=%s", e.Destination)
	}
	if e.Upstream != "" {
		fmt.Fprintf(&b, " upstream=%s", e.Upstream)
	}
	if e.BytesSent != nil {
		fmt.Fprintf(&b, " sent=%d received=%d", *e.BytesSent, *e.BytesReceived)
	}
	if e.Reason != "" {
		fmt.Fprintf(&b, " reason=%s", safe(e.Reason))
	}
	return b.String()
}
