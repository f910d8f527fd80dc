package entraemu_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
)

func TestTokenErrors(t *testing.T) {
	const (
		otherTenant = "9a1d7e3c-6b2f-4e8a-b5c4-2d0f1e3a7b65"
		wrongSecret = "wrong-secret-value"
	)
	tests := []struct {
		name        string
		setup       func(*entraemu.Emulator)
		path        string
		form        url.Values
		status      int
		err         string
		code        int
		description string // a telling part of the text after "AADSTSnnnn: "
	}{
		{
			name:        "tenant segment neither a GUID nor a domain",
			path:        v2Path("not_a_tenant"),
			form:        creds("scope", xdrScope),
			status:      http.StatusBadRequest,
			err:         "invalid_request",
			code:        900023,
			description: "Specified tenant identifier 'not_a_tenant' is neither a valid DNS name",
		},
		{
			name:        "unknown tenant GUID",
			path:        v2Path(otherTenant),
			form:        creds("scope", xdrScope),
			status:      http.StatusBadRequest,
			err:         "invalid_tenant",
			code:        90002,
			description: "Tenant '" + otherTenant + "' not found.",
		},
		{
			name:        "unknown tenant domain",
			path:        v2Path("contoso.onmicrosoft.com"),
			form:        creds("scope", xdrScope),
			status:      http.StatusBadRequest,
			err:         "invalid_tenant",
			code:        90002,
			description: "Tenant 'contoso.onmicrosoft.com' not found.",
		},
		{
			name:        "grant_type missing",
			path:        v2Path(tenantID),
			form:        url.Values{"client_id": {clientID}, "client_secret": {secret}, "scope": {xdrScope}},
			status:      http.StatusBadRequest,
			err:         "invalid_request",
			code:        900144,
			description: "The request body must contain the following parameter: 'grant_type'.",
		},
		{
			name:        "grant_type not client_credentials",
			path:        v2Path(tenantID),
			form:        creds("grant_type", "password", "scope", xdrScope),
			status:      http.StatusBadRequest,
			err:         "unsupported_grant_type",
			code:        70003,
			description: "The app requested an unsupported grant type 'password'.",
		},
		{
			name:        "client_id missing",
			path:        v2Path(tenantID),
			form:        url.Values{"grant_type": {"client_credentials"}, "client_secret": {secret}, "scope": {xdrScope}},
			status:      http.StatusBadRequest,
			err:         "invalid_request",
			code:        900144,
			description: "The request body must contain the following parameter: 'client_id'.",
		},
		{
			name:        "client_id unknown",
			path:        v2Path(tenantID),
			form:        creds("client_id", "11111111-2222-3333-4444-555555555555", "scope", xdrScope),
			status:      http.StatusBadRequest,
			err:         "unauthorized_client",
			code:        700016,
			description: "Application with identifier '11111111-2222-3333-4444-555555555555' was not found in the directory '" + tenantID + "'.",
		},
		{
			name:        "client_secret missing",
			path:        v2Path(tenantID),
			form:        url.Values{"grant_type": {"client_credentials"}, "client_id": {clientID}, "scope": {xdrScope}},
			status:      http.StatusUnauthorized,
			err:         "invalid_client",
			code:        7000218,
			description: "'client_assertion' or 'client_secret'",
		},
		{
			name:        "client_secret wrong",
			path:        v2Path(tenantID),
			form:        creds("client_secret", wrongSecret, "scope", xdrScope),
			status:      http.StatusUnauthorized,
			err:         "invalid_client",
			code:        7000215,
			description: "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID",
		},
		{
			name: "client_secret expired",
			setup: func(e *entraemu.Emulator) {
				e.SetAppSecrets(clientID, entraemu.Secret{Value: secret, ExpiresAt: t0})
			},
			path:        v2Path(tenantID),
			form:        creds("scope", xdrScope),
			status:      http.StatusUnauthorized,
			err:         "invalid_client",
			code:        7000222,
			description: "The provided client secret keys for app '" + clientID + "' are expired.",
		},
		{
			name:        "app never consented in the tenant",
			setup:       func(e *entraemu.Emulator) { e.AddTenant(otherTenant) },
			path:        v2Path(otherTenant),
			form:        creds("scope", xdrScope),
			status:      http.StatusUnauthorized,
			err:         "invalid_client",
			code:        7000229,
			description: "The client application " + clientID + " is missing service principal in the tenant " + otherTenant + ".",
		},
		{
			name:        "consent revoked",
			setup:       func(e *entraemu.Emulator) { e.Revoke(tenantID, clientID) },
			path:        v1TokenPath,
			form:        creds("resource", xdrAPI),
			status:      http.StatusUnauthorized,
			err:         "invalid_client",
			code:        7000229,
			description: "is missing service principal in the tenant " + tenantID,
		},
		{
			name:        "v2 given the v1 resource parameter",
			path:        v2Path(tenantID),
			form:        creds("resource", xdrAPI),
			status:      http.StatusBadRequest,
			err:         "invalid_request",
			code:        901002,
			description: "The 'resource' request parameter is not supported.",
		},
		{
			name:        "v2 scope missing",
			path:        v2Path(tenantID),
			form:        creds(),
			status:      http.StatusBadRequest,
			err:         "invalid_scope",
			code:        70011,
			description: "The provided request must include a 'scope' input parameter.",
		},
		{
			name:        "v2 scope is a permission, not /.default",
			path:        v2Path(tenantID),
			form:        creds("scope", xdrAPI+"/Incident.Read.All"),
			status:      http.StatusBadRequest,
			err:         "invalid_scope",
			code:        70011,
			description: "Client credential flows must have a scope value with /.default suffixed",
		},
		{
			name:        "v2 scope lists several scopes",
			path:        v2Path(tenantID),
			form:        creds("scope", "openid "+xdrScope),
			status:      http.StatusBadRequest,
			err:         "invalid_scope",
			code:        70011,
			description: "The provided value for scope openid " + xdrScope + " is not valid.",
		},
		{
			name:        "v2 scope of an unknown resource",
			path:        v2Path(tenantID),
			form:        creds("scope", "https://api.example.com/.default"),
			status:      http.StatusBadRequest,
			err:         "invalid_resource",
			code:        500011,
			description: "The resource principal named https://api.example.com was not found in the tenant named " + tenantID + ".",
		},
		{
			name:        "v1 resource missing",
			path:        v1TokenPath,
			form:        creds(),
			status:      http.StatusBadRequest,
			err:         "invalid_request",
			code:        900144,
			description: "The request body must contain the following parameter: 'resource'.",
		},
		{
			name:        "v1 resource unknown",
			path:        v1TokenPath,
			form:        creds("resource", "https://api.example.com"),
			status:      http.StatusBadRequest,
			err:         "invalid_resource",
			code:        500011,
			description: "The resource principal named https://api.example.com was not found",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			if tc.setup != nil {
				tc.setup(f.emu)
			}
			resp := f.post(t, tc.path, tc.form)

			if resp.status != tc.status {
				t.Errorf("status = %d, want %d", resp.status, tc.status)
			}
			got := assertEntraError(t, resp, tc.err, tc.code)
			if !strings.Contains(got.Description, tc.description) {
				t.Errorf("error_description = %q, want it to contain %q", got.Description, tc.description)
			}
			for _, s := range []string{secret, wrongSecret} {
				if strings.Contains(string(resp.body), s) {
					t.Errorf("the error body echoes a submitted secret: %s", resp.body)
				}
			}
		})
	}
}

