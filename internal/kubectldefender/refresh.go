package kubectldefender

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// clusterSideReasons are the reasons a refresh request cannot help with: the
// operator's checks for them win over the request (API.md, "Refresh on request"),
// so no token is requested and the request stays unhandled until someone fixes
// the cluster side. refresh --wait reports these tenants at once instead of
// waiting out its timeout.
var clusterSideReasons = []string{
	v1alpha1.ReasonSuspended,
	v1alpha1.ReasonAppNotFound,
	v1alpha1.ReasonAppNotAllowed,
	v1alpha1.ReasonResourceNotAllowed,
	v1alpha1.ReasonSecretConflict,
	v1alpha1.ReasonCredentialsNotFound,
	v1alpha1.ReasonInvalidSecretTemplate,
	v1alpha1.ReasonInvalidCertificate,
	v1alpha1.ReasonCertificateExpired,
	v1alpha1.ReasonServiceAccountNotFound,
	v1alpha1.ReasonServiceAccountNotAllowed,
}

// requestedAtLayout is RFC 3339 with all nine digits of nanoseconds: two requests
// in a row differ, so the second is not taken for the first, already handled; and
// unlike time.RFC3339Nano, trailing zeros stay, so the values sort as the times do.
const requestedAtLayout = "2006-01-02T15:04:05.000000000Z07:00"

type refreshOptions struct {
	*rootOptions
	allNamespaces bool
	all           bool
	reason        string
	wait          bool
	timeout       time.Duration
}

func newRefreshCommand(root *rootOptions) *cobra.Command {
	o := &refreshOptions{rootOptions: root}
	cmd := &cobra.Command{
		Use:   "refresh (NAME... | --all [--reason R]) [--wait]",
		Short: "Ask the operator for a token now (after a customer consented or granted a role)",
		Long: `refresh sets the annotation defender.tenantcreds.io/requested-at to the current time
on each named DefenderTenant (or, with --all, on every one in the namespace, or in
every namespace with -A, optionally only those whose Ready reason is --reason). The
operator then requests a token at once, even during a backoff, but never within a
minute of the tenant's last token request: such a request is served when the minute
is over.

With --wait, refresh waits until the operator handled each request
(status.lastHandledRequestedAt) and prints each tenant's result. It exits non-zero
when a tenant is not Ready after its request, when the operator cannot serve the
request (a reason only a fix in the cluster resolves, such as Suspended or
AppNotAllowed), or when --timeout passes first.`,
		Example: `  kubectl defender refresh contoso --wait
  kubectl defender refresh --all -A --reason ConsentRequired --wait`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), args)
		},
	}
	cmd.Flags().BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "with --all: the DefenderTenants of every namespace")
	cmd.Flags().BoolVar(&o.all, "all", false, "every DefenderTenant in the namespace (or, with -A, in every namespace)")
	cmd.Flags().StringVar(&o.reason, "reason", "", "with --all: only the tenants whose Ready reason is this, such as ConsentRequired")
	cmd.Flags().BoolVar(&o.wait, "wait", false, "wait for each tenant's result and print it")
	cmd.Flags().DurationVar(&o.timeout, "timeout", 3*time.Minute, "with --wait: how long to wait for the results")
	return cmd
}

