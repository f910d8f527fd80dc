package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// The fleet's customers beside contoso and fabrikam, as demo.yaml registers them.
const (
	northwindTenantID = "9a1d7e3c-6b2f-4e8a-b5c4-2d0f1e3a7b65"
	woodgroveTenantID = "5d2c7a9b-3e1f-4b6d-8a2c-9e7f1b3d5c07"
	graphResource     = "https://graph.microsoft.com"
	retiringResource  = "https://api.security.microsoft.com"
)

// graphRoles are the Microsoft Graph security API roles the fleet's tenants need.
var graphRoles = []string{"SecurityIncident.Read.All", "SecurityAlert.Read.All", "ThreatHunting.Read.All"}

// fleetTenant is a customer of the partner app and the state it settles in.
type fleetTenant struct {
	namespace, name, tenantID, resource string
	roles                               []string
	reason                              string
}

// fleet is the partner app's customers: on Microsoft Graph, one waiting for its
// admin's consent, one whose admin left out a role, one still on the retiring
// Defender XDR API, and a namespace asking for a tenant its grant does not cover.
var fleet = []fleetTenant{
	{"customer-contoso", "contoso", contosoTenantID, graphResource, graphRoles, v1alpha1.ReasonTokenReady},
	{"customer-fabrikam", "fabrikam", fabrikamTenantID, graphResource, graphRoles, v1alpha1.ReasonMissingRoles},
	{"customer-northwind", "northwind", northwindTenantID, graphResource, graphRoles, v1alpha1.ReasonConsentRequired},
	{"customer-fabrikam", "contoso-from-fabrikam", contosoTenantID, graphResource, graphRoles, v1alpha1.ReasonAppNotAllowed},
}

// woodgrove is applied with kubectl apply, which prints the admission warning about
// its retiring resource.
var woodgrove = fleetTenant{"customer-woodgrove", "woodgrove", woodgroveTenantID, retiringResource,
	[]string{"Incident.Read.All", "AdvancedHunting.Read.All"}, v1alpha1.ReasonTokenReady}

// fleetTour shows a partner's day with `kubectl defender`: who is Ready, who must
// consent (with the links to send), a customer admin consenting, the retry that
// follows at once, and the tenant still on an API that retires.
func (d *demo) fleetTour(ctx context.Context) error {
	step("A fleet of customers on Microsoft Graph, served by the partner app")
	for _, ft := range fleet {
		if err := d.client.Create(ctx, ft.object()); err != nil {
			return err
		}
	}
	detail("created %d DefenderTenants in customer namespaces, each with spec.appRef ClusterDefenderApp/%s", len(fleet), partnerAppName)

	step("A customer still on the Defender XDR API, which Microsoft retires on 2027-02-01: kubectl apply warns")
	manifest, err := yaml.Marshal(woodgrove.object())
	if err != nil {
		return err
	}
	manifest = []byte(strings.Replace(string(manifest), "status: {}\n", "", 1))
	if err := d.kubectlWithInput(ctx, manifest, "apply", "-f", "-"); err != nil {
		return err
	}
	if err := d.waitForFleet(ctx, append(fleet, woodgrove)); err != nil {
		return err
	}

	if err := d.waitForSummary(ctx, int32(len(fleet)+1)); err != nil {
		return err
	}
	step("The fleet at a glance: the app counts its tenants")
	if err := d.kubectl(ctx, "get", "clusterdefenderapps"); err != nil {
		return err
	}
	step("Every tenant of the partner app, and the counts by reason")
	if err := d.kubectl(ctx, "defender", "status", "-A", "--app", "ClusterDefenderApp/"+partnerAppName); err != nil {
		return err
	}
	step("Who must consent, with the links to send to each customer's admin")
	if err := d.kubectl(ctx, "defender", "consent", "-A", "--app", "ClusterDefenderApp/"+partnerAppName); err != nil {
		return err
	}

	northwind := &v1alpha1.DefenderTenant{}
	if err := d.client.Get(ctx, client.ObjectKey{Namespace: "customer-northwind", Name: "northwind"}, northwind); err != nil {
		return err
	}
	step("northwind's admin opens the consent link and accepts (the emulator stands in for the sign-in page)")
	if err := openConsentLink(ctx, d.emulatorURL, northwind.Status.AdminConsentURL); err != nil {
		return err
	}
	detail("consented: the app now holds its Graph roles in northwind's tenant")

	step("Retry northwind now instead of waiting out its backoff (never within a minute of its last request)")
	if err := d.kubectl(ctx, "defender", "refresh", "northwind", "-n", "customer-northwind", "--wait"); err != nil {
		return err
	}

	step("woodgrove's status and Events: the date its API stops, and where to move")
	t := &v1alpha1.DefenderTenant{}
	if err := d.client.Get(ctx, client.ObjectKey{Namespace: woodgrove.namespace, Name: woodgrove.name}, t); err != nil {
		return err
	}
	if t.Status.ResourceRetiresAt != nil {
		detail("status.resourceRetiresAt: %s", t.Status.ResourceRetiresAt.UTC().Format(time.RFC3339))
	}
	if err := d.kubectl(ctx, "events", "-n", woodgrove.namespace, "--for", "defendertenant/"+woodgrove.name, "--types", "Warning"); err != nil {
		return err
	}
	step("What moving the fleet to Graph would change (a dry run: nothing is applied without --apply)")
	return d.kubectl(ctx, "defender", "migrate", "--to", "graph", "-A")
}

