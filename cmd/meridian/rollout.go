package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/cli/kubeclient"
	"github.com/meridian-mesh/meridian/cli/rollout"
)

// rolloutNow is the clock ages and restart times are counted on (tests
// fix it).
var rolloutNow = time.Now

func newRolloutCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "rollout",
		Aliases: []string{"rollouts", "ro"},
		Short:   "Manage Rollouts: list, get (a tree, --watch), promote, abort, retry, pause, resume, restart, set image, undo, status",
		Long: `Manages Rollouts (meridian.io/v1alpha1, Argo Rollouts' API) as Argo Rollouts'
kubectl plugin does, with the same patches and output: 'get' draws the Rollout's
revisions, ReplicaSets, pods and AnalysisRuns; 'promote', 'abort' and 'retry'
patch its status subresource, which the controller reads; 'status' waits for
it to be Healthy (exit 0) or Degraded (exit 1), for CI pipelines.`,
	}
	cmd.AddCommand(newRolloutListCmd(), newRolloutGetCmd(), newRolloutStatusCmd(), newRolloutPromoteCmd(),
		newRolloutPatchCmd("abort", "Abort a rollout: all traffic back to the stable version", "aborted", rollout.AbortPatches, rollout.DemoAbort,
			`Stops the update and sends all traffic back to the stable ReplicaSet at once
(status.abort). spec.template still holds the new version: 'retry' starts the
steps again; 'undo' (or changing the template back) reverts it.`),
		newRolloutPatchCmd("retry", "Retry an aborted rollout: its steps start again", "retried", rollout.RetryPatches, rollout.DemoRetry,
			`Lifts an abort (status.abort false, pause conditions cleared): the steps start
again from the first.`),
		newRolloutPatchCmd("pause", "Pause a rollout where it is (spec.paused)", "paused", rollout.PausePatches, "", ""),
		newRolloutPatchCmd("resume", "Resume a paused rollout (spec.paused false)", "resumed", rollout.ResumePatches, "",
			`Sets spec.paused to false. A pause the controller made (a pause step, an
inconclusive analysis) is lifted by 'promote'.`),
		newRolloutRestartCmd(), newRolloutSetCmd(), newRolloutUndoCmd())
	return cmd
}

// rolloutFlags are the connection flags and, where it is shown, --output.
type rolloutFlags struct {
	kf     kubeclient.Flags
	output string
}

func (f *rolloutFlags) register(cmd *cobra.Command, output bool) {
	f.kf.Register(cmd)
	if output {
		cmd.Flags().StringVarP(&f.output, "output", "o", "", "output format: json or yaml (default: text)")
	}
}

// checkOutput checks --output.
func (f *rolloutFlags) checkOutput() error {
	switch f.output {
	case "", "json", "yaml", "table", "text":
		return nil
	}
	return fmt.Errorf("--output %q: use json or yaml (or leave it out for text)", f.output)
}

func (f *rolloutFlags) connect() (*rollout.Client, error) {
	if err := f.checkOutput(); err != nil {
		return nil, err
	}
	cfg, ns, err := kubeclient.Load(f.kf.Kubeconfig, f.kf.Context, f.kf.Namespace)
	if err != nil {
		return nil, err
	}
	if cfg.Timeout == 0 {
		// Each request; watches are bounded by their context.
		cfg.Timeout = 30 * time.Second
	}
	return rollout.NewClient(cfg, ns)
}

// structured reports whether the output is json or yaml.
func (f *rolloutFlags) structured() bool { return f.output == "json" || f.output == "yaml" }

