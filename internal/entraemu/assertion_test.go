package entraemu_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // x5t is a SHA-1 thumbprint
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
)

const (
	jwtBearer  = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	saIssuer   = "https://kubernetes.default.svc.cluster.local"
	saSubject  = "system:serviceaccount:defender-tenant-operator-system:partner-app"
	saAudience = "api://AzureADTokenExchange"
	saKeyID    = "sa-key-1"
)

// testKeys are RSA keys generated once for all tests, since RSA key generation is
// slow: the app's certificate key, a key no certificate of the app holds, and a
// service-account issuer's key.
var testKeys = sync.OnceValue(func() [3]*rsa.PrivateKey {
	var keys [3]*rsa.PrivateKey
	for i := range keys {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		keys[i] = k
	}
	return keys
})

func appKey() *rsa.PrivateKey    { return testKeys()[0] }
func otherKey() *rsa.PrivateKey  { return testKeys()[1] }
func issuerKey() *rsa.PrivateKey { return testKeys()[2] }

// newCert returns a self-signed certificate of key, valid from notBefore to notAfter.
func newCert(t *testing.T, key *rsa.PrivateKey, notBefore, notAfter time.Time) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "partner-app"},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// appCert is a certificate of appKey valid around t0.
func appCert(t *testing.T) *x509.Certificate {
	t.Helper()
	return newCert(t, appKey(), t0.Add(-24*time.Hour), t0.AddDate(1, 0, 0))
}

func x5tS256(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func x5t(c *x509.Certificate) string {
	sum := sha1.Sum(c.Raw) //nolint:gosec // see the import
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// sign signs claims with key as a JWT with alg, the key ID kid (if any) and extra
// header fields.
func sign(t *testing.T, key *rsa.PrivateKey, alg jose.SignatureAlgorithm, kid string, headers map[jose.HeaderKey]any, claims any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	for k, v := range headers {
		opts = opts.WithHeader(k, v)
	}
	var signingKey any = key
	if kid != "" {
		signingKey = jose.JSONWebKey{Key: key, KeyID: kid}
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: signingKey}, opts)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// certClaims are the claims MSAL puts in a certificate assertion for the tenant's
// v2 token endpoint at base, valid for 10 minutes from t0.
func certClaims(base, tenant string) jwt.Claims {
	return jwt.Claims{
		Issuer:    clientID,
		Subject:   clientID,
		Audience:  jwt.Audience{base + v2Path(tenant)},
		ID:        "7c1c5a8e-0b3f-4d2e-9f61-2a7e5d3c1b90",
		NotBefore: jwt.NewNumericDate(t0),
		IssuedAt:  jwt.NewNumericDate(t0),
		Expiry:    jwt.NewNumericDate(t0.Add(10 * time.Minute)),
	}
}

// saClaims are the claims of a ServiceAccount token for Entra, valid for 10 minutes
// from t0.
func saClaims() jwt.Claims {
	return jwt.Claims{
		Issuer:    saIssuer,
		Subject:   saSubject,
		Audience:  jwt.Audience{saAudience},
		NotBefore: jwt.NewNumericDate(t0),
		IssuedAt:  jwt.NewNumericDate(t0),
		Expiry:    jwt.NewNumericDate(t0.Add(10 * time.Minute)),
	}
}

// assertionForm is a client-credentials form with a client assertion instead of a
// secret, for the XDR API, plus extra key/value pairs.
func assertionForm(assertion string, extra ...string) url.Values {
	form := url.Values{
		"grant_type":            {"client_credentials"},
		"client_id":             {clientID},
		"client_assertion_type": {jwtBearer},
		"client_assertion":      {assertion},
		"scope":                 {xdrScope},
	}
	for i := 0; i+1 < len(extra); i += 2 {
		form.Set(extra[i], extra[i+1])
	}
	return form
}

// issuerKeySet is the public key set of the service-account issuer.
func issuerKeySet() jose.JSONWebKeySet {
	return jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &issuerKey().PublicKey, KeyID: saKeyID, Algorithm: "RS256", Use: "sig"}}}
}

