package entraemu_test

import (
	"encoding/json"
	"encoding/pem"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
)

func TestLoadConfigFromYAML(t *testing.T) {
	const (
		v2Tenant     = "3f2b8c1d-5a4e-4b7f-8c2d-1e9a6b5c4d30"
		customAPI    = "https://api.contoso.example"
		expiredApp   = "7d4c2b1a-0f9e-4d8c-a7b6-5e4d3c2b1a09"
		expiredValue = "old-secret"
	)
	cfg, err := entraemu.ParseConfig([]byte(`
resources: [` + customAPI + `]
apps:
  - clientID: ` + clientID + `
    secrets:
      - value: ` + secret + `
  - clientID: ` + expiredApp + `
    secrets:
      - value: ` + expiredValue + `
        expiresAt: 2026-11-21T11:00:00Z
tenants:
  - tenantID: ` + tenantID + `
    lifetime: 90m
    grants:
      - clientID: ` + clientID + `
        resource: ` + xdrAPI + `
        roles: [Incident.Read.All]
      - clientID: ` + expiredApp + `
        resource: ` + xdrAPI + `
  - tenantID: ` + v2Tenant + `
    version: "2.0"
    grants:
      - clientID: ` + clientID + `
        resource: ` + customAPI + `
        roles: [Data.Read]
`))
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	f := newFixture(t)
	f.emu.Revoke(tenantID, clientID) // leave only what the config grants
	f.emu.Load(cfg)

	t.Run("grant and lifetime", func(t *testing.T) {
		resp := f.post(t, v2Path(tenantID), creds("scope", xdrScope))
		var body struct {
			ExpiresIn   int    `json:"expires_in"`
			AccessToken string `json:"access_token"`
		}
		if err := json.Unmarshal(resp.body, &body); err != nil || resp.status != http.StatusOK {
			t.Fatalf("status %d, body %s", resp.status, resp.body)
		}
		if body.ExpiresIn != 5400 {
			t.Errorf("expires_in = %d, want 5400", body.ExpiresIn)
		}
		if _, c, _ := f.verify(t, body.AccessToken); !slices.Equal(c.Roles, []string{"Incident.Read.All"}) {
			t.Errorf("roles = %v, want [Incident.Read.All]", c.Roles)
		}
	})
	t.Run("extra resource and token version", func(t *testing.T) {
		_, c, _ := f.verify(t, f.token(t, v2Path(v2Tenant), creds("scope", customAPI+"/.default")))
		if c.Ver != "2.0" || !slices.Equal(c.Roles, []string{"Data.Read"}) {
			t.Errorf("ver = %q, roles = %v; want 2.0, [Data.Read]", c.Ver, c.Roles)
		}
	})
	t.Run("secret expiry", func(t *testing.T) {
		resp := f.post(t, v2Path(tenantID), creds("client_id", expiredApp, "client_secret", expiredValue, "scope", xdrScope))
		if resp.status != http.StatusUnauthorized {
			t.Errorf("status = %d, want 401", resp.status)
		}
		assertEntraError(t, resp, "invalid_client", 7000222)
	})
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string
	}{
		{name: "misspelt field", yaml: "tenants:\n  - tenantID: " + tenantID + "\n    grant: []", want: "unknown field"},
		{name: "tenant ID not a GUID", yaml: "tenants:\n  - tenantID: contoso", want: `tenantID "contoso" is not a GUID`},
		{name: "unsupported token version", yaml: "tenants:\n  - tenantID: " + tenantID + "\n    version: \"3.0\"", want: "version must be"},
		{name: "lifetime not a duration", yaml: "tenants:\n  - tenantID: " + tenantID + "\n    lifetime: 3600", want: "duration must be a string"},
		{name: "negative lifetime", yaml: "tenants:\n  - tenantID: " + tenantID + "\n    lifetime: -1h", want: "lifetime must not be negative"},
		{name: "app without client ID", yaml: "apps:\n  - secrets: [{value: x}]", want: "apps[0]: clientID is required"},
		{name: "grant without resource", yaml: "tenants:\n  - tenantID: " + tenantID + "\n    grants: [{clientID: " + clientID + "}]", want: "clientID and resource are required"},
		{name: "certificate not PEM", yaml: "apps:\n  - clientID: " + clientID + "\n    certificates: [not-pem]", want: "apps[0].certificates[0]: no PEM CERTIFICATE block"},
		{
			name: "private key instead of a certificate",
			yaml: "apps:\n  - clientID: " + clientID + "\n    certificates:\n      - |\n        -----BEGIN PRIVATE KEY-----\n        AAAA\n        -----END PRIVATE KEY-----",
			want: `PEM block "PRIVATE KEY" is not a CERTIFICATE`,
		},
		{
			name: "certificate that does not parse",
			yaml: "apps:\n  - clientID: " + clientID + "\n    certificates:\n      - |\n        -----BEGIN CERTIFICATE-----\n        AAAA\n        -----END CERTIFICATE-----",
			want: "parsing the certificate",
		},
		{name: "federated credential without subject", yaml: "apps:\n  - clientID: " + clientID + "\n    federatedCredentials: [{issuer: https://oidc.example}]", want: "federatedCredentials[0]: issuer and subject are required"},
		{name: "issuer without keys", yaml: "issuers:\n  - issuer: https://oidc.example\n    jwks: {keys: []}", want: "issuers[0]: jwks must hold at least one key"},
		{name: "issuer without name", yaml: "issuers:\n  - jwks: {keys: []}", want: "issuers[0]: issuer is required"},
		{name: "unknown cloud", yaml: "tenants:\n  - tenantID: " + tenantID + "\n    cloud: AzureChina", want: `cloud must be one of Public, USGov, USGovHigh or DoD, not "AzureChina"`},
		{name: "cloud in the wrong case", yaml: "tenants:\n  - tenantID: " + tenantID + "\n    cloud: usgovhigh", want: "cloud must be one of"},
		{name: "empty resource in withoutResources", yaml: "tenants:\n  - tenantID: " + tenantID + "\n    withoutResources: [\"\"]", want: "withoutResources[0]: must not be empty"},
		{
			name: "grant on a resource the tenant does not have",
			yaml: "tenants:\n  - tenantID: " + tenantID + "\n    withoutResources: [" + xdrAPI + "/]\n    grants: [{clientID: " + clientID + ", resource: " + xdrAPI + "}]",
			want: "grants[0]: resource \"" + xdrAPI + "\" is in withoutResources",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := entraemu.ParseConfig([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseConfig error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestLoadConfigCloudsAndMissingResources(t *testing.T) {
	const (
		govTenant   = "4c8e2a1f-7b3d-4e9a-8f1c-2d5b6a7e9c03"
		unlicensed  = "7fb05d4c-ae60-4bcd-9c4f-5a8e9dab2f36"
		govXDRAPI   = "https://api-gov.security.microsoft.us"
		endpointAPI = "https://api.securitycenter.microsoft.com"
	)
	cfg, err := entraemu.ParseConfig([]byte(`
tenants:
  - tenantID: ` + govTenant + `
    cloud: USGovHigh
    grants:
      - clientID: ` + clientID + `
        resource: ` + govXDRAPI + `
  - tenantID: ` + unlicensed + `
    withoutResources: [` + xdrAPI + `]
    grants:
      - clientID: ` + clientID + `
        resource: ` + endpointAPI + `
`))
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	f := newFixture(t)
	f.emu.Load(cfg)
	govURL := f.serve(t, f.emu.Cloud(v1alpha1.CloudUSGovHigh))
	govForm := creds("scope", govXDRAPI+"/.default")

	f.tokenAt(t, govURL, v2Path(govTenant), govForm)
	assertEntraError(t, f.post(t, v2Path(govTenant), govForm), "invalid_request", 900382)
	f.token(t, v2Path(unlicensed), creds("scope", endpointAPI+"/.default"))
	assertEntraError(t, f.post(t, v2Path(unlicensed), creds("scope", xdrScope)), "invalid_resource", 500011)
}

func TestLoadConfigCertificatesAndFederatedCredentials(t *testing.T) {
	cert := appCert(t)
	certPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}))
	jwks, err := json.Marshal(issuerKeySet())
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := entraemu.ParseConfig([]byte(`
apps:
  - clientID: ` + clientID + `
    certificates:
      - |
` + indent(certPEM, "        ") + `
    federatedCredentials:
      - issuer: ` + saIssuer + `
        subject: ` + saSubject + `
issuers:
  - issuer: ` + saIssuer + `
    jwks: ` + string(jwks) + `
`))
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	f := newFixture(t)
	f.emu.Load(cfg)

	t.Run("certificate", func(t *testing.T) {
		assertion := sign(t, appKey(), jose.PS256, "", s256Header(cert), certClaims(f.srv.URL, tenantID))
		f.token(t, v2Path(tenantID), assertionForm(assertion))
	})
	t.Run("federated credential with the default audience", func(t *testing.T) {
		f.token(t, v2Path(tenantID), assertionForm(sign(t, issuerKey(), jose.RS256, saKeyID, nil, saClaims())))
	})
}

// indent prefixes every line of s, for a YAML block scalar.
func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = prefix + l
	}
	return strings.Join(lines, "\n")
}

func TestParseConfigSecretExpiry(t *testing.T) {
	cfg, err := entraemu.ParseConfig([]byte(`{"apps":[{"clientID":"` + clientID + `","secrets":[{"value":"v","expiresAt":"2027-01-02T03:04:05Z"}]}]}`))
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	if want := time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC); !cfg.Apps[0].Secrets[0].ExpiresAt.Equal(want) {
		t.Errorf("expiresAt = %v, want %v", cfg.Apps[0].Secrets[0].ExpiresAt, want)
	}
}

func TestSetTokenVersionRejectsUnknownVersions(t *testing.T) {
	f := newFixture(t)
	defer func() {
		if recover() == nil {
			t.Error("SetTokenVersion(\"3.0\") did not panic")
		}
	}()
	f.emu.SetTokenVersion(tenantID, "3.0")
}
