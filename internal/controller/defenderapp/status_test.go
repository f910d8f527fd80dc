package defenderapp

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/conditions"
	"github.com/tenantcreds/defender-tenant-operator/internal/credential"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
	"github.com/tenantcreds/defender-tenant-operator/internal/selfsigned"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
)

// parsedCertificate is a self-signed RSA certificate valid from notBefore to
// notAfter, parsed as the credential Reader would.
func parsedCertificate(t *testing.T, notBefore, notAfter time.Time) *entra.Certificate {
	t.Helper()
	c, err := selfsigned.New("partner-app", notBefore, notAfter)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := entra.ParseCertificate(c.CertPEM, c.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestAppStatusIsComputedFromTheObservation(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	earlier := metav1.NewTime(now.Add(-time.Hour))
	cert := parsedCertificate(t, now.AddDate(-1, 0, 0), now.AddDate(0, 6, 0))
	expired := parsedCertificate(t, now.AddDate(-1, 0, 0), now)
	expiring := parsedCertificate(t, now.AddDate(-1, 0, 0), now.Add(10*24*time.Hour))
	secret, sa := types.NamespacedName{Namespace: "crn", Name: "partner-cert"}, types.NamespacedName{Namespace: "crn", Name: "partner-app"}
	federated := &v1alpha1.FederatedCredentialStatus{Issuer: "https://issuer", Subject: "system:serviceaccount:crn:partner-app", Audience: v1alpha1.DefaultWorkloadIdentityAudience}
	readyBefore := metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonCredentialReady, LastTransitionTime: earlier}
	stalledBefore := metav1.Condition{Type: v1alpha1.ConditionStalled, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonCredentialsNotFound, LastTransitionTime: earlier}
	reconcilingBefore := metav1.Condition{Type: v1alpha1.ConditionReconciling, Status: metav1.ConditionTrue, Reason: "Old", LastTransitionTime: earlier}

	clientSecret := func(state credential.State) appStatusInput {
		source := credential.ClientSecret{Secret: types.NamespacedName{Namespace: "ns", Name: "partner-app"}, Key: "client-secret"}
		return appStatusInput{Generation: 3, Now: now, Kind: v1alpha1.CredentialClientSecret, Credential: credential.Credential{State: state, Source: source}}
	}
	certificate := func(c credential.Credential) appStatusInput {
		c.Source = credential.Certificate{Secret: secret}
		return appStatusInput{Generation: 3, Now: now, Kind: v1alpha1.CredentialCertificate, Credential: c}
	}
	workload := func(state credential.State, f *v1alpha1.FederatedCredentialStatus) appStatusInput {
		source := credential.WorkloadIdentity{ServiceAccount: sa, Audience: v1alpha1.DefaultWorkloadIdentityAudience}
		return appStatusInput{Generation: 3, Now: now, Kind: v1alpha1.CredentialWorkloadIdentity,
			Credential: credential.Credential{State: state, Source: source, Version: "uid-1"}, Federated: f}
	}
	certStatus := func(c *entra.Certificate) *v1alpha1.CertificateStatus {
		return &v1alpha1.CertificateStatus{SHA1Thumbprint: c.SHA1Thumbprint(), SHA256Thumbprint: c.SHA256Thumbprint(), NotAfter: conditions.TimeOrNil(c.NotAfter())}
	}

	tests := []struct {
		name      string
		prev      v1alpha1.AppStatus
		in        appStatusInput
		reason    string
		inMessage []string
		cert      *v1alpha1.CertificateStatus
		federated *v1alpha1.FederatedCredentialStatus
		// readySince is the Ready condition's lastTransitionTime; zero: now.
		readySince metav1.Time
	}{
		{name: "usable client secret", in: clientSecret(credential.Usable), reason: v1alpha1.ReasonCredentialReady, inMessage: []string{`"partner-app"`, `"ns"`, `"client-secret"`}},
		{name: "client secret Secret missing", in: clientSecret(credential.SecretMissing), reason: v1alpha1.ReasonCredentialsNotFound, inMessage: []string{`"partner-app"`, `namespace "ns"`, "Create it"}},
		{name: "client secret key empty", in: clientSecret(credential.KeyEmpty), reason: v1alpha1.ReasonCredentialsNotFound, inMessage: []string{`key "client-secret"`, `namespace "ns"`}},
		{name: "client secret key holds no client secret", in: clientSecret(credential.Implausible), reason: v1alpha1.ReasonInvalidClientSecret, inMessage: []string{"does not hold a client secret"}},
		{name: "usable certificate", in: certificate(credential.Credential{State: credential.Usable, Certificate: cert}), reason: v1alpha1.ReasonCredentialReady, cert: certStatus(cert), inMessage: []string{cert.SHA1Thumbprint(), `"partner-cert"`, `"crn"`}},
		{name: "certificate within 30 days says so", in: certificate(credential.Credential{State: credential.Usable, Certificate: expiring}), reason: v1alpha1.ReasonCredentialReady, cert: expiringStatus(certStatus(expiring)), inMessage: []string{"expires within 30 days"}},
		{name: "certificate at notAfter has expired", in: certificate(credential.Credential{State: credential.Usable, Certificate: expired}), reason: v1alpha1.ReasonCertificateExpired, cert: certStatus(expired), inMessage: []string{expired.SHA1Thumbprint(), `"partner-cert"`, `namespace "crn"`, "renewed"}},
		{name: "certificate Secret missing", in: certificate(credential.Credential{State: credential.SecretMissing}), reason: v1alpha1.ReasonCredentialsNotFound, inMessage: []string{"kubernetes.io/tls", `"partner-cert"`, `"crn"`}},
		{name: "certificate Secret lacks tls.key", in: certificate(credential.Credential{State: credential.KeyEmpty}), reason: v1alpha1.ReasonCredentialsNotFound, inMessage: []string{"tls.crt or tls.key"}},
		{name: "certificate does not parse", in: certificate(credential.Credential{State: credential.CertificateInvalid, Detail: "tls.crt does not parse: it holds no PEM certificate"}), reason: v1alpha1.ReasonInvalidCertificate, inMessage: []string{"it holds no PEM certificate", `"partner-cert"`, `"crn"`}},
		{name: "workload identity with its federated credential", in: workload(credential.Usable, federated), reason: v1alpha1.ReasonCredentialReady, federated: readFor(federated, "uid-1", 3), inMessage: []string{`"partner-app"`, "uid-1", `"crn"`}},
		{name: "workload identity before a token was issued", in: workload(credential.Usable, nil), reason: v1alpha1.ReasonCredentialReady},
		{name: "ServiceAccount missing shows no federated credential", in: workload(credential.ServiceAccountMissing, federated), reason: v1alpha1.ReasonServiceAccountNotFound, inMessage: []string{`"partner-app"`, `namespace "crn"`, "Create it"}},
		{name: "recovery removes Stalled", prev: v1alpha1.AppStatus{Conditions: []metav1.Condition{stalledBefore, reconcilingBefore}}, in: clientSecret(credential.Usable), reason: v1alpha1.ReasonCredentialReady},
		{name: "an unchanged Ready keeps its transition time", prev: v1alpha1.AppStatus{Conditions: []metav1.Condition{readyBefore}}, in: clientSecret(credential.Usable), reason: v1alpha1.ReasonCredentialReady, readySince: earlier},
		{name: "another credential drops the certificate", prev: v1alpha1.AppStatus{Certificate: certStatus(cert), Credential: v1alpha1.CredentialCertificate}, in: clientSecret(credential.Usable), reason: v1alpha1.ReasonCredentialReady},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := computeAppStatus(tt.prev, tt.in)
			if got.ObservedGeneration != tt.in.Generation || got.Credential != tt.in.Kind {
				t.Errorf("observedGeneration, credential = %d, %s; want %d, %s", got.ObservedGeneration, got.Credential, tt.in.Generation, tt.in.Kind)
			}
			ready := meta.FindStatusCondition(got.Conditions, v1alpha1.ConditionReady)
			stalled := meta.FindStatusCondition(got.Conditions, v1alpha1.ConditionStalled)
			wantStatus := metav1.ConditionFalse
			if tt.reason == v1alpha1.ReasonCredentialReady {
				wantStatus = metav1.ConditionTrue
			}
			if ready == nil || ready.Status != wantStatus || ready.Reason != tt.reason || ready.ObservedGeneration != tt.in.Generation {
				t.Fatalf("Ready = %+v, want %s/%s at generation %d", ready, wantStatus, tt.reason, tt.in.Generation)
			}
			switch {
			case wantStatus == metav1.ConditionTrue && stalled != nil:
				t.Errorf("Stalled = %+v on a Ready app", stalled)
			case wantStatus == metav1.ConditionFalse && (stalled == nil || stalled.Reason != tt.reason || stalled.Message != ready.Message):
				t.Errorf("Stalled = %+v, want True/%s with Ready's message", stalled, tt.reason)
			}
			if c := meta.FindStatusCondition(got.Conditions, v1alpha1.ConditionReconciling); c != nil {
				t.Errorf("Reconciling = %+v on an app", c)
			}
			for _, want := range tt.inMessage {
				if !strings.Contains(ready.Message, want) {
					t.Errorf("message %q does not mention %q", ready.Message, want)
				}
			}
			since := tt.readySince
			if since.IsZero() {
				since = metav1.NewTime(now)
			}
			if !ready.LastTransitionTime.Equal(&since) {
				t.Errorf("lastTransitionTime = %s, want %s", ready.LastTransitionTime, since)
			}
			if !equalJSON(got.Certificate, tt.cert) {
				t.Errorf("certificate = %+v, want %+v", got.Certificate, tt.cert)
			}
			if !equalJSON(got.FederatedCredential, tt.federated) {
				t.Errorf("federatedCredential = %+v, want %+v", got.FederatedCredential, tt.federated)
			}
		})
	}
}

