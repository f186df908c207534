// Command intransit is the agent and its operator CLI.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/intransit/intransit/pkg/agent"
	"github.com/intransit/intransit/pkg/config"
	"github.com/intransit/intransit/pkg/configwatch"
	"github.com/intransit/intransit/pkg/redirect"
	"github.com/intransit/intransit/pkg/sdnotify"
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

// defaultConfigPath is --config's default.
const defaultConfigPath = "/etc/intransit/intransit.yaml"

func agentCmd() *cobra.Command {
	var cfgPath, cfgDir, level string
	var watch bool
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the agent: attach the datapath, serve the proxy, audit and metrics",
		Long: `Run the agent: attach the datapath, serve the proxy, audit and metrics.

Configuration: --config, with the *.yaml and *.yml files of --config-dir (in
name order; hidden files skipped, so a mounted ConfigMap works as is) merged
on top: mappings merge, later scalars win, lists replace, except the
top-level rules list, which appends. With --config-dir, the default --config
file is read if it exists; a --config given explicitly must exist.

Reload: on SIGHUP (which also reopens the audit file) and, with --watch, when
the files change (inotify on their directories, polling if unavailable;
unchanged content is not reloaded). A reload that fails is logged with the
file and key, and the running configuration stays.

Shutdown (SIGTERM, SIGINT): stop accepting, let established sessions finish
for proxy.drainTimeout, cut the rest. The programs stay pinned, so enforced
connects are refused until an agent runs again (fail closed).

Under systemd (Type=notify) the agent reports READY=1 once attached and
listening, RELOADING=1/READY=1 around reloads, STOPPING=1, and sends
WATCHDOG=1 at half of WatchdogSec.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(level)
			if err != nil {
				return err
			}
			src := config.Sources{Base: cfgPath, Dir: cfgDir}
			src.BaseOptional = cfgDir != "" && !cmd.Flags().Changed("config")
			return runAgent(cmd.Context(), src, watch, log)
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", defaultConfigPath, "configuration file (optional with --config-dir unless given explicitly; \"\" for none)")
	cmd.Flags().StringVar(&cfgDir, "config-dir", "", "drop-in directory whose *.yaml/*.yml files are merged over --config (e.g. a mounted ConfigMap)")
	cmd.Flags().BoolVar(&watch, "watch", true, "reload when the configuration files change (SIGHUP always reloads)")
	cmd.Flags().StringVar(&level, "log-level", "info", "log level: debug, info, warn, error")
	return cmd
}

// runAgent runs the agent until SIGTERM or SIGINT, reloading on SIGHUP and
// on file changes, and keeps systemd informed.
func runAgent(ctx context.Context, src config.Sources, watch bool, log *slog.Logger) error {
	notify, err := sdnotify.New()
	if err != nil {
		log.Warn("systemd notifications disabled", "error", err)
	}
	notifyErr := func(err error) {
		if err != nil {
			log.Warn("systemd notification failed", "error", err)
		}
	}
	// First of all: SIGHUP's default action would kill the agent. One that
	// arrives before the agent is up waits for it.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// Keep-alives until the process exits, drain included.
	wdCtx, wdStop := context.WithCancel(context.Background())
	defer wdStop()
	go notify.RunWatchdog(wdCtx, func(err error) { log.Debug("systemd watchdog keep-alive failed", "error", err) })

	rl := &configwatch.Reloader{Sources: src, Logger: log}
	cfg, err := rl.Load()
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
	// running is the configuration in service; written by reloads, read
	// once they have stopped.
	running := cfg
	rl.Apply = a.Reload
	rl.Before = func() { notifyErr(notify.Reloading("reloading the configuration")) }
	rl.After = func(c *config.Config, err error) {
		status := ""
		a.Metrics().CountReload(err == nil)
		if err != nil {
			status = "reload refused, serving the previous configuration: " + err.Error()
		} else {
			running = c
			status = servingStatus(c, src)
		}
		notifyErr(notify.Ready(status))
	}

	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	if !waitReady(a, done) {
		return <-done // failed to start, or stopped while starting
	}
	notifyErr(notify.Ready(servingStatus(cfg, src)))

	// Reloads start only now: before Run has attached, a reload could not
	// reach the datapath.
	liveCtx, liveStop := context.WithCancel(ctx)
	var live sync.WaitGroup
	live.Go(func() { reloadOnHUP(liveCtx, a, rl, hup, log) })
	if watch {
		live.Go(func() { rl.Watch(liveCtx, configwatch.Options{}) })
	}
	defer func() { liveStop(); live.Wait() }()

	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	liveStop()
	live.Wait() // no READY=1 from a reload after STOPPING=1
	grace := running.Proxy.DrainTimeout.Duration
	log.Info("stopping: no new connections; draining sessions", "drainTimeout", grace.String())
	notifyErr(notify.Stopping(fmt.Sprintf("stopping: draining sessions for up to %s; pinned programs stay (fail closed)", grace)))
	return <-done
}

// waitReady waits until the agent is ready (true) or Run has returned
// (false; its result is put back on done).
func waitReady(a *agent.Agent, done chan error) bool {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for a.Ready() != nil {
		select {
		case err := <-done:
			done <- err
			return false
		case <-t.C:
		}
	}
	return true
}

func servingStatus(c *config.Config, src config.Sources) string {
	return fmt.Sprintf("serving %d rules from %s", len(c.Rules), src)
}

// reloadOnHUP reopens the audit file and reloads the configuration on each
// SIGHUP; a bad configuration is logged and the running one stays.
func reloadOnHUP(ctx context.Context, a *agent.Agent, rl *configwatch.Reloader, hup <-chan os.Signal, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		if err := a.ReopenAudit(); err != nil {
			log.Error("reopen audit file", "error", err)
		}
		_ = rl.Reload("SIGHUP") // logged by the reloader
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