// federatedFixture is the fixture with the app trusting the service account.
func federatedFixture(t *testing.T) *fixture {
	t.Helper()
	f := newFixture(t)
	f.emu.AddFederatedCredential(clientID, entraemu.FederatedCredential{Issuer: saIssuer, Subject: saSubject, Audience: saAudience})
	f.emu.SetIssuerKeys(saIssuer, issuerKeySet())
	return f
}

func TestCertificateAssertionGetsAToken(t *testing.T) {
	tests := []struct {
		name     string
		alg      jose.SignatureAlgorithm
		header   func(*x509.Certificate) map[jose.HeaderKey]any
		aud      func(base string) any // nil: the v2 token URL at base
		path     string                // "" is the v2 endpoint
		v2Tokens bool
	}{
		{name: "PS256 with x5t#S256", alg: jose.PS256, header: s256Header},
		{name: "RS256 with x5t, the older form", alg: jose.RS256, header: sha1Header},
		{name: "RS256 with x5t#S256", alg: jose.RS256, header: s256Header},
		{name: "aud is the v1 token URL", alg: jose.PS256, header: s256Header,
			aud: func(base string) any { return base + "/" + tenantID + "/oauth2/token" }},
		{name: "aud names the real sign-in host", alg: jose.PS256, header: s256Header,
			aud: func(string) any { return "https://login.microsoftonline.com/" + tenantID + "/oauth2/v2.0/token" }},
		{name: "aud in another case", alg: jose.PS256, header: s256Header,
			aud: func(base string) any { return strings.ToUpper(base + v2Path(tenantID)) }},
		{name: "aud is a list holding the token URL", alg: jose.PS256, header: s256Header,
			aud: func(base string) any { return []string{"https://example.com", base + v2Path(tenantID)} }},
		{name: "v1 endpoint", alg: jose.PS256, header: s256Header, path: v1TokenPath,
			aud: func(base string) any { return base + v1TokenPath }},
		{name: "v2 token", alg: jose.PS256, header: s256Header, v2Tokens: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			cert := appCert(t)
			f.emu.AddCertificate(clientID, cert)
			if tc.v2Tokens {
				f.emu.SetTokenVersion(tenantID, entraemu.TokenV2)
			}
			claims := map[string]any{}
			raw, _ := json.Marshal(certClaims(f.srv.URL, tenantID))
			_ = json.Unmarshal(raw, &claims)
			if tc.aud != nil {
				claims["aud"] = tc.aud(f.srv.URL)
			}
			path, form := v2Path(tenantID), assertionForm(sign(t, appKey(), tc.alg, "", tc.header(cert), claims))
			if tc.path != "" {
				path = tc.path
				form.Del("scope")
				form.Set("resource", xdrAPI)
			}

			_, c, _ := f.verify(t, f.token(t, path, form))
			if tc.v2Tokens {
				if c.Azp != clientID || c.AzpACR != "2" {
					t.Errorf("azp, azpacr = %q, %q; want %q, 2", c.Azp, c.AzpACR, clientID)
				}
			} else if c.AppID != clientID || c.AppIDACR != "2" {
				t.Errorf("appid, appidacr = %q, %q; want %q, 2", c.AppID, c.AppIDACR, clientID)
			}
		})
	}
}

func s256Header(c *x509.Certificate) map[jose.HeaderKey]any {
	return map[jose.HeaderKey]any{"x5t#S256": x5tS256(c)}
}

func sha1Header(c *x509.Certificate) map[jose.HeaderKey]any {
	return map[jose.HeaderKey]any{"x5t": x5t(c)}
}

