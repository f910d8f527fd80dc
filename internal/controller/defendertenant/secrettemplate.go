package defendertenant

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/secrettemplate"
)

// DefaultSecretTemplateAnnotationPrefixes is the default of
// --secret-template-annotation-prefixes: Stakater Reloader's annotations, which
// restart the workloads that mount the token Secret.
var DefaultSecretTemplateAnnotationPrefixes = []string{"reloader.stakater.com/"}

// checkSecretTemplate parses spec.secretTemplate.data, and refuses an annotation
// key without an allowed prefix: an annotation can ask a replicating controller to
// copy the token Secret into namespaces its tenant cannot read. The verdict depends
// on the spec and the operator's flags alone, never on a token, so neither can its
// message.
func checkSecretTemplate(tmpl *v1alpha1.SecretTemplate, annotationPrefixes []string) (*secrettemplate.Template, error) {
	if tmpl == nil {
		return nil, nil
	}
	for _, key := range slices.Sorted(maps.Keys(tmpl.Annotations)) {
		if !slices.ContainsFunc(annotationPrefixes, func(prefix string) bool { return strings.HasPrefix(key, prefix) }) {
			return nil, fmt.Errorf("annotation %q does not start with a prefix the operator allows (%s); use one that does, or ask the operator's administrator to add its prefix to --secret-template-annotation-prefixes",
				key, describePrefixes(annotationPrefixes))
		}
	}
	if len(tmpl.Data) == 0 {
		return nil, nil
	}
	return secrettemplate.Parse(tmpl.Data)
}

func describePrefixes(prefixes []string) string {
	if len(prefixes) == 0 {
		return "none: the list is empty"
	}
	return strings.Join(prefixes, ", ")
}
