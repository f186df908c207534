// Command intransit is the agent and its operator CLI.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/intransit/intransit/pkg/agent"
	"github.com/intransit/intransit/pkg/config"
	"github.com/intransit/intransit/pkg/redirect"
	"github.com/intransit/intransit/pkg/version"
)

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "intransit:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "intransit",
		Short:         "Encrypt legacy plaintext TCP in transit, transparently (eBPF + TLS)",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(agentCmd(), statusCmd(), sessionsCmd(), auditCmd(), uninstallCmd(), versionCmd(), exampleCmd())
	return root
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

func agentCmd() *cobra.Command {
	var cfgPath, level string
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the agent: attach the datapath, serve the proxy, audit and metrics",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(level)
			if err != nil {
				return err
			}
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			if os.Geteuid() != 0 {
				log.Warn("not running as root: the agent needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON")
			}
			a, err := agent.New(cfg, agent.Options{Logger: log})
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			go reloadOnHUP(ctx, a, cfgPath, log)
			return a.Run(ctx)
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "/etc/intransit/intransit.yaml", "configuration file")
	cmd.Flags().StringVar(&level, "log-level", "info", "log level: debug, info, warn, error")
	return cmd
}

// reloadOnHUP re-reads the config on SIGHUP; a bad file is logged and the
// running configuration stays.
func reloadOnHUP(ctx context.Context, a *agent.Agent, path string, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		if err := a.ReopenAudit(); err != nil {
			log.Error("reopen audit file", "error", err)
		}
		cfg, err := config.Load(path)
		if err == nil {
			err = a.Reload(cfg)
		}
		if err != nil {
			log.Error("reload failed; still serving the previous configuration", "error", err)
		}
	}
}

func uninstallCmd() *cobra.Command {
	var cfgPath, pin string
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Detach the datapath and remove its pins (enforced ports stop being protected)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if pin == "" {
				cfg, err := config.Load(cfgPath)
				if err != nil {
					return err
				}
				pin = cfg.BPF.PinPath
			}
			progs, _ := redirect.Pinned(pin)
			if err := redirect.Uninstall(pin); err != nil {
				return fmt.Errorf("uninstall: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "detached %d programs and removed %s\n", len(progs), pin)
			return nil
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "/etc/intransit/intransit.yaml", "configuration file (for bpf.pinPath)")
	cmd.Flags().StringVar(&pin, "pin-path", "", "bpffs directory to clean (overrides the config)")
	return cmd
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "intransit", version.Version)
		},
	}
}

func exampleCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "example-config",
		Short: "Print a commented example configuration",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprint(cmd.OutOrStdout(), config.ExampleYAML)
		},
	}
}

var errNotRunning = errors.New("agent not running")