func TestCertificateAssertionErrors(t *testing.T) {
	const otherTenant = "9a1d7e3c-6b2f-4e8a-b5c4-2d0f1e3a7b65"
	cert := appCert(t)
	unregistered := newCert(t, otherKey(), t0.Add(-time.Hour), t0.AddDate(1, 0, 0))
	expired := newCert(t, appKey(), t0.AddDate(-1, 0, 0), t0.Add(-time.Minute))
	tests := []struct {
		name        string
		certs       []*x509.Certificate // registered on the app; nil: cert
		assertion   func(t *testing.T, base string) string
		status      int
		err         string
		code        int
		description string
	}{
		{
			name: "certificate not registered on the app",
			assertion: func(t *testing.T, base string) string {
				return sign(t, otherKey(), jose.PS256, "", s256Header(unregistered), certClaims(base, tenantID))
			},
			status: http.StatusUnauthorized, err: "invalid_client", code: 700027,
			description: "The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found.",
		},
		{
			name: "SHA-1 thumbprint of a certificate not registered",
			assertion: func(t *testing.T, base string) string {
				return sign(t, otherKey(), jose.RS256, "", sha1Header(unregistered), certClaims(base, tenantID))
			},
			status: http.StatusUnauthorized, err: "invalid_client", code: 700027,
			description: "Thumbprint of key used by client: '" + upperHex(unregistered) + "'",
		},
		{
			name: "signed with another key than the certificate's",
			assertion: func(t *testing.T, base string) string {
				return sign(t, otherKey(), jose.PS256, "", s256Header(cert), certClaims(base, tenantID))
			},
			status: http.StatusUnauthorized, err: "invalid_client", code: 700027,
			description: "Client assertion contains an invalid signature. [Reason - The provided signature value did not match the expected signature value., " +
				"Thumbprint of key used by client: '" + upperHex(cert) + "'",
		},
		{
			name:  "certificate expired",
			certs: []*x509.Certificate{expired},
			assertion: func(t *testing.T, base string) string {
				return sign(t, appKey(), jose.PS256, "", s256Header(expired), certClaims(base, tenantID))
			},
			status: http.StatusUnauthorized, err: "invalid_client", code: 700027,
			description: "[Reason - The key used is expired.",
		},
		{
			name: "no thumbprint in the header",
			assertion: func(t *testing.T, base string) string {
				return sign(t, appKey(), jose.PS256, "", nil, certClaims(base, tenantID))
			},
			status: http.StatusUnauthorized, err: "invalid_client", code: 50027,
			description: "Invalid JWT token. No certificate thumbprint specified in token header.",
		},
		{
			name: "algorithm other than PS256 and RS256",
			assertion: func(t *testing.T, base string) string {
				return sign(t, appKey(), jose.RS384, "", s256Header(cert), certClaims(base, tenantID))
			},
			status: http.StatusUnauthorized, err: "invalid_client", code: 50027,
			description: "JWT token is invalid or malformed.",
		},
		{
			name:      "not a JWT",
			assertion: func(*testing.T, string) string { return "not-a-jwt" },
			status:    http.StatusUnauthorized, err: "invalid_client", code: 50027,
			description: "JWT token is invalid or malformed.",
		},
		{
			name: "aud of another tenant",
			assertion: func(t *testing.T, base string) string {
				return sign(t, appKey(), jose.PS256, "", s256Header(cert), certClaims(base, otherTenant))
			},
			status: http.StatusUnauthorized, err: "invalid_client", code: 700023,
			description: "Client assertion audience claim does not match Realm issuer.",
		},
		{
			name: "aud of sts.windows.net",
			assertion: func(t *testing.T, _ string) string {
				c := certClaims("", tenantID)
				c.Audience = jwt.Audience{"https://sts.windows.net/" + tenantID + "/"}
				return sign(t, appKey(), jose.PS256, "", s256Header(cert), c)
			},
			status: http.StatusUnauthorized, err: "invalid_client", code: 700023,
			description: "Client assertion audience claim does not match Realm issuer.",
		},
		{
			name: "sub is not the client ID",
			assertion: func(t *testing.T, base string) string {
				c := certClaims(base, tenantID)
				c.Subject = "11111111-2222-3333-4444-555555555555"
				return sign(t, appKey(), jose.PS256, "", s256Header(cert), c)
			},
			status: http.StatusUnauthorized, err: "invalid_client", code: 700021,
			description: "Client assertion application identifier doesn't match 'client_id' parameter.",
		},
		{
			name: "iss is not the client ID",
			assertion: func(t *testing.T, base string) string {
				c := certClaims(base, tenantID)
				c.Issuer = "11111111-2222-3333-4444-555555555555"
				return sign(t, appKey(), jose.PS256, "", s256Header(cert), c)
			},
			status: http.StatusUnauthorized, err: "invalid_client", code: 700021,
			description: "Client assertion application identifier doesn't match 'client_id' parameter.",
		},
		{
			name: "expired assertion",
			assertion: func(t *testing.T, base string) string {
				c := certClaims(base, tenantID)
				c.NotBefore, c.Expiry = jwt.NewNumericDate(t0.Add(-20*time.Minute)), jwt.NewNumericDate(t0.Add(-10*time.Minute))
				return sign(t, appKey(), jose.PS256, "", s256Header(cert), c)
			},
			status: http.StatusBadRequest, err: "invalid_client", code: 700024,
			description: "Client assertion is not within its valid time range. Current time: 2026-11-21T12:00:00.0000000Z, " +
				"assertion valid from 2026-11-21T11:40:00.0000000Z, expiry time of assertion 2026-11-21T11:50:00.0000000Z. " +
				"Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
		},
		{
			name: "assertion without exp",
			assertion: func(t *testing.T, base string) string {
				c := certClaims(base, tenantID)
				c.Expiry = nil
				return sign(t, appKey(), jose.PS256, "", s256Header(cert), c)
			},
			status: http.StatusBadRequest, err: "invalid_client", code: 700024,
			description: "expiry time of assertion 1970-01-01T00:00:00.0000000Z.",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			certs := tc.certs
			if certs == nil {
				certs = []*x509.Certificate{cert}
			}
			f.emu.SetCertificates(clientID, certs...)
			assertion := tc.assertion(t, f.srv.URL)
			resp := f.post(t, v2Path(tenantID), assertionForm(assertion))

			if resp.status != tc.status {
				t.Errorf("status = %d, want %d", resp.status, tc.status)
			}
			got := assertEntraError(t, resp, tc.err, tc.code)
			if !strings.Contains(got.Description, tc.description) {
				t.Errorf("error_description = %q, want it to contain %q", got.Description, tc.description)
			}
			if strings.Contains(string(resp.body), assertion) {
				t.Errorf("the error body echoes the assertion: %s", resp.body)
			}
		})
	}
}