func (ft fleetTenant) object() *v1alpha1.DefenderTenant {
	return &v1alpha1.DefenderTenant{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "DefenderTenant"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ft.namespace, Name: ft.name},
		Spec: v1alpha1.DefenderTenantSpec{
			TenantID:      ft.tenantID,
			AppRef:        &v1alpha1.AppReference{Kind: v1alpha1.AppKindClusterDefenderApp, Name: partnerAppName},
			Resource:      ft.resource,
			RequiredRoles: ft.roles,
		},
	}
}

// fleetNamespaces are the customer namespaces the fleet lives in.
func fleetNamespaces() []string {
	seen := map[string]bool{}
	var out []string
	for _, ft := range append(fleet, woodgrove) {
		if !seen[ft.namespace] {
			seen[ft.namespace] = true
			out = append(out, ft.namespace)
		}
	}
	return out
}

func (d *demo) createNamespaces(ctx context.Context, names ...string) error {
	for _, ns := range names {
		if err := d.client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); client.IgnoreAlreadyExists(err) != nil {
			return err
		}
	}
	return nil
}

// waitForFleet waits until each tenant's Ready condition has its expected reason.
func (d *demo) waitForFleet(ctx context.Context, tenants []fleetTenant) error {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	for {
		var pending []string
		for _, ft := range tenants {
			t := &v1alpha1.DefenderTenant{}
			if err := d.client.Get(ctx, client.ObjectKey{Namespace: ft.namespace, Name: ft.name}, t); err != nil {
				return err
			}
			if ready := apimeta.FindStatusCondition(t.Status.Conditions, v1alpha1.ConditionReady); ready == nil || ready.Reason != ft.reason {
				pending = append(pending, ft.namespace+"/"+ft.name)
			}
		}
		if len(pending) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not settle (see %s): %w", strings.Join(pending, ", "), rel(d.operatorLog), ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// openConsentLink does what a customer's admin does with the link: open it. The
// link names the real sign-in host, for the admin's browser; the demo sends it to
// the emulator instead, which records the consent and redirects to the app's
// redirect URI, which the demo does not follow.
func openConsentLink(ctx context.Context, emulatorURL, link string) error {
	u, err := url.Parse(link)
	if err != nil || link == "" {
		return fmt.Errorf("northwind shows no usable status.adminConsentURL (%q)", link)
	}
	emulator, err := url.Parse(emulatorURL)
	if err != nil {
		return err
	}
	u.Scheme, u.Host = emulator.Scheme, emulator.Host
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusFound {
		return fmt.Errorf("opening the consent link: HTTP %d", resp.StatusCode)
	}
	detail("the admin is sent back to %s", resp.Header.Get("Location"))
	return nil
}

// waitForSummary waits until the partner app's status.tenants counts total tenants:
// the summary is written at most every 10 seconds.
func (d *demo) waitForSummary(ctx context.Context, total int32) error {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	for {
		app := &v1alpha1.ClusterDefenderApp{}
		if err := d.client.Get(ctx, client.ObjectKey{Name: partnerAppName}, app); err != nil {
			return err
		}
		if s := app.Status.Tenants; s != nil && s.Total == total {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the partner app's status.tenants did not count %d tenants (see %s): %w", total, rel(d.operatorLog), ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// kubectlWithInput is kubectl with a manifest on its standard input.
func (d *demo) kubectlWithInput(ctx context.Context, input []byte, args ...string) error {
	fmt.Printf("$ kubectl %s <<EOF\n%sEOF\n", strings.Join(args, " "), input)
	cmd := d.kubectlCommand(ctx, args...)
	cmd.Stdin = strings.NewReader(string(input))
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("kubectl %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

// kubectlCommand is kubectl against the demo cluster, with bin/ first on the PATH so
// that `kubectl defender` finds the plugin the demo built.
func (d *demo) kubectlCommand(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "kubectl", args...)
	bin, _ := filepath.Abs(filepath.Dir(pluginBin))
	cmd.Env = append(os.Environ(), "KUBECONFIG="+d.kubeconfig, "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return cmd
}
