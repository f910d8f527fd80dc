// Package defenderapp holds the controller of DefenderApps and ClusterDefenderApps:
// the status of an app's credential, which its tenants are told of too.
package defenderapp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/manager"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/metrics"
	"github.com/tenantcreds/defender-tenant-operator/internal/credential"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

// Reconciler keeps the status of one kind of app, DefenderApps or
// ClusterDefenderApps: whether its credential can be used, the thumbprints and
// expiry of its certificate, and the federated credential its workload identity
// needs. The manager runs one per kind (the ClusterDefenderApp one only where the
// operator may watch ClusterDefenderApps). It requests no Entra ID token and
// writes nothing but the app's status and Events.
type Reconciler struct {
	client.Client
	// Credentials reads the apps' credentials, shared with the DefenderTenant
	// controller.
	Credentials *credential.Reader
	Clock       clock.PassiveClock
	Recorder    events.EventRecorder
	// Kind is the kind served: v1alpha1.AppKindDefenderApp or
	// v1alpha1.AppKindClusterDefenderApp.
	Kind v1alpha1.AppKind
	// ClusterResourceNamespace is where ClusterDefenderApp credentials live
	// (--cluster-resource-namespace); empty means credential.DefaultClusterResourceNamespace.
	ClusterResourceNamespace string

	// Managed certificate rotation (spec.credential.certificate.rotation) only:
	// APIReader reads the certificate Secret whole, uncached; Entra requests the
	// home-tenant tokens that check a certificate and authorise Graph calls, at
	// Authorities; Graph rolls the keys at GraphHosts.
	APIReader   client.Reader
	Entra       entra.Requester
	Authorities entra.Authorities
	Graph       entra.KeyRoller
	GraphHosts  entra.GraphHosts
	rotations   rotationMemory
}