// upperHex is a certificate's SHA-1 thumbprint as the Entra portal shows it.
func upperHex(c *x509.Certificate) string {
	sum := sha1.Sum(c.Raw) //nolint:gosec // see the import
	return strings.ToUpper(hex.EncodeToString(sum[:]))
}

func TestAssertionTimesAllowFiveMinutesOfClockSkew(t *testing.T) {
	tests := []struct {
		name   string
		nbf    time.Duration // from the emulator's clock
		exp    time.Duration
		wantOK bool
	}{
		{name: "valid now", nbf: -time.Minute, exp: 9 * time.Minute, wantOK: true},
		{name: "expired four minutes ago", nbf: -14 * time.Minute, exp: -4 * time.Minute, wantOK: true},
		{name: "expired six minutes ago", nbf: -16 * time.Minute, exp: -6 * time.Minute},
		{name: "valid in four minutes", nbf: 4 * time.Minute, exp: 14 * time.Minute, wantOK: true},
		{name: "valid in six minutes", nbf: 6 * time.Minute, exp: 16 * time.Minute},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			cert := appCert(t)
			f.emu.AddCertificate(clientID, cert)
			now := t0.Add(3 * time.Hour)
			f.clock.SetTime(now)
			c := certClaims(f.srv.URL, tenantID)
			c.NotBefore, c.IssuedAt, c.Expiry = jwt.NewNumericDate(now.Add(tc.nbf)), jwt.NewNumericDate(now.Add(tc.nbf)), jwt.NewNumericDate(now.Add(tc.exp))

			resp := f.post(t, v2Path(tenantID), assertionForm(sign(t, appKey(), jose.PS256, "", s256Header(cert), c)))
			if got := resp.status == http.StatusOK; got != tc.wantOK {
				t.Fatalf("status = %d, body %s; want a token: %v", resp.status, resp.body, tc.wantOK)
			}
			if !tc.wantOK {
				var body entraError
				if err := json.Unmarshal(resp.body, &body); err != nil || len(body.Codes) != 1 || body.Codes[0] != 700024 {
					t.Errorf("body = %s, want AADSTS700024", resp.body)
				}
			}
		})
	}
}

