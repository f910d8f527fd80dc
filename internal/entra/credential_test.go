package entra_test

import (
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

// testAssertion stands in for a Kubernetes ServiceAccount token: three long
// base64url parts, as a real one has.
const testAssertion = "eyJhbGciOiJSUzI1NiIsImtpZCI6InNhLWtleSJ9" +
	".eyJpc3MiOiJodHRwczovL29pZGMuZXhhbXBsZS9jbHVzdGVyIiwic3ViIjoic3lzdGVtOnNlcnZpY2VhY2NvdW50OmRlZmVuZGVyOnBhcnRuZXItYXBwIn0" +
	".c2lnbmF0dXJlLW9mLXRoZS1zZXJ2aWNlLWFjY291bnQtdG9rZW4tdGhhdC1tdXN0LW5ldmVyLWxlYWs"

func fixtureCertificate(t *testing.T) *entra.Certificate {
	t.Helper()
	certPEM, keyPEM := readFixture(t)
	c, err := entra.ParseCertificate(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// fixtureKey is the fixture's private key, parsed by the test itself.
func fixtureKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	_, keyPEM := readFixture(t)
	block, _ := pem.Decode(keyPEM)
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return key.(*rsa.PrivateKey)
}

// fixtureLeaf is the fixture's certificate, parsed by the test itself.
func fixtureLeaf(t *testing.T) *x509.Certificate {
	t.Helper()
	certPEM, _ := readFixture(t)
	block, _ := pem.Decode(certPEM)
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

func credentialRequest(authority string, cred entra.Credential) entra.Request {
	return entra.Request{
		AuthorityHost: authority,
		TenantID:      testTenant,
		ClientID:      testClient,
		Credential:    cred,
		Resource:      "https://api.security.microsoft.com",
	}
}

// Each kind sends its own fields and nothing of the others, in the body only,
// with one HTTP request per call.
func TestRequestTokenSendsEachCredentialKindInTheForm(t *testing.T) {
	base := url.Values{
		"grant_type": {"client_credentials"},
		"client_id":  {testClient},
		"scope":      {"https://api.security.microsoft.com/.default"},
	}
	with := func(kv ...string) url.Values {
		v := url.Values{}
		for k, vv := range base {
			v[k] = vv
		}
		for i := 0; i+1 < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return v
	}
	tests := []struct {
		name string
		cred entra.Credential
		// wantForm is the exact form, client_assertion excepted when it is "*".
		wantForm url.Values
	}{
		{"client secret", entra.ClientSecret(testSecret), with("client_secret", testSecret)},
		{"client assertion", entra.ClientAssertion(testAssertion), with("client_assertion_type", entra.ClientAssertionType, "client_assertion", testAssertion)},
		{"certificate", fixtureCertificate(t), with("client_assertion_type", entra.ClientAssertionType, "client_assertion", "*")},
		{"empty client secret sends no credential", entra.ClientSecret(""), with()},
		{"no credential", nil, with()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, requests := tokenEndpoint(t, answer(200, "application/json", okBody))
			c := &entra.Client{}
			const calls = 2
			for range calls {
				if _, err := c.RequestToken(context.Background(), credentialRequest(srv.URL, tt.cred)); err != nil {
					t.Fatalf("RequestToken: %v", err)
				}
			}
			got := requests()
			if len(got) != calls {
				t.Fatalf("token endpoint got %d requests for %d calls, want one each", len(got), calls)
			}
			var assertions []string
			for _, r := range got {
				if r.authorization != "" {
					t.Errorf("Authorization header %q sent, want the credential only in the body", r.authorization)
				}
				form := url.Values{}
				for k, v := range r.form {
					form[k] = v
				}
				if tt.wantForm.Get("client_assertion") == "*" {
					assertions = append(assertions, form.Get("client_assertion"))
					form.Set("client_assertion", "*")
				}
				if fmt.Sprint(form) != fmt.Sprint(tt.wantForm) {
					t.Errorf("form = %v, want %v", form, tt.wantForm)
				}
			}
			if len(assertions) == calls && (assertions[0] == "" || assertions[0] == assertions[1]) {
				t.Errorf("assertions %q: want a fresh one for each request", assertions)
			}
		})
	}
}

// The assertion is verified here with go-jose against the certificate's own
// public key, as Entra ID would, and every header field and claim is checked on
// a fake clock.
func TestCertificateAssertionHeaderAndClaims(t *testing.T) {
	signedAt := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakePassiveClock(signedAt)
	srv, requests := tokenEndpoint(t, answer(200, "application/json", okBody))
	c := &entra.Client{Clock: clk}
	cert := fixtureCertificate(t)
	leaf := fixtureLeaf(t)

	jtis := make([]string, 0, 2)
	for i, at := range []time.Time{signedAt, signedAt.Add(90 * time.Second)} {
		clk.SetTime(at)
		if _, err := c.RequestToken(context.Background(), credentialRequest(srv.URL, cert)); err != nil {
			t.Fatalf("RequestToken: %v", err)
		}
		assertion := requests()[i].form.Get("client_assertion")

		tok, err := jwt.ParseSigned(assertion, []jose.SignatureAlgorithm{jose.PS256})
		if err != nil {
			t.Fatalf("assertion does not parse as a PS256 JWT: %v", err)
		}
		if len(tok.Headers) != 1 {
			t.Fatalf("%d headers, want 1", len(tok.Headers))
		}
		h := tok.Headers[0]
		x5t := sha256.Sum256(leaf.Raw)
		if h.Algorithm != "PS256" {
			t.Errorf("alg = %q, want PS256", h.Algorithm)
		}
		// The header as sent, decoded by hand: exactly these fields.
		rawHeader, err := base64.RawURLEncoding.DecodeString(strings.Split(assertion, ".")[0])
		if err != nil {
			t.Fatal(err)
		}
		var gotHeader map[string]any
		if err := json.Unmarshal(rawHeader, &gotHeader); err != nil {
			t.Fatal(err)
		}
		wantHeader := map[string]any{"alg": "PS256", "typ": "JWT", "x5t#S256": base64.RawURLEncoding.EncodeToString(x5t[:])}
		if fmt.Sprint(gotHeader) != fmt.Sprint(wantHeader) {
			t.Errorf("header %v, want exactly %v", gotHeader, wantHeader)
		}

		var claims jwt.Claims
		var raw map[string]any
		if err := tok.Claims(leaf.PublicKey, &claims, &raw); err != nil {
			t.Fatalf("signature does not verify with the certificate's public key: %v", err)
		}
		wantAud := entra.TokenURL(srv.URL, testTenant)
		if claims.Issuer != testClient || claims.Subject != testClient {
			t.Errorf("iss, sub = %q, %q; want the client ID %q", claims.Issuer, claims.Subject, testClient)
		}
		if aud, ok := raw["aud"].(string); !ok || aud != wantAud {
			t.Errorf("aud = %#v, want the string %q", raw["aud"], wantAud)
		}
		if !guidPattern.MatchString(claims.ID) || slices.Contains(jtis, claims.ID) {
			t.Errorf("jti = %q, want a fresh GUID (earlier: %q)", claims.ID, jtis)
		}
		jtis = append(jtis, claims.ID)
		if !claims.IssuedAt.Time().Equal(at) || !claims.NotBefore.Time().Equal(at) {
			t.Errorf("iat, nbf = %v, %v; want the clock's %v", claims.IssuedAt.Time(), claims.NotBefore.Time(), at)
		}
		if want := at.Add(10 * time.Minute); !claims.Expiry.Time().Equal(want) {
			t.Errorf("exp = %v, want %v", claims.Expiry.Time(), want)
		}
		keys := make([]string, 0, len(raw))
		for k := range raw {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if want := []string{"aud", "exp", "iat", "iss", "jti", "nbf", "sub"}; !slices.Equal(keys, want) {
			t.Errorf("claims %v, want exactly %v", keys, want)
		}
		if err := claims.ValidateWithLeeway(jwt.Expected{Issuer: testClient, Subject: testClient, AnyAudience: jwt.Audience{wantAud}, Time: at}, 0); err != nil {
			t.Errorf("claims do not validate at the signing time: %v", err)
		}
	}
}

// A Certificate that cannot sign is InvalidCertificate, and costs no request.
func TestRequestTokenWithACertificateThatCannotSign(t *testing.T) {
	for name, cred := range map[string]entra.Credential{
		"zero Certificate": &entra.Certificate{},
		"nil *Certificate": (*entra.Certificate)(nil),
	} {
		t.Run(name, func(t *testing.T) {
			srv, requests := tokenEndpoint(t, answer(200, "application/json", okBody))
			tok, err := (&entra.Client{}).RequestToken(context.Background(), credentialRequest(srv.URL, cred))
			var f *entra.Failure
			if !errors.As(err, &f) {
				t.Fatalf("error %v (%T) is not a *Failure", err, err)
			}
			if f.Reason != v1alpha1.ReasonInvalidCertificate || f.Kind != entra.NeedsHuman {
				t.Errorf("got %s/%s, want InvalidCertificate/NeedsHuman (message %q)", f.Reason, f.Kind, f.Message)
			}
			if !strings.Contains(f.Message, "certificate Secret") {
				t.Errorf("Message %q does not say what to check", f.Message)
			}
			if n := len(requests()); n != 0 {
				t.Errorf("token endpoint got %d requests, want none", n)
			}
			if tok != (entra.Token{}) {
				t.Errorf("token = %+v alongside an error", tok)
			}
		})
	}
}

// A proxy (or a broken endpoint) that echoes the request body, whole or in part,
// must not get the credential into the Failure.
func TestFailureNeverCarriesTheCredential(t *testing.T) {
	_, keyPEM := readFixture(t)
	key := fixtureKey(t)
	cert := fixtureCertificate(t)
	echoes := map[string]func(form url.Values) string{
		"whole body": func(form url.Values) string { return form.Encode() },
		"raw value": func(form url.Values) string {
			return form.Get("client_secret") + " " + form.Get("client_assertion")
		},
		"assertion signature only": func(form url.Values) string {
			parts := strings.Split(form.Get("client_assertion"), ".")
			return "bad signature " + parts[len(parts)-1]
		},
		"assertion payload only": func(form url.Values) string {
			parts := strings.Split(form.Get("client_assertion"), ".")
			if len(parts) < 2 {
				return ""
			}
			return "bad payload " + parts[1]
		},
	}
	creds := map[string]entra.Credential{
		"client secret":    entra.ClientSecret(testSecret),
		"client assertion": entra.ClientAssertion(testAssertion),
		"certificate":      cert,
	}
	for credName, cred := range creds {
		for echoName, echo := range echoes {
			for _, status := range []int{400, 401, 500} {
				t.Run(fmt.Sprintf("%s/%s/%d", credName, echoName, status), func(t *testing.T) {
					var seen url.Values
					srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						_ = r.ParseForm()
						seen = r.PostForm
						e := echo(r.PostForm)
						body, _ := json.Marshal(map[string]any{
							"error":             "invalid_client",
							"error_description": "AADSTS700027: echo " + e,
							"error_codes":       []int{700027},
							"trace_id":          e,
							"correlation_id":    e,
						})
						w.Header().Set("Content-Type", "application/json")
						w.Header().Set("client-request-id", e)
						w.WriteHeader(status)
						_, _ = w.Write(body)
					}))
					t.Cleanup(srv.Close)

					_, err := (&entra.Client{}).RequestToken(context.Background(), credentialRequest(srv.URL, cred))
					var f *entra.Failure
					if !errors.As(err, &f) {
						t.Fatalf("error %v (%T) is not a *Failure", err, err)
					}
					leaks := []string{testSecret, url.QueryEscape(testSecret), testSecret[:12], testAssertion}
					leaks = append(leaks, strings.Split(testAssertion, ".")...)
					if a := seen.Get("client_assertion"); a != "" {
						leaks = append(leaks, a)
						leaks = append(leaks, strings.Split(a, ".")[1:]...)
					}
					leaks = append(leaks, keyMaterial(keyPEM, key)...)
					everything := strings.Join([]string{f.Error(), f.ErrorCode, f.TraceID, f.CorrelationID, f.ClientRequestID, fmt.Sprintf("%+v", *f)}, "\n")
					for _, leak := range leaks {
						if strings.Contains(everything, leak) {
							t.Errorf("failure leaks %q: %s", leak, everything)
						}
					}
				})
			}
		}
	}
}