func (o *refreshOptions) run(ctx context.Context, names []string) error {
	switch {
	case o.all && len(names) > 0:
		return errors.New("name DefenderTenants or use --all, not both")
	case !o.all && len(names) == 0:
		return errors.New("name the DefenderTenants to refresh, or use --all")
	case o.reason != "" && !o.all:
		return errors.New("--reason selects among --all; with named tenants leave it out")
	case o.allNamespaces && !o.all:
		return errors.New("--all-namespaces works with --all; name tenants in one namespace with -n")
	case o.timeout <= 0:
		return errors.New("--timeout must be positive")
	}
	s, err := o.scope(o.allNamespaces)
	if err != nil {
		return err
	}
	c, err := o.client()
	if err != nil {
		return err
	}
	var tenants []v1alpha1.DefenderTenant
	if o.all {
		all, err := listTenants(ctx, c, s, nil)
		if err != nil {
			return err
		}
		for i := range all {
			if o.reason == "" || readyReason(&all[i]) == o.reason {
				tenants = append(tenants, all[i])
			}
		}
		if len(tenants) == 0 {
			_, err := fmt.Fprintf(o.streams.ErrOut, "No DefenderTenants to refresh %s%s.\n", s.where(), withReason(o.reason))
			return err
		}
	} else {
		// Every name is checked before any request is made, so that a typo does
		// not leave half of the list refreshed.
		for _, name := range slices.Compact(slices.Sorted(slices.Values(names))) {
			tenant, err := getTenant(ctx, c, s.namespace, name)
			if err != nil {
				return err
			}
			tenants = append(tenants, *tenant)
		}
	}

	requestedAt := o.clock.Now().UTC().Format(requestedAtLayout)
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{v1alpha1.AnnotationRequestedAt: requestedAt}}})
	if err != nil {
		return err
	}
	for i := range tenants {
		if err := c.Patch(ctx, &tenants[i], client.RawPatch(types.MergePatchType, patch), client.FieldOwner(FieldManager)); err != nil {
			return fmt.Errorf("requesting a refresh of DefenderTenant %s/%s: %w", tenants[i].Namespace, tenants[i].Name, err)
		}
		if _, err := fmt.Fprintf(o.streams.Out, "%s/%s: refresh requested\n", tenants[i].Namespace, tenants[i].Name); err != nil {
			return err
		}
	}
	if !o.wait {
		return nil
	}
	return o.waitForResults(ctx, c, s, tenants, requestedAt)
}

func withReason(reason string) string {
	if reason == "" {
		return ""
	}
	return " with reason " + reason
}

// waitForResults polls the tenants until the operator handled requestedAt on
// each, printing each result as it arrives. One list per poll serves a fleet of
// any size.
func (o *refreshOptions) waitForResults(ctx context.Context, c client.Reader, s scope, tenants []v1alpha1.DefenderTenant, requestedAt string) error {
	pending := map[types.NamespacedName]bool{}
	notReady := 0
	for i := range tenants {
		key := client.ObjectKeyFromObject(&tenants[i])
		if reason := readyReason(&tenants[i]); slices.Contains(clusterSideReasons, reason) || tenants[i].Spec.Suspend {
			notReady++
			if _, err := fmt.Fprintf(o.streams.Out, "%s: not refreshed: %s needs a fix in the cluster first\n", key, orSuspended(&tenants[i], reason)); err != nil {
				return err
			}
			continue
		}
		pending[key] = true
	}
	err := wait.PollUntilContextTimeout(ctx, o.pollInterval, o.timeout, true, func(ctx context.Context) (bool, error) {
		if len(pending) == 0 {
			return true, nil
		}
		current, err := listTenants(ctx, c, s, nil)
		if err != nil {
			return false, err
		}
		for i := range current {
			tenant := &current[i]
			key := client.ObjectKeyFromObject(tenant)
			if !pending[key] || tenant.Status.LastHandledRequestedAt != requestedAt {
				continue
			}
			delete(pending, key)
			if !isReady(tenant) {
				notReady++
			}
			if _, err := fmt.Fprintf(o.streams.Out, "%s: %s\n", key, result(tenant)); err != nil {
				return false, err
			}
		}
		return len(pending) == 0, nil
	})
	if err != nil && !wait.Interrupted(err) {
		return err
	}
	if len(pending) > 0 {
		keys := make([]string, 0, len(pending))
		for key := range pending {
			keys = append(keys, key.String())
		}
		slices.Sort(keys)
		return fmt.Errorf("timed out after %s waiting for the operator to handle the request of %d tenants: %s", o.timeout, len(keys), strings.Join(keys, ", "))
	}
	if notReady > 0 {
		return fmt.Errorf("%d of %d tenants are not Ready", notReady, len(tenants))
	}
	return nil
}

func orSuspended(tenant *v1alpha1.DefenderTenant, reason string) string {
	if tenant.Spec.Suspend {
		return v1alpha1.ReasonSuspended
	}
	return reason
}

// result is a tenant's Ready condition in one line: the reason, and for a tenant
// that is not Ready the condition's message, which says what to do.
func result(tenant *v1alpha1.DefenderTenant) string {
	c := readyCondition(tenant)
	if c == nil {
		return "no Ready condition yet"
	}
	if isReady(tenant) {
		return "Ready (" + c.Reason + ")"
	}
	line := "not Ready: " + c.Reason
	if c.Message != "" {
		line += ": " + c.Message
	}
	return line
}