// assertEntraError checks that resp is an Entra error body with the error and AADSTS
// code given, trace and correlation IDs, and the fake clock's time, and returns it.
func assertEntraError(t *testing.T, resp response, wantErr string, wantCode int) entraError {
	t.Helper()
	return assertEntraErrorFrom(t, "https://login.microsoftonline.com", resp, wantErr, wantCode)
}

// assertEntraErrorFrom is assertEntraError for an answer of the sign-in host, whose
// error page error_uri links to.
func assertEntraErrorFrom(t *testing.T, host string, resp response, wantErr string, wantCode int) entraError {
	t.Helper()
	if ct := resp.header.Get("Content-Type"); ct != entraJSON {
		t.Errorf("Content-Type = %q, want application/json; charset=utf-8", ct)
	}
	var got entraError
	if err := json.Unmarshal(resp.body, &got); err != nil {
		t.Fatalf("the body is not an Entra error: %v: %s", err, resp.body)
	}
	if got.Error != wantErr {
		t.Errorf("error = %q, want %q", got.Error, wantErr)
	}
	if len(got.Codes) != 1 || got.Codes[0] != wantCode {
		t.Errorf("error_codes = %v, want [%d]", got.Codes, wantCode)
	}
	if prefix := fmt.Sprintf("AADSTS%d: ", wantCode); !strings.HasPrefix(got.Description, prefix) {
		t.Errorf("error_description = %q, want the prefix %q", got.Description, prefix)
	}
	if !guidRE.MatchString(got.TraceID) || !guidRE.MatchString(got.CorrelationID) {
		t.Errorf("trace_id = %q, correlation_id = %q, want GUIDs", got.TraceID, got.CorrelationID)
	}
	const timestamp = "2026-11-21 12:00:00Z"
	if got.Timestamp != timestamp {
		t.Errorf("timestamp = %q, want %q", got.Timestamp, timestamp)
	}
	trailer := "\r\nTrace ID: " + got.TraceID + "\r\nCorrelation ID: " + got.CorrelationID + "\r\nTimestamp: " + timestamp
	if !strings.HasSuffix(got.Description, trailer) {
		t.Errorf("error_description = %q, want it to end with %q", got.Description, trailer)
	}
	if want := fmt.Sprintf("%s/error?code=%d", host, wantCode); got.ErrorURI != want {
		t.Errorf("error_uri = %q, want %q", got.ErrorURI, want)
	}
	return got
}

