package credential

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

// A ServiceAccount token the kube-apiserver accepts is as good as the
// ServiceAccount's permissions, and a workload identity sends one to a token
// endpoint outside the cluster (or a proxy in front of it). Whoever may edit
// ClusterDefenderApps chooses the ServiceAccount and the audience, so the operator
// requests a token only when the audience is one its administrator allows (Entra
// ID's, not the API server's), the ServiceAccount is not its own, and the
// ServiceAccount's owner marked it for this use with LabelWorkloadIdentity.

// WorkloadIdentity is a ServiceAccount whose tokens, issued for Audience, are the
// app's federated credential.
type WorkloadIdentity struct {
	ServiceAccount types.NamespacedName
	Audience       string
}

// Kind is the spec.credential field this Source stands for.
func (s WorkloadIdentity) Kind() v1alpha1.CredentialKind { return v1alpha1.CredentialWorkloadIdentity }

// Object is what the credential is read from.
func (s WorkloadIdentity) Object() types.NamespacedName { return s.ServiceAccount }

// IndexKey is what the apps' credential index holds for this Source.
func (s WorkloadIdentity) IndexKey() string { return "ServiceAccount/" + s.ServiceAccount.Name }

// DefaultWorkloadIdentityAudiences is what --workload-identity-audiences allows
// when not set: the audience Entra ID's federated credentials use.
var DefaultWorkloadIdentityAudiences = []string{v1alpha1.DefaultWorkloadIdentityAudience}

// ServiceAccountTokenLifetime is how long a workload identity assertion is valid:
// ten minutes, what MSAL uses for its own assertions, and the shortest lifetime the
// TokenRequest API grants without an apiserver flag.
const ServiceAccountTokenLifetime = 10 * time.Minute

// read reads the ServiceAccount (from the watch cache) and tells whether its
// tokens may be requested. It requests none: that happens only when a token
// request is due (entra).
func (s WorkloadIdentity) read(ctx context.Context, r *Reader) (Credential, error) {
	facts := workloadIdentityFacts{
		source:           s,
		allowedAudiences: r.workloadIdentityAudiences(),
		operator:         r.OperatorServiceAccount,
	}
	sa := &corev1.ServiceAccount{}
	switch err := r.Client.Get(ctx, s.ServiceAccount, sa); {
	case err == nil:
		facts.exists, facts.uid, facts.labelled = true, sa.UID, sa.Labels[v1alpha1.LabelWorkloadIdentity] == v1alpha1.WorkloadIdentityValue
	case !apierrors.IsNotFound(err):
		return Credential{}, fmt.Errorf("reading ServiceAccount %s: %w", s.ServiceAccount, err)
	}
	return checkWorkloadIdentity(facts), nil
}

// entra gets a fresh ServiceAccount token for each request, from the TokenRequest
// API, so no long-lived token of it exists anywhere.
func (s WorkloadIdentity) entraCredential(ctx context.Context, r *Reader, _ Credential) (entra.Credential, error) {
	token, err := r.ServiceAccountToken(ctx, s)
	if err != nil {
		return nil, err
	}
	return entra.ClientAssertion(token), nil
}

func (s WorkloadIdentity) material(c Credential) string {
	return "serviceaccount:" + c.Version + ":" + s.Audience
}

func (s WorkloadIdentity) problem(c Credential, app string, _ time.Time) *Problem {
	switch {
	case c.State == ServiceAccountNotAllowed:
		return &Problem{v1alpha1.ReasonServiceAccountNotAllowed, fmt.Sprintf("%s may not use its workload identity: %s", app, c.Detail)}
	case c.State == ServiceAccountMissing && c.Detail != "":
		return &Problem{v1alpha1.ReasonServiceAccountNotFound, c.Detail}
	case c.State == ServiceAccountMissing:
		return &Problem{v1alpha1.ReasonServiceAccountNotFound, fmt.Sprintf(
			"ServiceAccount %q of %s was not found in namespace %q. Create it there; its tokens are the app's federated credential.",
			s.ServiceAccount.Name, app, s.ServiceAccount.Namespace)}
	}
	return nil
}

// ServiceAccountToken requests a token of the workload identity's ServiceAccount
// from the TokenRequest API. The caller drops it once sent or read.
func (r *Reader) ServiceAccountToken(ctx context.Context, s WorkloadIdentity) (string, error) {
	request := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences:         []string{s.Audience},
		ExpirationSeconds: ptr.To(int64(ServiceAccountTokenLifetime / time.Second)),
	}}
	account := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: s.ServiceAccount.Namespace, Name: s.ServiceAccount.Name}}
	if err := r.Client.SubResource("token").Create(ctx, account, request); err != nil {
		return "", err
	}
	return request.Status.Token, nil
}

