package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
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
			ctx := cmd.Context()
			body, err := api.NewClient(socket).Audit(ctx, follow)
			if err != nil {
				return err
			}
			defer body.Close()
			err = copyAudit(cmd.OutOrStdout(), body, output)
			if ctx.Err() != nil {
				// Stopped by the caller (interrupt): not a failure.
				return nil
			}
			if err == nil && follow {
				// -f only ends when the agent ends the stream.
				return errors.New("audit stream ended: the agent closed it (stopped or restarting)")
			}
			return err
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "/etc/intransit/intransit.yaml", "configuration file (for api.socket)")
	cmd.Flags().StringVar(&socket, "socket", "", "agent API socket (overrides the config)")
	cmd.Flags().StringVarP(&output, "output", "o", "compact", "json (the lines as written) or compact (one short line per event)")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events")
	return cmd
}

// maxAuditLine bounds one audit line; a longer one is skipped with a
// notice instead of ending the stream.
const maxAuditLine = 1 << 20

func copyAudit(out io.Writer, in io.Reader, output string) error {
	br := bufio.NewReaderSize(in, 64<<10)
	for {
		line, skipped, err := readLine(br, maxAuditLine)
		if err != nil && err != io.EOF {
			return err // a read cut short: the partial line is not shown
		}
		switch {
		case skipped > 0:
			if _, werr := fmt.Fprintf(out, "(line of %d bytes skipped: longer than %d)\n", skipped, maxAuditLine); werr != nil {
				return werr
			}
		case len(line) > 0:
			if werr := writeAudit(out, line, output); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
	}
}

// readLine returns the next line without its newline, or how many bytes
// an over-long line had (its content is dropped).
func readLine(br *bufio.Reader, limit int) (line []byte, skipped int, err error) {
	for {
		part, err := br.ReadSlice('\n')
		if skipped == 0 && len(line)+len(part) <= limit {
			line = append(line, part...)
		} else {
			skipped += len(line) + len(part)
			line = nil
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		return bytes.TrimSuffix(line, []byte("\n")), skipped, err
	}
}

func writeAudit(out io.Writer, line []byte, output string) error {
	if output == "json" {
		_, err := fmt.Fprintf(out, "%s\n", line)
		return err
	}
	var e audit.Event
	if err := json.Unmarshal(line, &e); err != nil {
		_, err := fmt.Fprintf(out, "(unreadable line: %s)\n", safe(err.Error()))
		return err
	}
	_, err := fmt.Fprintln(out, compact(e))
	return err
}

// compact renders an event on one line; workload-controlled strings are
// quoted when they hold control characters.
func compact(e audit.Event) string {
	var b strings.Builder
	// Every string goes through safe: the line is only as trustworthy as
	// whoever could write to the stream.
	fmt.Fprintf(&b, "%s %-15s %-8s", e.Time.Local().Format(time.TimeOnly+".000"), safe(e.Event), safe(string(e.Verdict)))
	if e.Rule != "" {
		fmt.Fprintf(&b, " rule=%s", safe(e.Rule))
	}
	if e.Session != "" {
		fmt.Fprintf(&b, " session=%s", safe(e.Session))
	}
	if e.Process != nil {
		fmt.Fprintf(&b, " workload=%s comm=%s pid=%d", safe(e.Process.Workload()), safe(e.Process.Comm), e.Process.PID)
	}
	if e.Source != "" {
		fmt.Fprintf(&b, " src=%s", safe(e.Source))
	}
	if e.Destination != "" {
		fmt.Fprintf(&b, " dst=%s", safe(e.Destination))
	}
	if e.Upstream != "" {
		fmt.Fprintf(&b, " upstream=%s", safe(e.Upstream))
	}
	// Either counter may be missing from a line: never dereference nil.
	if e.BytesSent != nil {
		fmt.Fprintf(&b, " sent=%d", *e.BytesSent)
	}
	if e.BytesReceived != nil {
		fmt.Fprintf(&b, " received=%d", *e.BytesReceived)
	}
	if e.Reason != "" {
		fmt.Fprintf(&b, " reason=%s", safe(e.Reason))
	}
	return b.String()
}