func TestMalformedFormBody(t *testing.T) {
	f := newFixture(t)
	req, err := http.NewRequest(http.MethodPost, f.srv.URL+v2Path(tenantID), strings.NewReader("grant_type=%zz"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp := f.do(t, req)

	var got entraError
	if err := json.Unmarshal(resp.body, &got); err != nil {
		t.Fatalf("the body is not an Entra error: %v: %s", err, resp.body)
	}
	if resp.status != http.StatusBadRequest || got.Error != "invalid_request" || len(got.Codes) != 0 {
		t.Errorf("status = %d, error = %q, error_codes = %v; want 400, invalid_request, none", resp.status, got.Error, got.Codes)
	}
}

func TestTokenEndpointsOnlyAcceptPOST(t *testing.T) {
	f := newFixture(t)
	for _, path := range []string{v1TokenPath, v2Path(tenantID)} {
		t.Run(path, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, f.srv.URL+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp := f.do(t, req)
			if resp.status != http.StatusMethodNotAllowed {
				t.Errorf("status = %d, want 405", resp.status)
			}
			if allow := resp.header.Get("Allow"); allow != http.MethodPost {
				t.Errorf("Allow = %q, want POST", allow)
			}
		})
	}
}

func TestSecretExpiryFollowsTheClock(t *testing.T) {
	f := newFixture(t)
	f.emu.SetAppSecrets(clientID, entraemu.Secret{Value: secret, ExpiresAt: t0.Add(time.Hour)})
	form := creds("scope", xdrScope)

	f.token(t, v2Path(tenantID), form)

	f.clock.SetTime(t0.Add(time.Hour - time.Second))
	f.token(t, v2Path(tenantID), form)

	f.clock.SetTime(t0.Add(time.Hour))
	resp := f.post(t, v2Path(tenantID), form)
	if resp.status != http.StatusUnauthorized {
		t.Fatalf("status at expiry = %d, want 401", resp.status)
	}
	var got entraError
	if err := json.Unmarshal(resp.body, &got); err != nil || len(got.Codes) != 1 || got.Codes[0] != 7000222 {
		t.Errorf("error at expiry = %s, want AADSTS7000222", resp.body)
	}
}

func TestSecretRotation(t *testing.T) {
	const newSecret = "the-rotated-secret"
	f := newFixture(t)
	withSecret := func(s string) url.Values { return creds("client_secret", s, "scope", xdrScope) }

	// Adding a secret keeps the old one working: the overlap a rotation needs.
	f.emu.AddApp(clientID, entraemu.Secret{Value: newSecret})
	f.token(t, v2Path(tenantID), withSecret(secret))
	f.token(t, v2Path(tenantID), withSecret(newSecret))

	// Replacing the secrets ends the old one.
	f.emu.SetAppSecrets(clientID, entraemu.Secret{Value: newSecret})
	f.token(t, v2Path(tenantID), withSecret(newSecret))
	resp := f.post(t, v2Path(tenantID), withSecret(secret))
	if resp.status != http.StatusUnauthorized {
		t.Fatalf("status with the replaced secret = %d, want 401", resp.status)
	}
	var got entraError
	if err := json.Unmarshal(resp.body, &got); err != nil || len(got.Codes) != 1 || got.Codes[0] != 7000215 {
		t.Errorf("error with the replaced secret = %s, want AADSTS7000215", resp.body)
	}
}