// TokenRequestForbidden says what a Forbidden TokenRequest means and how to fix it,
// quoting the API server's error, which names the user and never holds a token.
func TokenRequestForbidden(sa types.NamespacedName, err error) string {
	return fmt.Sprintf("The operator may not create tokens of ServiceAccount %q in namespace %q: %v. Bind the Role of config/rbac/cluster_resources_role.yaml to the operator's ServiceAccount in that namespace, or check --cluster-resource-namespace.", sa.Name, sa.Namespace, err)
}

// workloadIdentityFacts is what decides whether the operator may request tokens
// of a workload identity's ServiceAccount: the spec, the ServiceAccount as read,
// and the operator's configuration.
type workloadIdentityFacts struct {
	source WorkloadIdentity
	// exists: the ServiceAccount was found; uid and labelled describe it then.
	exists   bool
	uid      types.UID
	labelled bool
	// allowedAudiences is --workload-identity-audiences; operator is the
	// operator's own ServiceAccount, empty when it runs as another kind of user.
	allowedAudiences []string
	operator         types.NamespacedName
}

// checkWorkloadIdentity is the credential the facts make: usable only when
// a token may be requested. The spec's choices are reported before the
// ServiceAccount's state, because creating or labelling a ServiceAccount the
// operator will never use fixes nothing. Messages say what to change.
func checkWorkloadIdentity(f workloadIdentityFacts) Credential {
	cred := Credential{Source: f.source}
	if f.exists {
		cred.Version = string(f.uid)
	}
	sa, audience := f.source.ServiceAccount, f.source.Audience
	switch {
	case !slices.Contains(f.allowedAudiences, audience):
		cred.State, cred.Detail = ServiceAccountNotAllowed, fmt.Sprintf(
			"Audience %q is not one the operator requests ServiceAccount tokens for (--workload-identity-audiences: %s). Use an allowed audience in credential.workloadIdentity.audience (Entra ID's federated credentials use %s), or ask the operator's administrator to allow this one.",
			audience, strings.Join(f.allowedAudiences, ", "), v1alpha1.DefaultWorkloadIdentityAudience)
	case sa == f.operator:
		cred.State, cred.Detail = ServiceAccountNotAllowed, fmt.Sprintf(
			"ServiceAccount %q in namespace %q is the operator's own: its tokens carry the operator's permissions and never leave the cluster. Use another ServiceAccount, made for this app, in credential.workloadIdentity.serviceAccountName.",
			sa.Name, sa.Namespace)
	case !f.exists:
		cred.State = ServiceAccountMissing
	case !f.labelled:
		cred.State, cred.Detail = ServiceAccountNotAllowed, fmt.Sprintf(
			"ServiceAccount %q in namespace %q lacks the label %s: \"true\", which marks a ServiceAccount whose tokens may be sent to Entra ID. Add it (kubectl -n %s label serviceaccount %s %s=true), or use a ServiceAccount that carries it.",
			sa.Name, sa.Namespace, v1alpha1.LabelWorkloadIdentity, sa.Namespace, sa.Name, v1alpha1.LabelWorkloadIdentity)
	default:
		cred.State = Usable
	}
	return cred
}

// OperatorServiceAccount asks the API server who the operator is, with a
// SelfSubjectReview (which every authenticated user may make), and returns its
// ServiceAccount, or an empty name when it runs as another kind of user (a
// kubeconfig's). The API server's answer is the identity the operator's requests
// really carry, whatever the flags and environment say.
func OperatorServiceAccount(ctx context.Context, cfg *rest.Config) (types.NamespacedName, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return types.NamespacedName{}, err
	}
	review, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return types.NamespacedName{}, err
	}
	return serviceAccountOfUser(review.Status.UserInfo.Username), nil
}

// serviceAccountOfUser reads system:serviceaccount:NAMESPACE:NAME, the user name
// the API server gives a ServiceAccount; any other user has none.
func serviceAccountOfUser(username string) types.NamespacedName {
	namespace, name, err := serviceaccount.SplitUsername(username)
	if err != nil {
		return types.NamespacedName{}
	}
	return types.NamespacedName{Namespace: namespace, Name: name}
}