func TestClientCredentialChoice(t *testing.T) {
	tests := []struct {
		name        string
		form        func(assertion string) url.Values
		err         string
		code        int // 0: an Entra error without an AADSTS code
		description string
	}{
		{
			name: "neither secret nor assertion",
			form: func(string) url.Values {
				return url.Values{"grant_type": {"client_credentials"}, "client_id": {clientID}, "scope": {xdrScope}}
			},
			err: "invalid_client", code: 7000218,
			description: "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
		},
		{
			name: "client_assertion_type without client_assertion",
			form: func(string) url.Values {
				form := assertionForm("")
				form.Del("client_assertion")
				return form
			},
			err: "invalid_client", code: 7000218,
			description: "'client_assertion' or 'client_secret'",
		},
		{
			name: "client_assertion without client_assertion_type",
			form: func(a string) url.Values {
				form := assertionForm(a)
				form.Del("client_assertion_type")
				return form
			},
			err: "invalid_request", code: 900144,
			description: "The request body must contain the following parameter: 'client_assertion_type'.",
		},
		{
			name: "unknown client_assertion_type",
			form: func(a string) url.Values {
				return assertionForm(a, "client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:saml2-bearer")
			},
			err:         "invalid_request",
			description: "client_assertion_type 'urn:ietf:params:oauth:client-assertion-type:saml2-bearer' is not supported",
		},
		{
			name:        "both secret and assertion",
			form:        func(a string) url.Values { return assertionForm(a, "client_secret", secret) },
			err:         "invalid_request",
			description: "must not contain both 'client_secret' and 'client_assertion'",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			cert := appCert(t)
			f.emu.AddCertificate(clientID, cert)
			resp := f.post(t, v2Path(tenantID), tc.form(sign(t, appKey(), jose.PS256, "", s256Header(cert), certClaims(f.srv.URL, tenantID))))

			want := http.StatusBadRequest
			if tc.err == "invalid_client" {
				want = http.StatusUnauthorized
			}
			if resp.status != want {
				t.Errorf("status = %d, want %d", resp.status, want)
			}
			var got entraError
			if tc.code != 0 {
				got = assertEntraError(t, resp, tc.err, tc.code)
			} else if err := json.Unmarshal(resp.body, &got); err != nil || got.Error != tc.err || len(got.Codes) != 0 {
				t.Errorf("body = %s, want error %q without error_codes", resp.body, tc.err)
			}
			if !strings.Contains(got.Description, tc.description) {
				t.Errorf("error_description = %q, want it to contain %q", got.Description, tc.description)
			}
		})
	}
}