// write writes v as the --output format asks.
func (f *rolloutFlags) write(w io.Writer, v any) error {
	if f.output == "yaml" {
		data, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// interruptible ends ctx on Ctrl-C or SIGTERM, so a watch ends cleanly.
func interruptible(ctx context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
}

func newRolloutListCmd() *cobra.Command {
	var (
		f   rolloutFlags
		all bool
	)
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List rollouts: strategy, status, step, set and actual weight, replicas, age",
		Example: `  meridian rollout list -n shop
  meridian rollout list -A -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.connect()
			if err != nil {
				return err
			}
			rows, err := c.List(cmd.Context(), all)
			if err != nil {
				return err
			}
			if f.structured() {
				return f.write(cmd.OutOrStdout(), rows)
			}
			if len(rows) == 0 {
				where := "in namespace " + c.Namespace
				if all {
					where = "in any namespace"
				}
				_, err := fmt.Fprintf(cmd.ErrOrStderr(), "No rollouts found %s.\n", where)
				return err
			}
			return rollout.WriteList(cmd.OutOrStdout(), rows, all, rolloutNow())
		},
	}
	f.register(cmd, true)
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "list the rollouts of every namespace")
	return cmd
}

func newRolloutGetCmd() *cobra.Command {
	var (
		f     rolloutFlags
		watch bool
		demo  string
	)
	cmd := &cobra.Command{
		Use:   "get NAME",
		Short: "Show a rollout and the tree of its revisions, ReplicaSets, pods and AnalysisRuns",
		Long: `Shows the Rollout (status, strategy, step, set and actual weight, images,
replicas) and, by revision, its ReplicaSets (stable, canary, active, preview,
and the delay before an old one is scaled down), their pods (ready containers,
status, restarts) and its AnalysisRuns (measurements successful ✔, failed ✖,
inconclusive ?, errored ⚠, from their runSummary), as Argo Rollouts' plugin.

Icons: ⟳ Rollout, # revision, ⧉ ReplicaSet, □ Pod, α AnalysisRun; ✔ healthy,
◌ progressing, ॥ paused, ✖ degraded or failed, ⚠ error, • scaled down.

--watch redraws the tree whenever the Rollout or what it owns changes (the API
server's watch), until Ctrl-C.

--demo reads the Rollouts of a running 'meridian demo' (local mode, no API
server) from its dashboard address (--demo alone: 127.0.0.1:50750; another:
--demo=ADDR) instead: its instances are the pods, one ReplicaSet per
template; --watch reads every second.`,
		Example: `  meridian rollout get web -n shop
  meridian rollout get web -n shop --watch
  meridian rollout get web -o json
  meridian rollout get voting --watch --demo
  meridian rollout get voting --demo=127.0.0.1:50751`,
		Args: oneRollout,
		RunE: func(cmd *cobra.Command, args []string) error {
			var c interface {
				Info(ctx context.Context, name string) (*rollout.Info, *v1alpha1.Rollout, error)
				Watch(ctx context.Context, name string, refresh time.Duration, fn func(*rollout.Info, *v1alpha1.Rollout) (bool, error)) error
			}
			if demo != "" {
				if err := f.checkOutput(); err != nil {
					return err
				}
				c = &rollout.DemoClient{Address: demo, Namespace: f.kf.Namespace}
			} else {
				kc, err := f.connect()
				if err != nil {
					return err
				}
				c = kc
			}
			out := cmd.OutOrStdout()
			if !watch {
				in, _, err := c.Info(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				if f.structured() {
					return f.write(out, in)
				}
				return rollout.WriteTree(out, in, rolloutNow())
			}
			ctx, stop := interruptible(cmd.Context())
			defer stop()
			clear := isTerminal(out)
			var last string
			return c.Watch(ctx, args[0], 5*time.Second, func(in *rollout.Info, _ *v1alpha1.Rollout) (bool, error) {
				var b strings.Builder
				if f.structured() {
					if err := f.write(&b, in); err != nil {
						return true, err
					}
					if f.output == "yaml" {
						b.WriteString("---\n")
					}
				} else if err := rollout.WriteTree(&b, in, rolloutNow()); err != nil {
					return true, err
				}
				if b.String() == last {
					return false, nil
				}
				frame := b.String()
				switch {
				case clear:
					frame = "\033[H\033[2J" + frame
				case last != "" && !f.structured():
					frame = "\n" + frame
				}
				last = b.String()
				_, err := io.WriteString(out, frame)
				return false, err
			})
		},
	}
	f.register(cmd, true)
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "redraw on every change until interrupted")
	cmd.Flags().StringVar(&demo, "demo", "", "read the Rollout from a running 'meridian demo' at this dashboard address instead of an API server (--demo alone: "+defaultDemoAddr+"; another: --demo=ADDR)")
	cmd.Flags().Lookup("demo").NoOptDefVal = defaultDemoAddr
	return cmd
}

// defaultDemoAddr is `meridian demo`'s default --dashboard-addr.
const defaultDemoAddr = "127.0.0.1:50750"

// isTerminal reports whether w is a terminal (a watch then redraws in
// place).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// errRolloutNotHealthy is returned by status for a Degraded rollout and
// when the wait times out.
var errRolloutNotHealthy = errors.New("rollout not healthy")

func newRolloutStatusCmd() *cobra.Command {
	var (
		f       rolloutFlags
		watch   bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "status NAME",
		Short: "Print a rollout's phase and message; wait until it is Healthy (exit 0) or Degraded (exit 1)",
		Long: `Prints the Rollout's phase (Healthy, Progressing, Paused, Degraded) and message,
and, with --watch (the default), each change until it is Healthy (exit status
0) or Degraded (exit status 1). A Progressing or Paused rollout is waited for:
--timeout bounds the wait (exit status 1 when it passes; 0 waits for ever).
The phase is the controller's, read only once it has seen the Rollout's
latest spec (status.observedGeneration), as Argo Rollouts reads it.`,
		Example: `  meridian rollout status web -n shop --timeout 10m
  meridian rollout status web --watch=false -o json`,
		Args: oneRollout,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.connect()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			var (
				last  string
				phase v1alpha1.RolloutPhase
				msg   string
			)
			// show prints the phase and message when they changed.
			show := func(ro *v1alpha1.Rollout) error {
				phase, msg = rollout.Phase(ro)
				line := string(phase)
				if msg != "" {
					line += " - " + msg
				}
				if line == last {
					return nil
				}
				last = line
				if f.structured() {
					return f.write(out, map[string]string{"name": ro.Name, "namespace": ro.Namespace, "phase": string(phase), "message": msg})
				}
				_, err := fmt.Fprintln(out, line)
				return err
			}
			if !watch {
				ro, err := c.Get(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				if err := show(ro); err != nil {
					return err
				}
			} else {
				ctx, stop := interruptible(cmd.Context())
				defer stop()
				if timeout > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, timeout)
					defer cancel()
				}
				err := c.Watch(ctx, args[0], 0, func(_ *rollout.Info, ro *v1alpha1.Rollout) (bool, error) {
					if err := show(ro); err != nil {
						return true, err
					}
					return phase == v1alpha1.RolloutPhaseHealthy || phase == v1alpha1.RolloutPhaseDegraded, nil
				})
				if err != nil {
					return err
				}
				if phase != v1alpha1.RolloutPhaseHealthy && phase != v1alpha1.RolloutPhaseDegraded {
					if ctx.Err() == context.DeadlineExceeded {
						return fmt.Errorf("rollout %s/%s: still %s after --timeout %s: %w", c.Namespace, args[0], phase, timeout, errRolloutNotHealthy)
					}
					return fmt.Errorf("rollout %s/%s: interrupted while %s: %w", c.Namespace, args[0], phase, errRolloutNotHealthy)
				}
			}
			if phase == v1alpha1.RolloutPhaseDegraded {
				return fmt.Errorf("rollout %s/%s is Degraded: %s: %w", c.Namespace, args[0], msg, errRolloutNotHealthy)
			}
			return nil
		},
	}
	f.register(cmd, true)
	cmd.Flags().BoolVarP(&watch, "watch", "w", true, "wait until the rollout is Healthy or Degraded")
	cmd.Flags().DurationVarP(&timeout, "timeout", "t", 0, "give up waiting after this long (e.g. 30s, 10m); 0 waits for ever")
	return cmd
}

func newRolloutPromoteCmd() *cobra.Command {
	var (
		f    rolloutFlags
		full bool
		demo string
	)
	cmd := &cobra.Command{
		Use:   "promote NAME",
		Short: "Promote a rollout: past its pause, or its current step; --full to the end",
		Long: `Promotes a rollout paused at a canary step, an inconclusive analysis or a
blue-green pre-promotion pause (its pause conditions are cleared, and
spec.paused unset), or, when it is not paused, skips the canary's current
step. --full skips every remaining step, pause and analysis
(status.promoteFull).`,
		Example: `  meridian rollout promote web -n shop
  meridian rollout promote web -n shop --full
  meridian rollout promote voting --demo`,
		Args: oneRollout,
		RunE: func(cmd *cobra.Command, args []string) error {
			var ro *v1alpha1.Rollout
			if demo != "" {
				action := rollout.DemoPromote
				if full {
					action = rollout.DemoPromoteFull
				}
				var err error
				if ro, err = (&rollout.DemoClient{Address: demo, Namespace: f.kf.Namespace}).Act(cmd.Context(), args[0], action); err != nil {
					return err
				}
			} else {
				c, err := f.connect()
				if err != nil {
					return err
				}
				if ro, err = c.Promote(cmd.Context(), args[0], full); err != nil {
					return err
				}
			}
			word := "promoted"
			if full {
				word = "fully promoted"
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "rollout '%s' %s\n", ro.Name, word)
			return err
		},
	}
	f.register(cmd, false)
	cmd.Flags().BoolVar(&full, "full", false, "skip every remaining step, pause and analysis")
	demoFlag(cmd, &demo)
	return cmd
}

// demoFlag registers --demo: act on a running 'meridian demo' (local mode)
// at its dashboard address instead of an API server.
func demoFlag(cmd *cobra.Command, demo *string) {
	cmd.Flags().StringVar(demo, "demo", "", "act on the Rollout of a running 'meridian demo' at this dashboard address instead of an API server (--demo alone: "+defaultDemoAddr+"; another: --demo=ADDR)")
	cmd.Flags().Lookup("demo").NoOptDefVal = defaultDemoAddr
}

// newRolloutPatchCmd is a command that applies fixed patches to each
// rollout named.
// demoAction, when not empty, is what --demo asks a running 'meridian
// demo' to do instead.
func newRolloutPatchCmd(use, short, done string, p rollout.Patches, demoAction, long string) *cobra.Command {
	var (
		f    rolloutFlags
		demo string
	)
	example := fmt.Sprintf("  meridian rollout %s web -n shop", use)
	if demoAction != "" {
		example += fmt.Sprintf("\n  meridian rollout %s voting --demo", use)
	}
	cmd := &cobra.Command{
		Use:     use + " NAME...",
		Short:   short,
		Long:    long,
		Example: example,
		Args:    someRollouts,
		RunE: func(cmd *cobra.Command, args []string) error {
			if demo != "" {
				dc := &rollout.DemoClient{Address: demo, Namespace: f.kf.Namespace}
				for _, name := range args {
					if _, err := dc.Act(cmd.Context(), name, demoAction); err != nil {
						return err
					}
					fmt.Fprintf(cmd.OutOrStdout(), "rollout '%s' %s\n", name, done)
				}
				return nil
			}
			c, err := f.connect()
			if err != nil {
				return err
			}
			for _, name := range args {
				if _, err := c.Apply(cmd.Context(), name, "", p); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "rollout '%s' %s\n", name, done)
			}
			return nil
		},
	}
	f.register(cmd, false)
	if demoAction != "" {
		demoFlag(cmd, &demo)
	}
	return cmd
}

func newRolloutRestartCmd() *cobra.Command {
	var (
		f  rolloutFlags
		in time.Duration
	)
	cmd := &cobra.Command{
		Use:   "restart NAME",
		Short: "Restart a rollout's pods, one by one (spec.restartAt)",
		Long: `Sets spec.restartAt to now, or --in from now: once it has passed, the
controller restarts the Rollout's pods, one by one.`,
		Example: `  meridian rollout restart web -n shop
  meridian rollout restart web -n shop --in 10m`,
		Args: oneRollout,
		RunE: func(cmd *cobra.Command, args []string) error {
			if in < 0 {
				return fmt.Errorf("--in %s: use a duration of 0 or more", in)
			}
			c, err := f.connect()
			if err != nil {
				return err
			}
			if _, err := c.Apply(cmd.Context(), args[0], "", rollout.RestartPatches(rolloutNow().Add(in))); err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "rollout '%s' restarts in %s\n", args[0], in)
			return err
		},
	}
	f.register(cmd, false)
	cmd.Flags().DurationVarP(&in, "in", "i", 0, "restart this long from now (e.g. 30s, 5m, 1h)")
	return cmd
}

func newRolloutSetCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "set", Short: "Change a rollout's pod template"}
	var f rolloutFlags
	img := &cobra.Command{
		Use:   "image NAME CONTAINER=IMAGE",
		Short: "Set a container's image (on the Rollout's template, or its workloadRef's Deployment's)",
		Long: `Sets the image of the container named (every container with '*') in the
Rollout's pod template, or, for a Rollout with a workloadRef, in the
Deployment's: the controller starts an update.`,
		Example: `  meridian rollout set image web app=ghcr.io/example/web:v2 -n shop`,
		Args:    rolloutAndImage,
		RunE: func(cmd *cobra.Command, args []string) error {
			container, image, ok := strings.Cut(args[1], "=")
			if !ok || container == "" || image == "" {
				return fmt.Errorf("%q: want CONTAINER=IMAGE", args[1])
			}
			c, err := f.connect()
			if err != nil {
				return err
			}
			what, err := c.SetImage(cmd.Context(), args[0], container, image)
			if err != nil {
				return err
			}
			kind, name, _ := strings.Cut(what, " ")
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s %q image updated\n", kind, name)
			return err
		},
	}
	f.register(img, false)
	cmd.AddCommand(img)
	return cmd
}

