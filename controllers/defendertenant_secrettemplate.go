package controllers

import (
	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/secrettemplate"
)

// checkSecretTemplate parses spec.secretTemplate.data. The verdict depends on the
// spec alone, never on a token, so neither can its message.
func checkSecretTemplate(tmpl *v1alpha1.SecretTemplate) (*secrettemplate.Template, error) {
	if tmpl == nil || len(tmpl.Data) == 0 {
		return nil, nil
	}
	return secrettemplate.Parse(tmpl.Data)
}
