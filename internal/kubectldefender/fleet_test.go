package kubectldefender

import (
	"context"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

const (
	partnerClientID = "0b9f7c55-8a3e-4d2a-9c61-5f0e7d3b2a10"
	graph           = "https://graph.microsoft.com"
	consentBase     = "https://login.microsoftonline.com/"
)

// fleet is a partner's customers in two namespaces, one tenant per state the
// commands tell apart:
//
//	east/contoso    ClusterDefenderApp/kd-partner, Graph, Ready
//	east/fabrikam   ClusterDefenderApp/kd-partner, default resource (retiring), ConsentRequired
//	east/northwind  inline, USGovHigh, default resource (retiring), MissingRoles
//	east/woodgrove  ClusterDefenderApp/kd-partner, Graph, MissingRoles with a role
//	                that needs quoting in CSV (a quote) and Markdown (a pipe)
//	west/adatum     DefenderApp/west-app (DoD), no status yet
//	west/litware    DefenderApp/missing, AppNotFound, operator says its resource retires
//	west/tailspin   DefenderApp/west-app (DoD), explicit retiring resource, Ready
type fleet struct {
	east, west string
}

func createFleet(t *testing.T, prefix string) fleet {
	t.Helper()
	f := fleet{east: namespace(t, prefix+"-east"), west: namespace(t, prefix+"-west")}
	ctx := context.Background()
	c := k8s(t)
	clusterApp := &v1alpha1.ClusterDefenderApp{
		ObjectMeta: metav1.ObjectMeta{Name: "kd-partner"},
		Spec: v1alpha1.ClusterDefenderAppSpec{
			AppSpec: v1alpha1.AppSpec{
				ClientID:   partnerClientID,
				Credential: v1alpha1.AppCredential{ClientSecret: &v1alpha1.ClientSecretCredential{SecretRef: v1alpha1.AppSecretKeyReference{Name: "partner"}}},
			},
			TenantGrants: []v1alpha1.TenantGrant{{Namespaces: []string{f.east}, TenantIDs: []string{"*"}}},
		},
	}
	if err := c.Create(ctx, clusterApp); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	westApp := &v1alpha1.DefenderApp{
		ObjectMeta: metav1.ObjectMeta{Name: "west-app", Namespace: f.west},
		Spec: v1alpha1.DefenderAppSpec{AppSpec: v1alpha1.AppSpec{
			ClientID:   partnerClientID,
			Cloud:      v1alpha1.CloudDoD,
			Credential: v1alpha1.AppCredential{ClientSecret: &v1alpha1.ClientSecretCredential{SecretRef: v1alpha1.AppSecretKeyReference{Name: "partner"}}},
		}},
	}
	if err := c.Create(ctx, westApp); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	partner := &v1alpha1.AppReference{Kind: v1alpha1.AppKindClusterDefenderApp, Name: "kd-partner"}
	west := &v1alpha1.AppReference{Kind: v1alpha1.AppKindDefenderApp, Name: "west-app"}
	expires := metav1.NewTime(fixedTime.Add(time.Hour))
	next := metav1.NewTime(fixedTime.Add(40 * time.Minute))
	retires := metav1.NewTime(time.Date(2027, time.February, 1, 0, 0, 0, 0, time.UTC))
	tenants := []*v1alpha1.DefenderTenant{
		{
			ObjectMeta: metav1.ObjectMeta{Name: "contoso", Namespace: f.east},
			Spec:       v1alpha1.DefenderTenantSpec{TenantID: "11111111-1111-4111-8111-111111111111", AppRef: partner, Resource: graph, RequiredRoles: []string{"SecurityIncident.Read.All"}},
			Status: v1alpha1.DefenderTenantStatus{
				Conditions: readyCond(metav1.ConditionTrue, v1alpha1.ReasonTokenReady, "the token is published"),
				ExpiresAt:  &expires, NextRefreshTime: &next, LastRefreshTime: &fixedTime,
				GrantedRoles: []string{"SecurityAlert.Read.All", "SecurityIncident.Read.All"},
			},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Name: "fabrikam", Namespace: f.east},
			Spec:       v1alpha1.DefenderTenantSpec{TenantID: "22222222-2222-4222-8222-222222222222", AppRef: partner, RequiredRoles: []string{"Incident.Read.All"}},
			Status: v1alpha1.DefenderTenantStatus{
				Conditions:        readyCond(metav1.ConditionFalse, v1alpha1.ReasonConsentRequired, "an admin of the tenant must consent"),
				AdminConsentURL:   consentBase + "22222222-2222-4222-8222-222222222222/v2.0/adminconsent?client_id=" + partnerClientID + "&scope=https%3A%2F%2Fapi.security.microsoft.com%2F.default",
				ResourceRetiresAt: &retires,
				LastFailure:       &v1alpha1.LastFailure{Time: fixedTime, Reason: v1alpha1.ReasonConsentRequired, Code: "AADSTS7000229"},
			},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Name: "northwind", Namespace: f.east},
			Spec: v1alpha1.DefenderTenantSpec{
				TenantID: "33333333-3333-4333-8333-333333333333", ClientID: partnerClientID, Cloud: v1alpha1.CloudUSGovHigh,
				ClientSecretRef: v1alpha1.ClientSecretReference{Name: "partner"}, RequiredRoles: []string{"Alert.Read.All", "Incident.Read.All"},
			},
			Status: v1alpha1.DefenderTenantStatus{
				Conditions:      readyCond(metav1.ConditionFalse, v1alpha1.ReasonMissingRoles, "the token lacks Alert.Read.All"),
				MissingRoles:    []string{"Alert.Read.All"},
				GrantedRoles:    []string{"Incident.Read.All"},
				AdminConsentURL: "https://login.microsoftonline.us/33333333-3333-4333-8333-333333333333/v2.0/adminconsent?client_id=" + partnerClientID + "&scope=https%3A%2F%2Fapi-gov.security.microsoft.us%2F.default",
			},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Name: "woodgrove", Namespace: f.east},
			Spec:       v1alpha1.DefenderTenantSpec{TenantID: "44444444-4444-4444-8444-444444444444", AppRef: partner, Resource: graph, RequiredRoles: []string{"SecurityAlert.Read.All", `Custom"Quoted|Role`}},
			Status: v1alpha1.DefenderTenantStatus{
				Conditions:      readyCond(metav1.ConditionFalse, v1alpha1.ReasonMissingRoles, "the token lacks roles"),
				MissingRoles:    []string{`Custom"Quoted|Role`, "SecurityAlert.Read.All"},
				AdminConsentURL: consentBase + "44444444-4444-4444-8444-444444444444/v2.0/adminconsent?client_id=" + partnerClientID + "&scope=https%3A%2F%2Fgraph.microsoft.com%2F.default",
			},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Name: "adatum", Namespace: f.west},
			Spec:       v1alpha1.DefenderTenantSpec{TenantID: "55555555-5555-4555-8555-555555555555", AppRef: west, Resource: "https://dod-graph.microsoft.us"},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Name: "litware", Namespace: f.west},
			Spec:       v1alpha1.DefenderTenantSpec{TenantID: "66666666-6666-4666-8666-666666666666", AppRef: &v1alpha1.AppReference{Name: "missing"}},
			Status: v1alpha1.DefenderTenantStatus{
				Conditions:        readyCond(metav1.ConditionFalse, v1alpha1.ReasonAppNotFound, "DefenderApp missing does not exist"),
				ResourceRetiresAt: &retires,
			},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Name: "tailspin", Namespace: f.west},
			Spec:       v1alpha1.DefenderTenantSpec{TenantID: "77777777-7777-4777-8777-777777777777", AppRef: west, Resource: "https://api-gov.securitycenter.microsoft.us", RequiredRoles: []string{"Alert.Read.All", "Machine.Read.All"}},
			Status: v1alpha1.DefenderTenantStatus{
				Conditions: readyCond(metav1.ConditionTrue, v1alpha1.ReasonTokenReady, "the token is published"),
				ExpiresAt:  &expires, GrantedRoles: []string{"Alert.Read.All", "Machine.Read.All"},
			},
		},
	}
	for _, tenant := range tenants {
		if tenant.Status.Conditions == nil {
			if err := c.Create(ctx, tenant); err != nil {
				t.Fatal(err)
			}
			continue
		}
		createTenant(t, tenant)
	}
	return f
}