// AADSTS700027 names the certificate to register when the Failure knows it.
func TestUnknownCertificateNamesItsThumbprint(t *testing.T) {
	body := `{"error":"invalid_client","error_description":"AADSTS700027: Client assertion contains an invalid signature. [Reason - The key was not found., Thumbprint of key used by client: '` + fixtureSHA1 + `']","error_codes":[700027]}`
	srv, _ := tokenEndpoint(t, answer(401, "application/json", body))
	for name, tt := range map[string]struct {
		cred entra.Credential
		want string
	}{
		"certificate": {fixtureCertificate(t), "SHA-1 thumbprint " + fixtureSHA1},
		"assertion":   {entra.ClientAssertion(testAssertion), "status.certificate"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := (&entra.Client{}).RequestToken(context.Background(), credentialRequest(srv.URL, tt.cred))
			var f *entra.Failure
			if !errors.As(err, &f) {
				t.Fatalf("error %v (%T) is not a *Failure", err, err)
			}
			if f.Reason != v1alpha1.ReasonInvalidClientAssertion || !strings.Contains(f.Message, tt.want) {
				t.Errorf("got %s %q, want InvalidClientAssertion naming %q", f.Reason, f.Message, tt.want)
			}
		})
	}
}

func TestCredentialsDoNotPrint(t *testing.T) {
	_, keyPEM := readFixture(t)
	cert := fixtureCertificate(t)
	material := keyMaterial(keyPEM, fixtureKey(t))
	for name, tt := range map[string]struct {
		cred    entra.Credential
		secrets []string
		kind    string
	}{
		"client secret":    {entra.ClientSecret(testSecret), []string{testSecret}, "ClientSecret"},
		"client assertion": {entra.ClientAssertion(testAssertion), append([]string{testAssertion}, strings.Split(testAssertion, ".")...), "ClientAssertion"},
		"certificate":      {cert, material, "Certificate"},
	} {
		t.Run(name, func(t *testing.T) {
			req := credentialRequest("https://login.microsoftonline.com", tt.cred)
			reqJSON, err := json.Marshal(req)
			if err != nil {
				t.Fatal(err)
			}
			credJSON, err := json.Marshal(tt.cred)
			if err != nil {
				t.Fatal(err)
			}
			outs := []string{
				fmt.Sprint(req), fmt.Sprintf("%+v", req), fmt.Sprintf("%#v", req), fmt.Sprintf("%v", &req), string(reqJSON),
				fmt.Sprint(tt.cred), fmt.Sprintf("%+v", tt.cred), fmt.Sprintf("%#v", tt.cred), fmt.Sprintf("%s", tt.cred), fmt.Sprintf("%q", tt.cred), string(credJSON),
			}
			for _, out := range outs {
				for _, s := range tt.secrets {
					if strings.Contains(out, s) {
						t.Errorf("%q contains %q", out, s)
					}
				}
			}
			if strings.Contains(string(reqJSON), "Credential") {
				t.Errorf("Request marshals its credential: %s", reqJSON)
			}
			for _, out := range outs[:4] {
				if !strings.Contains(out, testTenant) || !strings.Contains(out, "Credential:"+tt.kind) {
					t.Errorf("%q does not describe the request and its credential kind %s", out, tt.kind)
				}
			}
		})
	}
	if got := fmt.Sprint(cert); !strings.Contains(got, fixtureSHA1) {
		t.Errorf("certificate prints as %q, want its thumbprint", got)
	}
}
