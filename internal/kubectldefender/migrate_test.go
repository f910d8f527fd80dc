package kubectldefender

import (
	"context"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

func expectSpec(t *testing.T, namespace, name, resource string, roles ...string) *v1alpha1.DefenderTenant {
	t.Helper()
	tenant := getTenantT(t, namespace, name)
	if tenant.Spec.Resource != resource || !slices.Equal(tenant.Spec.RequiredRoles, roles) {
		t.Errorf("%s/%s: resource %q, roles %q; want %q, %q", namespace, name, tenant.Spec.Resource, tenant.Spec.RequiredRoles, resource, roles)
	}
	return tenant
}

func managedBy(tenant *v1alpha1.DefenderTenant, manager string) bool {
	return slices.ContainsFunc(tenant.ManagedFields, func(f metav1.ManagedFieldsEntry) bool { return f.Manager == manager })
}

// TestMigrate: a dry run changes nothing; --apply moves each tenant on a
// retiring resource to its cloud's Graph resource with mapped roles, leaves a
// tenant with a role Graph lacks (unless --drop-unmapped-roles) and one whose
// app's cloud is unknown, and fails for them.
func TestMigrate(t *testing.T) {
	f := createFleet(t, "migrate")
	path := kubeconfig(t, f.east)

	golden(t, "migrate-dry-run", mustRun(t, path, "migrate", "--to", "graph", "-A"))
	expectSpec(t, f.east, "fabrikam", "", "Incident.Read.All")
	expectSpec(t, f.east, "northwind", "", "Alert.Read.All", "Incident.Read.All")
	expectSpec(t, f.west, "tailspin", "https://api-gov.securitycenter.microsoft.us", "Alert.Read.All", "Machine.Read.All")

	golden(t, "migrate-apply", mustRun(t, path, "migrate", "--to", "graph", "--apply"))
	fabrikam := expectSpec(t, f.east, "fabrikam", graph, "SecurityIncident.Read.All")
	expectSpec(t, f.east, "northwind", "https://graph.microsoft.us", "SecurityAlert.Read.All", "SecurityIncident.Read.All")
	expectSpec(t, f.east, "contoso", graph, "SecurityIncident.Read.All")
	if !managedBy(fabrikam, FieldManager) {
		t.Errorf("managedFields %v name no %s", fabrikam.ManagedFields, FieldManager)
	}

	got := run(t, path, nil, "migrate", "--to", "graph", "-A", "--apply")
	if got.err == nil || got.err.Error() != "2 tenants not migrated (see above)" {
		t.Errorf("error %v, want 2 tenants not migrated", got.err)
	}
	golden(t, "migrate-apply-unmapped", got.stdout)
	expectSpec(t, f.west, "tailspin", "https://api-gov.securitycenter.microsoft.us", "Alert.Read.All", "Machine.Read.All")

	got = run(t, path, nil, "migrate", "--to", "graph", "-n", f.west, "--apply", "--drop-unmapped-roles")
	if got.err == nil || got.err.Error() != "1 tenants not migrated (see above)" {
		t.Errorf("error %v, want 1 tenants not migrated (litware, whose app is missing)", got.err)
	}
	golden(t, "migrate-apply-drop", got.stdout)
	expectSpec(t, f.west, "tailspin", "https://dod-graph.microsoft.us", "SecurityAlert.Read.All")

	if got := run(t, path, nil, "migrate", "--to", "xdr"); got.err == nil || !strings.Contains(got.err.Error(), "graph is the only target") {
		t.Errorf("--to xdr: error %v, want graph named as the only target", got.err)
	}
}

// TestMigrateTwin: --twin creates <name>-graph beside each tenant with its own
// token Secret, leaves the tenant as it is, and does not replace a twin that
// exists.
func TestMigrateTwin(t *testing.T) {
	f := createFleet(t, "migrate-twin")
	path := kubeconfig(t, f.east)
	northwind := getTenantT(t, f.east, "northwind")
	patch := client.MergeFrom(northwind.DeepCopy())
	northwind.Spec.TokenSecretName = "northwind-creds"
	if err := k8s(t).Patch(context.Background(), northwind, patch); err != nil {
		t.Fatal(err)
	}

	golden(t, "migrate-twin-dry-run", mustRun(t, path, "migrate", "--to", "graph", "--twin"))
	if err := k8s(t).Get(context.Background(), client.ObjectKey{Namespace: f.east, Name: "fabrikam-graph"}, &v1alpha1.DefenderTenant{}); err == nil {
		t.Error("the dry run created fabrikam-graph")
	}

	golden(t, "migrate-twin-apply", mustRun(t, path, "migrate", "--to", "graph", "--twin", "--apply"))
	expectSpec(t, f.east, "fabrikam", "", "Incident.Read.All")
	expectSpec(t, f.east, "northwind", "", "Alert.Read.All", "Incident.Read.All")
	twin := expectSpec(t, f.east, "fabrikam-graph", graph, "SecurityIncident.Read.All")
	if twin.Spec.AppRef == nil || twin.Spec.AppRef.Name != "kd-partner" || twin.Spec.TenantID != "22222222-2222-4222-8222-222222222222" || twin.TokenSecretNameOrDefault() != "fabrikam-graph-token" {
		t.Errorf("twin spec %+v: want fabrikam's app and tenant, token Secret fabrikam-graph-token", twin.Spec)
	}
	twin = expectSpec(t, f.east, "northwind-graph", "https://graph.microsoft.us", "SecurityAlert.Read.All", "SecurityIncident.Read.All")
	if twin.Spec.Cloud != v1alpha1.CloudUSGovHigh || twin.Spec.TokenSecretName != "northwind-creds-graph" || twin.Spec.ClientSecretRef.Name != "partner" {
		t.Errorf("twin spec %+v: want northwind's cloud and credential, token Secret northwind-creds-graph", twin.Spec)
	}

	got := run(t, path, nil, "migrate", "--to", "graph", "--twin", "--apply")
	if got.err == nil || got.err.Error() != "2 tenants not migrated (see above)" {
		t.Errorf("error %v, want 2 tenants not migrated: their twins exist", got.err)
	}
	golden(t, "migrate-twin-exists", got.stdout)
}