func equalJSON(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func TestAppTransitionEvents(t *testing.T) {
	notAfter := metav1.NewTime(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	cert := &v1alpha1.CertificateStatus{SHA1Thumbprint: "3F2A", SHA256Thumbprint: "P0sT", NotAfter: &notAfter}
	expiring := &v1alpha1.CertificateStatus{SHA1Thumbprint: "3F2A", SHA256Thumbprint: "P0sT", NotAfter: &notAfter, Expiring: true}
	renewedExpiring := &v1alpha1.CertificateStatus{SHA1Thumbprint: "4B1C", SHA256Thumbprint: "N3w", NotAfter: &notAfter, Expiring: true}
	status := func(c *v1alpha1.CertificateStatus, conds ...metav1.Condition) v1alpha1.AppStatus {
		return v1alpha1.AppStatus{Certificate: c, Conditions: conds}
	}
	ready := metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonCredentialReady, Message: "ok"}
	failed := func(reason string) metav1.Condition {
		return metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: reason, Message: reason + " message"}
	}
	tests := []struct {
		name          string
		before, after v1alpha1.AppStatus
		want          []string // "Type Reason"
	}{
		{"a new Ready app records nothing", status(nil), status(nil, ready), nil},
		{"a new app that cannot be used warns", status(nil), status(nil, failed(v1alpha1.ReasonCredentialsNotFound)), []string{"Warning CredentialsNotFound"}},
		{"another failure reason warns", status(nil, failed(v1alpha1.ReasonCredentialsNotFound)), status(nil, failed(v1alpha1.ReasonInvalidCertificate)), []string{"Warning InvalidCertificate"}},
		{"the same failure records nothing", status(nil, failed(v1alpha1.ReasonCertificateExpired)), status(nil, failed(v1alpha1.ReasonCertificateExpired)), nil},
		{"recovery is recorded", status(nil, failed(v1alpha1.ReasonServiceAccountNotFound)), status(nil, ready), []string{"Normal CredentialReady"}},
		{"entering the expiry window warns", status(cert, ready), status(expiring, ready), []string{"Warning CertificateExpiring"}},
		{"a new app already in the window warns", status(nil), status(expiring, ready), []string{"Warning CertificateExpiring"}},
		{"staying in the window records nothing", status(expiring, ready), status(expiring, ready), nil},
		{"a renewed certificate already in the window warns again", status(expiring, ready), status(renewedExpiring, ready), []string{"Warning CertificateExpiring"}},
		{"outside the window records nothing", status(cert, ready), status(cert, ready), nil},
		{"expiry warns as a failure, not as expiring", status(expiring, ready), status(cert, failed(v1alpha1.ReasonCertificateExpired)), []string{"Warning CertificateExpired"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, ev := range appTransitionEvents(tt.before, tt.after) {
				got = append(got, ev.Type+" "+ev.Reason)
				if ev.Reason == ReasonCertificateExpiring && (!strings.Contains(ev.Note, tt.after.Certificate.SHA1Thumbprint) || !strings.Contains(ev.Note, "2026-12-01T00:00:00Z")) {
					t.Errorf("note %q lacks the thumbprint or notAfter", ev.Note)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("events = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestAppRequeuesForTheExpiryWindowAndExpiry(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	notAfter := now.Add(45 * 24 * time.Hour)
	cert := parsedCertificate(t, now.AddDate(-1, 0, 0), notAfter)
	in := appStatusInput{Kind: v1alpha1.CredentialCertificate, Credential: credential.Credential{State: credential.Usable, Certificate: cert}}
	tests := []struct {
		name string
		now  time.Time
		in   appStatusInput
		want time.Duration
	}{
		{"before the window: when it opens", now, in, 15 * 24 * time.Hour},
		{"at the window's start: at expiry", notAfter.Add(-CertificateExpiryWarning), in, CertificateExpiryWarning},
		{"in the window: at expiry", notAfter.Add(-time.Hour), in, time.Hour},
		{"expired: on events only", notAfter, in, 0},
		{"client secret: on events only", now, appStatusInput{Kind: v1alpha1.CredentialClientSecret}, 0},
		{"unparsable certificate: on events only", now, appStatusInput{Kind: v1alpha1.CredentialCertificate, Credential: credential.Credential{State: credential.CertificateInvalid}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := appRequeueAfter(tt.now, tt.in); got != tt.want {
				t.Errorf("requeue after %s, want %s", got, tt.want)
			}
		})
	}
}

func expiringStatus(c *v1alpha1.CertificateStatus) *v1alpha1.CertificateStatus {
	c.Expiring = true
	return c
}

// readFor is f as the status shows it once read for a ServiceAccount object and
// a generation of the app.
func readFor(f *v1alpha1.FederatedCredentialStatus, uid types.UID, generation int64) *v1alpha1.FederatedCredentialStatus {
	read := *f
	read.ServiceAccountUID, read.ObservedGeneration = uid, generation
	return &read
}

// TestFederatedCredentialIsReadWhenItsFactsChange: a ServiceAccount token is
// requested only when the status's federated credential was read for another
// generation of the app or another ServiceAccount object, or is missing.
func TestFederatedCredentialIsReadWhenItsFactsChange(t *testing.T) {
	source := credential.WorkloadIdentity{ServiceAccount: types.NamespacedName{Namespace: "crn", Name: "partner-app"}, Audience: v1alpha1.DefaultWorkloadIdentityAudience}
	in := appStatusInput{Generation: 3, Kind: v1alpha1.CredentialWorkloadIdentity, Credential: credential.Credential{State: credential.Usable, Source: source, Version: "uid-1"}}
	read := &v1alpha1.FederatedCredentialStatus{Issuer: "https://issuer", Subject: "system:serviceaccount:crn:partner-app", ServiceAccountUID: "uid-1", ObservedGeneration: 3}
	with := func(mutate func(*v1alpha1.FederatedCredentialStatus)) v1alpha1.AppStatus {
		f := *read
		mutate(&f)
		return v1alpha1.AppStatus{FederatedCredential: &f}
	}
	unusable := in
	unusable.Credential.State = credential.ServiceAccountMissing
	for _, tt := range []struct {
		name string
		prev v1alpha1.AppStatus
		in   appStatusInput
		want bool
	}{
		{"read for this generation and ServiceAccount", v1alpha1.AppStatus{FederatedCredential: read}, in, false},
		{"never read", v1alpha1.AppStatus{}, in, true},
		{"read for another generation", with(func(f *v1alpha1.FederatedCredentialStatus) { f.ObservedGeneration = 2 }), in, true},
		{"read from a ServiceAccount since re-created", with(func(f *v1alpha1.FederatedCredentialStatus) { f.ServiceAccountUID = "uid-0" }), in, true},
		{"a ServiceAccount the operator may not use", v1alpha1.AppStatus{}, unusable, false},
		{"a client secret", v1alpha1.AppStatus{}, appStatusInput{Kind: v1alpha1.CredentialClientSecret}, false},
	} {
		if got := federatedCredentialDue(tt.prev, tt.in); got != tt.want {
			t.Errorf("%s: due = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestFailedTokenRequestForTheFederatedCredential: Forbidden is this generation's
// answer (ServiceAccountNotFound); any other failure leaves the generation
// unhandled, so the next reconcile asks again.
func TestFailedTokenRequestForTheFederatedCredential(t *testing.T) {
	source := credential.WorkloadIdentity{ServiceAccount: types.NamespacedName{Namespace: "crn", Name: "partner-app"}, Audience: v1alpha1.DefaultWorkloadIdentityAudience}
	in := appStatusInput{Generation: 3, Kind: v1alpha1.CredentialWorkloadIdentity, Credential: credential.Credential{State: credential.Usable, Source: source, Version: "uid-1"}}
	prev := v1alpha1.AppStatus{ObservedGeneration: 2}

	in.FederatedErr = apierrors.NewForbidden(schema.GroupResource{Resource: "serviceaccounts"}, "partner-app", errors.New("cannot create token"))
	got := computeAppStatus(prev, in)
	ready := meta.FindStatusCondition(got.Conditions, v1alpha1.ConditionReady)
	if ready == nil || ready.Reason != v1alpha1.ReasonServiceAccountNotFound || got.ObservedGeneration != 3 || !strings.Contains(ready.Message, "cluster_resources_role.yaml") {
		t.Errorf("Forbidden: Ready %+v, observedGeneration %d; want ServiceAccountNotFound naming the Role, generation 3", ready, got.ObservedGeneration)
	}

	in.FederatedErr = apierrors.NewServiceUnavailable("down")
	got = computeAppStatus(prev, in)
	if got.ObservedGeneration != 2 || got.FederatedCredential != nil {
		t.Errorf("unavailable: observedGeneration %d, federatedCredential %+v; want 2 and none", got.ObservedGeneration, got.FederatedCredential)
	}
}