func TestCertificateRotation(t *testing.T) {
	f := newFixture(t)
	oldCert, newCert := appCert(t), newCert(t, otherKey(), t0.Add(-time.Hour), t0.AddDate(1, 0, 0))
	withOld := func() url.Values {
		return assertionForm(sign(t, appKey(), jose.PS256, "", s256Header(oldCert), certClaims(f.srv.URL, tenantID)))
	}
	withNew := func() url.Values {
		return assertionForm(sign(t, otherKey(), jose.PS256, "", s256Header(newCert), certClaims(f.srv.URL, tenantID)))
	}

	f.emu.AddCertificate(clientID, oldCert)
	f.emu.AddCertificate(clientID, newCert)
	f.token(t, v2Path(tenantID), withOld())
	f.token(t, v2Path(tenantID), withNew())
	f.token(t, v2Path(tenantID), creds("scope", xdrScope)) // the secret still works beside certificates

	f.emu.SetCertificates(clientID, newCert)
	f.token(t, v2Path(tenantID), withNew())
	assertEntraError(t, f.post(t, v2Path(tenantID), withOld()), "invalid_client", 700027)
}

func TestFederatedAssertionGetsAToken(t *testing.T) {
	const secondTenant = "3f2b8c1d-5a4e-4b7f-8c2d-1e9a6b5c4d30"
	tests := []struct {
		name  string
		setup func(*entraemu.Emulator)
		alg   jose.SignatureAlgorithm
	}{
		{name: "keys set once", setup: func(*entraemu.Emulator) {}, alg: jose.RS256},
		{name: "PS256 signature", setup: func(*entraemu.Emulator) {}, alg: jose.PS256},
		{
			name: "credential with the default audience",
			setup: func(e *entraemu.Emulator) {
				e.SetFederatedCredentials(clientID, entraemu.FederatedCredential{Issuer: saIssuer, Subject: saSubject})
			},
			alg: jose.RS256,
		},
		{
			name: "one of several credentials",
			setup: func(e *entraemu.Emulator) {
				e.SetFederatedCredentials(clientID,
					entraemu.FederatedCredential{Issuer: "https://token.actions.githubusercontent.com", Subject: "repo:o/r:ref:refs/heads/main"},
					entraemu.FederatedCredential{Issuer: saIssuer, Subject: "system:serviceaccount:other:other"},
					entraemu.FederatedCredential{Issuer: saIssuer, Subject: saSubject, Audience: saAudience})
			},
			alg: jose.RS256,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := federatedFixture(t)
			tc.setup(f.emu)
			f.emu.Grant(secondTenant, clientID, xdrAPI, "Incident.Read.All")
			assertion := sign(t, issuerKey(), tc.alg, saKeyID, nil, saClaims())

			// A multi-tenant app's federated credential works in every consented tenant.
			for _, tenant := range []string{tenantID, secondTenant} {
				_, c, _ := f.verify(t, f.token(t, v2Path(tenant), assertionForm(assertion)))
				if c.AppID != clientID || c.AppIDACR != "2" || c.Tid != tenant {
					t.Errorf("appid, appidacr, tid = %q, %q, %q; want %q, 2, %q", c.AppID, c.AppIDACR, c.Tid, clientID, tenant)
				}
			}
		})
	}
}

func TestFederatedIssuerKeysComeFromTheSource(t *testing.T) {
	f := newFixture(t)
	f.emu.AddFederatedCredential(clientID, entraemu.FederatedCredential{Issuer: saIssuer, Subject: saSubject})
	var calls atomic.Int32
	var keys atomic.Value
	keys.Store(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &otherKey().PublicKey, KeyID: "old-key"}}})
	f.emu.SetIssuerKeySource(saIssuer, func(ctx context.Context) (jose.JSONWebKeySet, error) {
		calls.Add(1)
		if ctx == nil {
			return jose.JSONWebKeySet{}, errors.New("no context")
		}
		return keys.Load().(jose.JSONWebKeySet), nil
	})
	form := assertionForm(sign(t, issuerKey(), jose.RS256, saKeyID, nil, saClaims()))

	// The issuer has not published the key yet, then rotates to it.
	assertEntraError(t, f.post(t, v2Path(tenantID), form), "invalid_client", 7000272)
	keys.Store(issuerKeySet())
	f.token(t, v2Path(tenantID), form)
	if n := calls.Load(); n != 2 {
		t.Errorf("the key source was called %d times, want once per request", n)
	}
}

