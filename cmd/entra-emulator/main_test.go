package main

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
)

const (
	demoClientID = "0b9f7c55-8a3e-4d2a-9c61-5f0e7d3b2a10"
	demoSecret   = "demo-client-secret-value"
)

// demoServer serves an emulator loaded with demo.yaml as the Public sign-in host,
// logging into the buffer.
func demoServer(t *testing.T) (*httptest.Server, *bytes.Buffer) {
	t.Helper()
	return demoServerIn(t, v1alpha1.CloudPublic)
}

// demoServerIn is demoServer answering as the sign-in host of cloud.
func demoServerIn(t *testing.T, cloud v1alpha1.Cloud) (*httptest.Server, *bytes.Buffer) {
	t.Helper()
	data, err := os.ReadFile("demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := entraemu.ParseConfig(data)
	if err != nil {
		t.Fatalf("demo.yaml: %v", err)
	}
	emu, err := entraemu.New(entraemu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	emu.Load(cfg)
	var logs bytes.Buffer
	srv := httptest.NewServer(logRequests(slog.New(slog.NewTextHandler(&logs, nil)), emu.Cloud(cloud)))
	t.Cleanup(srv.Close)
	return srv, &logs
}

func requestToken(t *testing.T, srv *httptest.Server, tenant, secret string) (int, []byte) {
	t.Helper()
	return requestTokenFor(t, srv, tenant, secret, "https://api.security.microsoft.com")
}

// requestTokenFor is requestToken for another resource than the Defender XDR API.
func requestTokenFor(t *testing.T, srv *httptest.Server, tenant, secret, resource string) (int, []byte) {
	t.Helper()
	resp, err := srv.Client().PostForm(srv.URL+"/"+tenant+"/oauth2/v2.0/token", url.Values{
		"grant_type":    {"client_credentials"},
		"client_id":     {demoClientID},
		"client_secret": {secret},
		"scope":         {resource + "/.default"},
	})
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close() // read to the end or failed; either way there is nothing left to lose
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

func TestDemoConfig(t *testing.T) {
	const (
		endpointAPI = "https://api.securitycenter.microsoft.com"
		govXDRAPI   = "https://api-gov.security.microsoft.us"
	)
	tests := []struct {
		name      string
		cloud     v1alpha1.Cloud // "" is Public
		tenant    string
		resource  string // "" is the Defender XDR API
		status    int
		roles     []string
		errorCode int
	}{
		{name: "healthy tenant", tenant: "6e3c1a8e-2f6b-4c4f-9b7e-0d6f2a1c9e11", status: http.StatusOK,
			roles: []string{"Incident.Read.All", "AdvancedHunting.Read.All"}},
		{name: "tenant missing a permission", tenant: "3f2b8c1d-5a4e-4b7f-8c2d-1e9a6b5c4d30", status: http.StatusOK,
			roles: []string{"Incident.Read.All"}},
		{name: "tenant without consent", tenant: "9a1d7e3c-6b2f-4e8a-b5c4-2d0f1e3a7b65", status: http.StatusUnauthorized,
			errorCode: 7000229},
		{name: "tenant without Defender XDR", tenant: "2b7e4d9c-1a3f-4c8e-9d6b-7f0a2e5c8b41", status: http.StatusBadRequest,
			errorCode: 500011},
		{name: "tenant without Defender XDR asking Defender for Endpoint", tenant: "2b7e4d9c-1a3f-4c8e-9d6b-7f0a2e5c8b41",
			resource: endpointAPI, status: http.StatusOK, roles: []string{"Alert.Read.All"}},
		{name: "GCC High tenant at the Public host", tenant: "4c8e2a1f-7b3d-4e9a-8f1c-2d5b6a7e9c03", resource: govXDRAPI,
			status: http.StatusBadRequest, errorCode: 900382},
		{name: "GCC High tenant at the US Government host", cloud: v1alpha1.CloudUSGovHigh, tenant: "4c8e2a1f-7b3d-4e9a-8f1c-2d5b6a7e9c03",
			resource: govXDRAPI, status: http.StatusOK, roles: []string{"Incident.Read.All"}},
		{name: "Public tenant at the US Government host", cloud: v1alpha1.CloudUSGovHigh, tenant: "6e3c1a8e-2f6b-4c4f-9b7e-0d6f2a1c9e11",
			status: http.StatusBadRequest, errorCode: 900382},
	}
	public, _ := demoServer(t)
	gov, _ := demoServerIn(t, v1alpha1.CloudUSGovHigh)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, resource := public, tc.resource
			if tc.cloud == v1alpha1.CloudUSGovHigh {
				srv = gov
			}
			if resource == "" {
				resource = "https://api.security.microsoft.com"
			}
			status, body := requestTokenFor(t, srv, tc.tenant, demoSecret, resource)
			if status != tc.status {
				t.Fatalf("status = %d, want %d: %s", status, tc.status, body)
			}
			var resp struct {
				AccessToken string `json:"access_token"`
				ErrorCodes  []int  `json:"error_codes"`
			}
			if err := json.Unmarshal(body, &resp); err != nil {
				t.Fatal(err)
			}
			if tc.errorCode != 0 {
				if !slices.Equal(resp.ErrorCodes, []int{tc.errorCode}) {
					t.Errorf("error_codes = %v, want [%d]", resp.ErrorCodes, tc.errorCode)
				}
				return
			}
			tok, err := jwt.ParseSigned(resp.AccessToken, []jose.SignatureAlgorithm{jose.RS256})
			if err != nil {
				t.Fatal(err)
			}
			var claims struct {
				Roles []string `json:"roles"`
			}
			// The signature is verified by the entraemu tests; here only roles matter.
			if err := tok.UnsafeClaimsWithoutVerification(&claims); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(claims.Roles, tc.roles) {
				t.Errorf("roles = %v, want %v", claims.Roles, tc.roles)
			}
		})
	}
}

func TestLogRequestsNeverLogsSecretsOrTokens(t *testing.T) {
	const tenant = "6e3c1a8e-2f6b-4c4f-9b7e-0d6f2a1c9e11"
	srv, logs := demoServer(t)

	_, okBody := requestToken(t, srv, tenant, demoSecret)
	_, _ = requestToken(t, srv, tenant, "a-wrong-secret")

	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d log lines, want one per request:\n%s", len(lines), logs)
	}
	for i, want := range []string{"status=200 aadsts=0", "status=401 aadsts=7000215"} {
		if !strings.Contains(lines[i], "tenant="+tenant) || !strings.Contains(lines[i], want) {
			t.Errorf("log line %d = %q, want the tenant and %q", i, lines[i], want)
		}
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(okBody, &tok); err != nil || tok.AccessToken == "" {
		t.Fatalf("no access token in %s", okBody)
	}
	for _, s := range []string{demoSecret, "a-wrong-secret", tok.AccessToken} {
		if strings.Contains(logs.String(), s) {
			t.Errorf("the log contains a secret or token:\n%s", logs)
		}
	}
}