// +kubebuilder:rbac:groups=defender.tenantcreds.io,resources=defenderapps;clusterdefenderapps,verbs=get;list;watch
// +kubebuilder:rbac:groups=defender.tenantcreds.io,resources=defenderapps/status;clusterdefenderapps/status,verbs=patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile observes the app's credential, computes the status from it and writes
// it once, in a defer, only when it changed. It requeues itself for the moments a
// certificate enters its expiry window and expires, which no watch announces.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, err error) {
	app := r.newApp()
	if err := r.Get(ctx, req.NamespacedName, app); err != nil {
		if apierrors.IsNotFound(err) {
			metrics.ForgetAppCertificateExpiry(r.Kind, req.NamespacedName)
			metrics.ForgetAppCertificateRotations(r.Kind, req.NamespacedName)
			r.rotations.forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	// Managed rotation decides its next step from the persisted phase: a cache
	// that has not yet seen the last step's status write would have addKey run
	// twice. Rotating apps are few, so they are read from the API server.
	if rotationParamsOf(*app.AppSpec()) != nil && r.APIReader != nil {
		fresh := r.newApp()
		if err := r.APIReader.Get(ctx, req.NamespacedName, fresh); err != nil {
			if apierrors.IsNotFound(err) {
				r.rotations.forget(req.NamespacedName)
			}
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
		app = fresh
	}
	if !app.GetDeletionTimestamp().IsZero() {
		metrics.ForgetAppCertificateExpiry(r.Kind, req.NamespacedName)
		metrics.ForgetAppCertificateRotations(r.Kind, req.NamespacedName)
		r.rotations.forget(req.NamespacedName)
		return ctrl.Result{}, nil
	}

	// A failed read leaves nothing new to report: the status stays as it is and
	// controller-runtime retries.
	in, err := r.observe(ctx, app)
	if err != nil {
		return ctrl.Result{}, err
	}
	prev := *app.AppStatus()
	defer func() {
		status := computeAppStatus(prev, in)
		metrics.RecordAppCertificateExpiry(r.Kind, req.NamespacedName, status)
		if werr := r.writeStatus(ctx, app, status); werr != nil {
			res, err = ctrl.Result{}, errors.Join(err, werr)
		}
	}()

	var rotationRequeue time.Duration
	if in.Rotation, err = r.rotate(ctx, app, &in, prev); err != nil {
		return ctrl.Result{}, fmt.Errorf("managed certificate rotation: %w", err)
	}
	if in.Rotation == nil {
		metrics.ForgetAppCertificateRotations(r.Kind, req.NamespacedName)
	} else {
		metrics.StartAppCertificateRotations(r.Kind, req.NamespacedName)
		rotationRequeue = in.Rotation.RequeueAfter
		if in.Rotation.Rotated {
			metrics.RecordAppCertificateRotation(r.Kind, req.NamespacedName, true)
		}
		if in.Rotation.FailedNow {
			metrics.RecordAppCertificateRotation(r.Kind, req.NamespacedName, false)
		}
	}

	if federatedCredentialDue(prev, in) {
		in.Federated, in.FederatedErr = r.readFederatedCredential(ctx, in.Credential.Source.(credential.WorkloadIdentity))
		if in.FederatedErr != nil {
			return ctrl.Result{}, fmt.Errorf("requesting a token of ServiceAccount %s for status.federatedCredential: %w", in.Credential.Source.Object(), in.FederatedErr)
		}
	} else if in.Kind == v1alpha1.CredentialWorkloadIdentity {
		in.Federated = prev.FederatedCredential
	}
	ctrl.LoggerFrom(ctx).V(2).Info("Checked the app's credential", "credential", in.Kind)
	return ctrl.Result{RequeueAfter: earliest(appRequeueAfter(in.Now, in), rotationRequeue)}, nil
}

// earliest is the sooner of two requeue delays, zero meaning none.
func earliest(a, b time.Duration) time.Duration {
	switch {
	case a <= 0:
		return max(b, 0)
	case b <= 0:
		return a
	}
	return min(a, b)
}

func (r *Reconciler) newApp() v1alpha1.App { return newApp(r.Kind) }

func (r *Reconciler) clusterResourceNamespace() string {
	if r.ClusterResourceNamespace != "" {
		return r.ClusterResourceNamespace
	}
	return credential.DefaultClusterResourceNamespace
}

// credentialNamespace is where the app's Secret or ServiceAccount must be: a
// DefenderApp's own namespace, the cluster resource namespace for a
// ClusterDefenderApp.
func (r *Reconciler) credentialNamespace(app v1alpha1.App) string {
	if r.Kind == v1alpha1.AppKindClusterDefenderApp {
		return r.clusterResourceNamespace()
	}
	return app.GetNamespace()
}

// observe reads the app's credential: its Secret (through the Reader the
// DefenderTenant controller shares, which reads a Secret again only when its
// resourceVersion changed) or its ServiceAccount, and whether the operator may
// request its tokens.
func (r *Reconciler) observe(ctx context.Context, app v1alpha1.App) (appStatusInput, error) {
	spec := app.AppSpec().Credential
	in := appStatusInput{Generation: app.GetGeneration(), Now: r.Clock.Now(), Kind: spec.Kind()}
	source := credential.ForApp(spec, r.credentialNamespace(app))
	if source == nil {
		return in, nil
	}
	var err error
	in.Credential, err = r.Credentials.Read(ctx, source)
	return in, err
}

// federatedCredentialDue: a usable workload identity whose issuer, subject and
// audience the status lacks, or shows for another generation of the app or
// another ServiceAccount object. Only then is a ServiceAccount token requested.
func federatedCredentialDue(prev v1alpha1.AppStatus, in appStatusInput) bool {
	if in.Kind != v1alpha1.CredentialWorkloadIdentity || in.Credential.State != credential.Usable {
		return false
	}
	f := prev.FederatedCredential
	return f == nil || f.ObservedGeneration != in.Generation || string(f.ServiceAccountUID) != in.Credential.Version
}

// readFederatedCredential reads the issuer, subject and audience of a workload
// identity from a token the TokenRequest API issues, as Entra ID will see them.
// The token is dropped as soon as its claims are read.
func (r *Reconciler) readFederatedCredential(ctx context.Context, source credential.WorkloadIdentity) (*v1alpha1.FederatedCredentialStatus, error) {
	token, err := r.Credentials.ServiceAccountToken(ctx, source)
	if err != nil {
		return nil, err
	}
	return federatedCredentialOf(token, source.Audience)
}

// serviceAccountTokenAlgorithms are the algorithms kube-apiserver may sign
// ServiceAccount tokens with. The signature is not checked: only the claims are
// read, from a token the API server just handed over.
var serviceAccountTokenAlgorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512, jose.PS256, jose.PS384, jose.PS512, jose.EdDSA,
}

// federatedCredentialOf reads the issuer, subject and audience of a ServiceAccount
// token. Its errors never quote the token.
func federatedCredentialOf(token, audience string) (*v1alpha1.FederatedCredentialStatus, error) {
	jws, err := jose.ParseSignedCompact(token, serviceAccountTokenAlgorithms)
	if err != nil {
		return nil, errors.New("the TokenRequest API returned a token that is not a signed JWT")
	}
	var claims struct {
		Issuer   string       `json:"iss"`
		Subject  string       `json:"sub"`
		Audience jwt.Audience `json:"aud"`
	}
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &claims); err != nil || claims.Issuer == "" || claims.Subject == "" {
		return nil, errors.New("the token from the TokenRequest API lacks the iss or sub claim")
	}
	aud := audience
	if !claims.Audience.Contains(audience) && len(claims.Audience) > 0 {
		aud = claims.Audience[0]
	}
	return &v1alpha1.FederatedCredentialStatus{Issuer: claims.Issuer, Subject: claims.Subject, Audience: aud}, nil
}