func newRolloutUndoCmd() *cobra.Command {
	var (
		f   rolloutFlags
		rev int64
	)
	cmd := &cobra.Command{
		Use:   "undo NAME",
		Short: "Go back to an earlier revision's pod template",
		Long: `Puts the pod template of the revision before the newest (or --to-revision)
back into the Rollout, or into its workloadRef's Deployment: the template of
that revision's ReplicaSet, without its pod-template hash. The revisions are
the ReplicaSets the Rollout controls, by their rollout.argoproj.io/revision
annotation ('meridian rollout get' shows them).`,
		Example: `  meridian rollout undo web -n shop
  meridian rollout undo web -n shop --to-revision 3`,
		Args: oneRollout,
		RunE: func(cmd *cobra.Command, args []string) error {
			if rev < 0 {
				return fmt.Errorf("--to-revision %d: use a revision number (or 0, the one before the newest)", rev)
			}
			c, err := f.connect()
			if err != nil {
				return err
			}
			msg, err := c.Undo(cmd.Context(), args[0], rev)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), msg)
			return err
		},
	}
	f.register(cmd, false)
	cmd.Flags().Int64Var(&rev, "to-revision", 0, "the revision to go back to (default: the one before the newest)")
	return cmd
}

// oneRollout wants one argument, the Rollout's name.
func oneRollout(cmd *cobra.Command, args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("name one rollout (meridian %s NAME), not %d arguments", strings.TrimPrefix(cmd.CommandPath(), "meridian "), len(args))
	}
	return nil
}

// someRollouts wants one or more Rollout names.
func someRollouts(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("name the rollouts (meridian %s NAME...)", strings.TrimPrefix(cmd.CommandPath(), "meridian "))
	}
	return nil
}

// rolloutAndImage wants NAME CONTAINER=IMAGE.
func rolloutAndImage(_ *cobra.Command, args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("want NAME CONTAINER=IMAGE (meridian rollout set image web app=example/web:v2), not %d arguments", len(args))
	}
	return nil
}
