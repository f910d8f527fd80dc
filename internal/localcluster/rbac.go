package localcluster

import (
	"fmt"
	"slices"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// ServiceAccountTokenRules names the rules of the Roles and ClusterRoles among
// objects that let their subjects create ServiceAccount tokens, by name or through
// a wildcard, as "Role ns/name: rule".
func ServiceAccountTokenRules(objects []*unstructured.Unstructured) ([]string, error) {
	var found []string
	for _, u := range objects {
		if u.GetKind() != "Role" && u.GetKind() != "ClusterRole" {
			continue
		}
		var role rbacv1.ClusterRole // a Role's rules have the same shape
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &role); err != nil {
			return nil, fmt.Errorf("%s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
		}
		for _, rule := range role.Rules {
			if grantsAny(rule.APIGroups, "") && grantsAny(rule.Resources, "serviceaccounts/token", "serviceaccounts/*", "*/token") && grantsAny(rule.Verbs, "create") {
				found = append(found, fmt.Sprintf("%s %s/%s: apiGroups %q, resources %q, verbs %q", u.GetKind(), u.GetNamespace(), u.GetName(), rule.APIGroups, rule.Resources, rule.Verbs))
			}
		}
	}
	return found, nil
}

func grantsAny(listed []string, wanted ...string) bool {
	return slices.Contains(listed, "*") || slices.ContainsFunc(wanted, func(w string) bool { return slices.Contains(listed, w) })
}