// writeStatus patches the status only when it changed, and records the Events of
// the transition.
func (r *Reconciler) writeStatus(ctx context.Context, app v1alpha1.App, status v1alpha1.AppStatus) error {
	if equality.Semantic.DeepEqual(*app.AppStatus(), status) {
		return nil
	}
	before := app.DeepCopyObject().(v1alpha1.App)
	*app.AppStatus() = status
	if err := r.Status().Patch(ctx, app, client.MergeFrom(before)); err != nil {
		return err
	}
	if r.Recorder != nil {
		for _, ev := range appTransitionEvents(*before.AppStatus(), status) {
			r.Recorder.Eventf(app, nil, ev.Type, ev.Reason, ev.Action, "%s", ev.Note)
		}
	}
	return nil
}

// SetupWithManager registers the controller of r.Kind. It uses
// manager.AppCredentialIndex, which manager.RegisterIndexes registers. Every event of the app itself is reconciled (status writes
// included, which find nothing to change): apps are few, and a status someone else
// edited is put right. Credential Secrets are watched as metadata only, and
// ServiceAccounts in the cluster resource namespace only.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	b := ctrl.NewControllerManagedBy(mgr).
		For(r.newApp()).
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.appsOfCredential("Secret")))
	if r.Kind == v1alpha1.AppKindClusterDefenderApp {
		inClusterResourceNamespace := predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetNamespace() == r.clusterResourceNamespace() })
		b = b.Watches(&corev1.ServiceAccount{}, handler.EnqueueRequestsFromMapFunc(r.appsOfCredential("ServiceAccount")),
			builder.WithPredicates(inClusterResourceNamespace))
	}
	return b.Complete(r)
}

// appsOfCredential maps a Secret or ServiceAccount to the apps of r.Kind whose
// credential it is, through appCredentialIndex.
func (r *Reconciler) appsOfCredential(kind string) handler.MapFunc {
	return func(ctx context.Context, obj client.Object) []reconcile.Request {
		field := client.MatchingFields{manager.AppCredentialIndex: kind + "/" + obj.GetName()}
		var keys []types.NamespacedName
		switch r.Kind {
		case v1alpha1.AppKindClusterDefenderApp:
			if obj.GetNamespace() != r.clusterResourceNamespace() {
				return nil
			}
			var apps v1alpha1.ClusterDefenderAppList
			if err := r.List(ctx, &apps, field); err != nil {
				ctrl.LoggerFrom(ctx).Error(err, "Failed to list the ClusterDefenderApps of a credential", "kind", kind, "name", obj.GetName())
				return nil
			}
			for i := range apps.Items {
				keys = append(keys, client.ObjectKeyFromObject(&apps.Items[i]))
			}
		default:
			var apps v1alpha1.DefenderAppList
			if err := r.List(ctx, &apps, client.InNamespace(obj.GetNamespace()), field); err != nil {
				ctrl.LoggerFrom(ctx).Error(err, "Failed to list the DefenderApps of a credential", "kind", kind, "namespace", obj.GetNamespace(), "name", obj.GetName())
				return nil
			}
			for i := range apps.Items {
				keys = append(keys, client.ObjectKeyFromObject(&apps.Items[i]))
			}
		}
		requests := make([]reconcile.Request, 0, len(keys))
		for _, k := range keys {
			requests = append(requests, reconcile.Request{NamespacedName: k})
		}
		return requests
	}
}
