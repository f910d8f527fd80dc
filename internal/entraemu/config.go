package entraemu

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"sigs.k8s.io/yaml"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

// Config describes an emulated world: app registrations, customer tenants and the
// consents between them. The entra-emulator command reads it from YAML or JSON.
type Config struct {
	// Resources are resource URIs to know besides the Defender APIs.
	Resources []string `json:"resources,omitempty"`
	// Apps are the multi-tenant app registrations.
	Apps []AppConfig `json:"apps,omitempty"`
	// Tenants are the customer tenants.
	Tenants []TenantConfig `json:"tenants,omitempty"`
	// Issuers are the federated token issuers whose keys Entra can fetch.
	Issuers []IssuerConfig `json:"issuers,omitempty"`
}

// AppConfig is an app registration and its credentials.
type AppConfig struct {
	ClientID string   `json:"clientID"`
	Secrets  []Secret `json:"secrets,omitempty"`
	// ObjectID and HomeTenantID, both or neither, make the app an object of
	// Microsoft Graph (Emulator.RegisterApplication), whose keys addKey and
	// removeKey roll.
	ObjectID     string `json:"objectID,omitempty"`
	HomeTenantID string `json:"homeTenantID,omitempty"`
	// Certificates are certificate credentials in PEM, one or more CERTIFICATE
	// blocks each, as Emulator.AddCertificate adds them.
	Certificates []string `json:"certificates,omitempty"`
	// FederatedCredentials are federated identity credentials, as
	// Emulator.AddFederatedCredential adds them.
	FederatedCredentials []FederatedCredential `json:"federatedCredentials,omitempty"`
	// Permissions are the application permissions the registration requests, per
	// resource, as Emulator.SetAppPermissions sets them: what an admin who opens
	// the consent link grants.
	Permissions []PermissionConfig `json:"permissions,omitempty"`
}

// PermissionConfig is the application roles an app registration requests on a
// resource.
type PermissionConfig struct {
	Resource string   `json:"resource"`
	Roles    []string `json:"roles,omitempty"`
}

// IssuerConfig is a federated token issuer and its verification keys, as
// Emulator.SetIssuerKeys sets them.
type IssuerConfig struct {
	// Issuer is the iss of the issuer's tokens, exactly.
	Issuer string `json:"issuer"`
	// JWKS is the issuer's JSON Web Key Set, such as a kube-apiserver's
	// /openid/v1/jwks: {"keys": [...]}.
	JWKS jose.JSONWebKeySet `json:"jwks"`
}

// TenantConfig is a customer tenant and the apps consented in it.
type TenantConfig struct {
	TenantID string `json:"tenantID"`
	// Lifetime of the tenant's tokens, e.g. "1h"; empty means the default.
	Lifetime Duration `json:"lifetime,omitzero"`
	// Version of the tenant's tokens, TokenV1 or TokenV2; empty means TokenV1.
	Version string `json:"version,omitempty"`
	// Cloud the tenant lives in, as Emulator.SetCloud sets it: Public (the
	// default), USGov, USGovHigh or DoD.
	Cloud v1alpha1.Cloud `json:"cloud,omitempty"`
	// Domains are domains verified in the tenant, as Emulator.AddDomain verifies
	// them: OpenID discovery answers for them. A domain is verified in one tenant
	// only.
	Domains []string `json:"domains,omitempty"`
	// WithoutResources are resources that have no service principal in the tenant,
	// as Emulator.RemoveResource makes them: a tenant without a Defender licence
	// lists the Defender APIs. A grant on one of them is an error.
	WithoutResources []string `json:"withoutResources,omitempty"`
	// Grants are the admin consents of apps in the tenant.
	Grants []GrantConfig `json:"grants,omitempty"`
}

// GrantConfig is an admin consent, as made by Emulator.Grant.
type GrantConfig struct {
	ClientID string   `json:"clientID"`
	Resource string   `json:"resource"`
	Roles    []string `json:"roles,omitempty"`
}

// Duration is a time.Duration written as a Go duration string, such as "90m".
type Duration struct {
	time.Duration
}

// UnmarshalJSON parses a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration must be a string such as \"1h\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// ParseConfig parses and validates a Config in YAML or JSON. Unknown fields are
// errors, so that a misspelt field does not silently change the world.
func ParseConfig(data []byte) (Config, error) {
	var cfg Config
	if err := yaml.UnmarshalStrict(data, &cfg); err != nil {
		return Config{}, fmt.Errorf("parsing the emulator config: %w", err)
	}
	if err := cfg.validate(); err != nil {
		return Config{}, fmt.Errorf("invalid emulator config: %w", err)
	}
	return cfg, nil
}

func validateApps(apps []AppConfig) []error {
	var errs []error
	for i, a := range apps {
		if a.ClientID == "" {
			errs = append(errs, fmt.Errorf("apps[%d]: clientID is required", i))
		}
		if (a.ObjectID == "") != (a.HomeTenantID == "") || a.ObjectID != "" && (!isGUID(a.ObjectID) || !isGUID(a.HomeTenantID)) {
			errs = append(errs, fmt.Errorf("apps[%d]: objectID and homeTenantID go together, as GUIDs", i))
		}
		for j, p := range a.Certificates {
			if _, err := parseCertificates(p); err != nil {
				errs = append(errs, fmt.Errorf("apps[%d].certificates[%d]: %w", i, j, err))
			}
		}
		for j, fc := range a.FederatedCredentials {
			if fc.Issuer == "" || fc.Subject == "" {
				errs = append(errs, fmt.Errorf("apps[%d].federatedCredentials[%d]: issuer and subject are required", i, j))
			}
		}
	}
	return errs
}