func TestFederatedAssertionErrors(t *testing.T) {
	tests := []struct {
		name        string
		setup       func(*entraemu.Emulator)
		assertion   func(t *testing.T) string
		status      int
		err         string
		code        int
		description string
	}{
		{
			name:      "app without federated credentials",
			setup:     func(e *entraemu.Emulator) { e.SetFederatedCredentials(clientID) },
			assertion: func(t *testing.T) string { return sign(t, issuerKey(), jose.RS256, saKeyID, nil, saClaims()) },
			status:    http.StatusUnauthorized, err: "invalid_client", code: 70021,
			description: "No matching federated identity record found for presented assertion. Assertion Issuer: '" + saIssuer +
				"'. Assertion Subject: '" + saSubject + "'. Assertion Audience: '" + saAudience + "'.",
		},
		{
			name: "no credential of the issuer",
			setup: func(e *entraemu.Emulator) {
				e.SetFederatedCredentials(clientID, entraemu.FederatedCredential{Issuer: "https://oidc.example/other", Subject: saSubject})
			},
			assertion: func(t *testing.T) string { return sign(t, issuerKey(), jose.RS256, saKeyID, nil, saClaims()) },
			status:    http.StatusUnauthorized, err: "invalid_client", code: 700211,
			description: "No matching federated identity record found for presented assertion issuer '" + saIssuer + "'. " +
				"Check your federated identity credential Subject, Audience and Issuer against the presented assertion.",
		},
		{
			name: "issuer matching only without regard to case",
			setup: func(e *entraemu.Emulator) {
				e.SetFederatedCredentials(clientID, entraemu.FederatedCredential{Issuer: strings.ToUpper(saIssuer), Subject: saSubject})
			},
			assertion: func(t *testing.T) string { return sign(t, issuerKey(), jose.RS256, saKeyID, nil, saClaims()) },
			status:    http.StatusUnauthorized, err: "invalid_client", code: 700211,
			description: "presented assertion issuer '" + saIssuer + "'",
		},
		{
			name:      "issuer keys unknown",
			setup:     func(e *entraemu.Emulator) { e.SetIssuerKeySource(saIssuer, nil) },
			assertion: func(t *testing.T) string { return sign(t, issuerKey(), jose.RS256, saKeyID, nil, saClaims()) },
			status:    http.StatusUnauthorized, err: "invalid_client", code: 7000272,
			description: "The certificate with identifier " + saKeyID + " used to sign the federated credential could not be found " +
				"in the metadata of identity provider " + saIssuer + ".",
		},
		{
			name: "issuer keys unreachable",
			setup: func(e *entraemu.Emulator) {
				e.SetIssuerKeySource(saIssuer, func(context.Context) (jose.JSONWebKeySet, error) {
					return jose.JSONWebKeySet{}, errors.New("connection refused")
				})
			},
			assertion: func(t *testing.T) string { return sign(t, issuerKey(), jose.RS256, saKeyID, nil, saClaims()) },
			status:    http.StatusUnauthorized, err: "invalid_client", code: 7000272,
			description: "could not be found in the metadata of identity provider " + saIssuer,
		},
		{
			name:      "kid not published by the issuer",
			assertion: func(t *testing.T) string { return sign(t, issuerKey(), jose.RS256, "unknown-kid", nil, saClaims()) },
			status:    http.StatusUnauthorized, err: "invalid_client", code: 7000272,
			description: "The certificate with identifier unknown-kid used to sign",
		},
		{
			name:      "signed with another key under the published kid",
			assertion: func(t *testing.T) string { return sign(t, otherKey(), jose.RS256, saKeyID, nil, saClaims()) },
			status:    http.StatusUnauthorized, err: "invalid_client", code: 700027,
			description: "Client assertion failed signature validation.",
		},
		{
			name: "another subject",
			assertion: func(t *testing.T) string {
				c := saClaims()
				c.Subject = "system:serviceaccount:defender-tenant-operator-system:other"
				return sign(t, issuerKey(), jose.RS256, saKeyID, nil, c)
			},
			status: http.StatusUnauthorized, err: "invalid_client", code: 700213,
			description: "No matching federated identity record found for presented assertion subject " +
				"'system:serviceaccount:defender-tenant-operator-system:other'. Check your federated identity credential",
		},
		{
			name: "subject matching only without regard to case",
			assertion: func(t *testing.T) string {
				c := saClaims()
				c.Subject = strings.ToUpper(saSubject)
				return sign(t, issuerKey(), jose.RS256, saKeyID, nil, c)
			},
			status: http.StatusUnauthorized, err: "invalid_client", code: 7002138,
			description: "The subject matches with case-insensitive comparison, but not with case-sensitive comparison.",
		},
		{
			name: "another audience",
			assertion: func(t *testing.T) string {
				c := saClaims()
				c.Audience = jwt.Audience{"https://kubernetes.default.svc"}
				return sign(t, issuerKey(), jose.RS256, saKeyID, nil, c)
			},
			status: http.StatusUnauthorized, err: "invalid_client", code: 700212,
			description: "No matching federated identity record found for presented assertion audience 'https://kubernetes.default.svc'.",
		},
		{
			name: "audience matching only without regard to case",
			assertion: func(t *testing.T) string {
				c := saClaims()
				c.Audience = jwt.Audience{strings.ToLower(saAudience)}
				return sign(t, issuerKey(), jose.RS256, saKeyID, nil, c)
			},
			status: http.StatusUnauthorized, err: "invalid_client", code: 700212,
			description: "presented assertion audience 'api://azureadtokenexchange'",
		},
		{
			name: "expired token",
			assertion: func(t *testing.T) string {
				c := saClaims()
				c.NotBefore, c.Expiry = jwt.NewNumericDate(t0.Add(-time.Hour)), jwt.NewNumericDate(t0.Add(-50*time.Minute))
				return sign(t, issuerKey(), jose.RS256, saKeyID, nil, c)
			},
			status: http.StatusBadRequest, err: "invalid_client", code: 700024,
			description: "Client assertion is not within its valid time range.",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := federatedFixture(t)
			if tc.setup != nil {
				tc.setup(f.emu)
			}
			resp := f.post(t, v2Path(tenantID), assertionForm(tc.assertion(t)))

			if resp.status != tc.status {
				t.Errorf("status = %d, want %d", resp.status, tc.status)
			}
			got := assertEntraError(t, resp, tc.err, tc.code)
			if !strings.Contains(got.Description, tc.description) {
				t.Errorf("error_description = %q, want it to contain %q", got.Description, tc.description)
			}
		})
	}
}

func TestAssertionCredentialsComeBeforeConsent(t *testing.T) {
	const unconsented = "9a1d7e3c-6b2f-4e8a-b5c4-2d0f1e3a7b65"
	f := federatedFixture(t)
	f.emu.AddTenant(unconsented)

	bad := sign(t, otherKey(), jose.RS256, saKeyID, nil, saClaims())
	assertEntraError(t, f.post(t, v2Path(unconsented), assertionForm(bad)), "invalid_client", 700027)
	good := sign(t, issuerKey(), jose.RS256, saKeyID, nil, saClaims())
	assertEntraError(t, f.post(t, v2Path(unconsented), assertionForm(good)), "invalid_client", 7000229)
}
