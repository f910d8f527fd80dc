// Package kubectldefender is the kubectl plugin kubectl-defender: fleet views and
// actions over DefenderTenants (status, consent, refresh, onboard, migrate), with kubectl's
// flags and kubeconfig handling (k8s.io/cli-runtime) and kubectl's printers.
package kubectldefender

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/cli-runtime/pkg/printers"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// FieldManager is the field manager of every write the plugin makes, so that
// managedFields tell its changes from the operator's and a GitOps tool's.
const FieldManager = "kubectl-defender"

// scheme is what the plugin's client speaks: the operator's kinds, and the core
// kinds for namespaces.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}()

// rootOptions is what every command shares: the kubeconfig flags, the streams, and
// the clock that refresh stamps its requests with.
type rootOptions struct {
	flags   *genericclioptions.ConfigFlags
	streams genericiooptions.IOStreams
	clock   clock.PassiveClock
	// pollInterval is how often refresh --wait looks at the tenants it waits for.
	pollInterval time.Duration
}

// NewCommand is `kubectl defender` with its subcommands. Errors are returned, not
// printed: the caller prints them as one line and exits non-zero.
func NewCommand(streams genericiooptions.IOStreams) *cobra.Command {
	return newCommand(&rootOptions{streams: streams, clock: clock.RealClock{}, pollInterval: time.Second})
}

func newCommand(o *rootOptions) *cobra.Command {
	o.flags = genericclioptions.NewConfigFlags(true)
	// Names, roles and messages come from specs and statuses that whoever edits a
	// namespace writes: an escape sequence in one must not drive the terminal of
	// whoever runs the plugin (kubectl's own printers escape them the same way).
	o.streams.Out, o.streams.ErrOut = escapedWriter{o.streams.Out}, escapedWriter{o.streams.ErrOut}
	streams := o.streams
	cmd := &cobra.Command{
		Use:   "kubectl-defender",
		Short: "Fleet views and actions for the DefenderTenants of defender-tenant-operator",
		Long: `kubectl defender shows and acts on many DefenderTenants at once: who is Ready,
who waits for a customer admin's consent (with the links to send), asks for a token
now after a customer consented, and moves tenants off the retiring Defender APIs to
Microsoft Graph.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// kubectl plugins are called as "kubectl defender"; cobra names the command
		// in help from Use, so the annotation makes the help read as kubectl's.
		Annotations: map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl defender"},
	}
	cmd.SetIn(streams.In)
	cmd.SetOut(streams.Out)
	cmd.SetErr(streams.ErrOut)
	o.flags.AddFlags(cmd.PersistentFlags())
	cmd.AddCommand(
		newStatusCommand(o),
		newConsentCommand(o),
		newRefreshCommand(o),
		newMigrateCommand(o),
		newOnboardCommand(o),
	)
	return cmd
}

// escapedWriter writes through printers.WriteEscaped, which shows ESC and CR as
// text.
type escapedWriter struct{ w io.Writer }

func (e escapedWriter) Write(p []byte) (int, error) {
	if err := printers.WriteEscaped(e.w, string(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// client reaches the API server of the kubeconfig's current (or --context) context.
func (o *rootOptions) client() (client.Client, error) {
	config, err := o.flags.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("reading the kubeconfig: %w", err)
	}
	c, err := client.New(config, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("connecting to the API server: %w", err)
	}
	return c, nil
}

// namespace is -n, or the namespace of the kubeconfig's context, or default.
func (o *rootOptions) namespace() (string, error) {
	ns, _, err := o.flags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return "", fmt.Errorf("reading the kubeconfig: %w", err)
	}
	return ns, nil
}

// scope is where a command looks for tenants: one namespace, or all of them.
type scope struct {
	allNamespaces bool
	namespace     string
}

func (o *rootOptions) scope(allNamespaces bool) (scope, error) {
	if allNamespaces {
		return scope{allNamespaces: true}, nil
	}
	ns, err := o.namespace()
	if err != nil {
		return scope{}, err
	}
	return scope{namespace: ns}, nil
}

func (s scope) listOptions() []client.ListOption {
	if s.allNamespaces {
		return nil
	}
	return []client.ListOption{client.InNamespace(s.namespace)}
}

// where names the scope in messages, as kubectl does.
func (s scope) where() string {
	if s.allNamespaces {
		return "in any namespace"
	}
	return fmt.Sprintf("in namespace %q", s.namespace)
}