func (c Config) validate() error {
	errs := validateApps(c.Apps)
	for i, is := range c.Issuers {
		if is.Issuer == "" {
			errs = append(errs, fmt.Errorf("issuers[%d]: issuer is required", i))
		}
		if len(is.JWKS.Keys) == 0 {
			errs = append(errs, fmt.Errorf("issuers[%d]: jwks must hold at least one key", i))
		}
	}
	domainOwners := map[string]int{}
	for i, t := range c.Tenants {
		for j, d := range t.Domains {
			name := strings.ToLower(d)
			if !isDomainName(name) {
				errs = append(errs, fmt.Errorf("tenants[%d].domains[%d]: %q is not a domain name", i, j, d))
				continue
			}
			if owner, ok := domainOwners[name]; ok && owner != i {
				errs = append(errs, fmt.Errorf("tenants[%d].domains[%d]: %q is already verified in tenants[%d]", i, j, d, owner))
			}
			domainOwners[name] = i
		}
		if !isGUID(t.TenantID) {
			errs = append(errs, fmt.Errorf("tenants[%d]: tenantID %q is not a GUID", i, t.TenantID))
		}
		if t.Lifetime.Duration < 0 {
			errs = append(errs, fmt.Errorf("tenants[%d]: lifetime must not be negative", i))
		}
		if t.Version != "" && t.Version != TokenV1 && t.Version != TokenV2 {
			errs = append(errs, fmt.Errorf("tenants[%d]: version must be %q or %q, not %q", i, TokenV1, TokenV2, t.Version))
		}
		if t.Cloud != "" && entra.AuthorityHost(t.Cloud) == "" {
			errs = append(errs, fmt.Errorf("tenants[%d]: cloud must be one of %s, %s, %s or %s, not %q", i,
				v1alpha1.CloudPublic, v1alpha1.CloudUSGov, v1alpha1.CloudUSGovHigh, v1alpha1.CloudDoD, t.Cloud))
		}
		without := map[string]bool{}
		for j, r := range t.WithoutResources {
			if r == "" {
				errs = append(errs, fmt.Errorf("tenants[%d].withoutResources[%d]: must not be empty", i, j))
			}
			without[resourceKey(r)] = true
		}
		for j, g := range t.Grants {
			if g.ClientID == "" || g.Resource == "" {
				errs = append(errs, fmt.Errorf("tenants[%d].grants[%d]: clientID and resource are required", i, j))
			}
			// Consent on a resource the tenant does not have cannot happen; saying
			// both is a mistake in the config, not a world to emulate.
			if without[resourceKey(g.Resource)] {
				errs = append(errs, fmt.Errorf("tenants[%d].grants[%d]: resource %q is in withoutResources", i, j, g.Resource))
			}
		}
	}
	return errors.Join(errs...)
}

// Load adds the world of cfg to the emulator. cfg must be valid, as ParseConfig
// returns it.
func (e *Emulator) Load(cfg Config) {
	for _, r := range cfg.Resources {
		e.AddResource(r)
	}
	for _, a := range cfg.Apps {
		e.AddApp(a.ClientID, a.Secrets...)
		if a.ObjectID != "" {
			e.RegisterApplication(Application{ObjectID: a.ObjectID, ClientID: a.ClientID, HomeTenantID: a.HomeTenantID})
		}
		for _, p := range a.Certificates {
			certs, _ := parseCertificates(p) // validated
			for _, c := range certs {
				e.AddCertificate(a.ClientID, c)
			}
		}
		for _, fc := range a.FederatedCredentials {
			e.AddFederatedCredential(a.ClientID, fc)
		}
		for _, p := range a.Permissions {
			e.SetAppPermissions(a.ClientID, p.Resource, p.Roles...)
		}
	}
	for _, is := range cfg.Issuers {
		e.SetIssuerKeys(is.Issuer, is.JWKS)
	}
	for _, t := range cfg.Tenants {
		e.AddTenant(t.TenantID)
		e.SetLifetime(t.TenantID, t.Lifetime.Duration)
		if t.Version != "" {
			e.SetTokenVersion(t.TenantID, t.Version)
		}
		if t.Cloud != "" {
			e.SetCloud(t.TenantID, t.Cloud)
		}
		for _, d := range t.Domains {
			e.AddDomain(t.TenantID, d)
		}
		for _, r := range t.WithoutResources {
			e.RemoveResource(t.TenantID, r)
		}
		for _, g := range t.Grants {
			e.Grant(t.TenantID, g.ClientID, g.Resource, g.Roles...)
		}
	}
}

// parseCertificates parses the CERTIFICATE blocks of PEM text, of which there must
// be at least one, and nothing else.
func parseCertificates(text string) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := []byte(text)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %q is not a CERTIFICATE", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing the certificate: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return certs, nil
}
