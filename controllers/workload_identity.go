package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// A ServiceAccount token the kube-apiserver accepts is as good as the
// ServiceAccount's permissions, and a workload identity sends one to a token
// endpoint outside the cluster (or a proxy in front of it). Whoever may edit
// ClusterDefenderApps chooses the ServiceAccount and the audience, so the operator
// requests a token only when the audience is one its administrator allows (Entra
// ID's, not the API server's), the ServiceAccount is not its own, and the
// ServiceAccount's owner marked it for this use with LabelWorkloadIdentity.

// DefaultWorkloadIdentityAudiences is what --workload-identity-audiences allows
// when not set: the audience Entra ID's federated credentials use.
var DefaultWorkloadIdentityAudiences = []string{v1alpha1.DefaultWorkloadIdentityAudience}

// workloadIdentityFacts is what decides whether the operator may request tokens
// of a workload identity's ServiceAccount: the spec, the ServiceAccount as read,
// and the operator's configuration.
type workloadIdentityFacts struct {
	serviceAccount types.NamespacedName
	audience       string
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
func checkWorkloadIdentity(f workloadIdentityFacts) credential {
	cred := credential{serviceAccount: f.serviceAccount, audience: f.audience}
	if f.exists {
		cred.version = string(f.uid)
	}
	sa := f.serviceAccount
	switch {
	case !slices.Contains(f.allowedAudiences, f.audience):
		cred.state, cred.problem = credentialServiceAccountNotAllowed, fmt.Sprintf(
			"Audience %q is not one the operator requests ServiceAccount tokens for (--workload-identity-audiences: %s). Use an allowed audience in credential.workloadIdentity.audience (Entra ID's federated credentials use %s), or ask the operator's administrator to allow this one.",
			f.audience, strings.Join(f.allowedAudiences, ", "), v1alpha1.DefaultWorkloadIdentityAudience)
	case sa == f.operator:
		cred.state, cred.problem = credentialServiceAccountNotAllowed, fmt.Sprintf(
			"ServiceAccount %q in namespace %q is the operator's own: its tokens carry the operator's permissions and never leave the cluster. Use another ServiceAccount, made for this app, in credential.workloadIdentity.serviceAccountName.",
			sa.Name, sa.Namespace)
	case !f.exists:
		cred.state = credentialServiceAccountMissing
	case !f.labelled:
		cred.state, cred.problem = credentialServiceAccountNotAllowed, fmt.Sprintf(
			"ServiceAccount %q in namespace %q lacks the label %s: \"true\", which marks a ServiceAccount whose tokens may be sent to Entra ID. Add it (kubectl -n %s label serviceaccount %s %s=true), or use a ServiceAccount that carries it.",
			sa.Name, sa.Namespace, v1alpha1.LabelWorkloadIdentity, sa.Namespace, sa.Name, v1alpha1.LabelWorkloadIdentity)
	default:
		cred.state = credentialUsable
	}
	return cred
}

// readWorkloadIdentity reads the workload identity's ServiceAccount and tells
// whether its tokens may be requested for audience. It requests no token.
func readWorkloadIdentity(ctx context.Context, reader client.Reader, key types.NamespacedName, audience string, allowedAudiences []string, operator types.NamespacedName) (credential, error) {
	facts := workloadIdentityFacts{
		serviceAccount:   key,
		audience:         audience,
		allowedAudiences: workloadIdentityAudiencesOrDefault(allowedAudiences),
		operator:         operator,
	}
	sa := &corev1.ServiceAccount{}
	switch err := reader.Get(ctx, key, sa); {
	case err == nil:
		facts.exists, facts.uid, facts.labelled = true, sa.UID, sa.Labels[v1alpha1.LabelWorkloadIdentity] == v1alpha1.WorkloadIdentityValue
	case !apierrors.IsNotFound(err):
		return credential{}, err
	}
	return checkWorkloadIdentity(facts), nil
}

func workloadIdentityAudiencesOrDefault(audiences []string) []string {
	if len(audiences) == 0 {
		return DefaultWorkloadIdentityAudiences
	}
	return audiences
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
