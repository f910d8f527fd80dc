package entra_test

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
)

const (
	rollHomeTenant = "2f1b0c4d-7a6e-4b3c-9d8e-1f0a2b3c4d5e"
	rollClientID   = "0b9f7c55-8a3e-4d2a-9c61-5f0e7d3b2a10"
	rollObjectID   = "7d3c5a9e-1b2c-4d3e-8f4a-5b6c7d8e9f01"
)

var rollT0 = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

// rollFixture is an app registered in the emulator with one generated certificate.
type rollFixture struct {
	emu     *entraemu.Emulator
	clock   *clocktesting.FakePassiveClock
	login   string
	graph   string
	current *entra.Certificate
	leaf    *x509.Certificate
}

func newRollFixture(t *testing.T) *rollFixture {
	t.Helper()
	clock := clocktesting.NewFakePassiveClock(rollT0)
	emu, err := entraemu.New(entraemu.Options{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	emu.RegisterApplication(entraemu.Application{ObjectID: rollObjectID, ClientID: rollClientID, HomeTenantID: rollHomeTenant})
	current, leaf := generate(t, rollT0)
	emu.AddCertificate(rollClientID, leaf)
	login := httptest.NewServer(emu)
	t.Cleanup(login.Close)
	graph := httptest.NewServer(emu.Graph(v1alpha1.CloudPublic))
	t.Cleanup(graph.Close)
	return &rollFixture{emu: emu, clock: clock, login: login.URL, graph: graph.URL, current: current, leaf: leaf}
}

// generate makes a certificate valid for 90 days from now, and its leaf as x509
// reads the PEM, independently of the entra package.
func generate(t *testing.T, now time.Time) (*entra.Certificate, *x509.Certificate) {
	t.Helper()
	cert, certPEM, keyPEM, err := entra.GenerateCertificate("partner-app", now.Add(-time.Hour), now.Add(90*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := entra.ParseCertificate(certPEM, keyPEM); err != nil {
		t.Fatalf("a generated certificate does not parse as a credential: %v", err)
	}
	return cert, leaf
}

func (f *rollFixture) graphToken(t *testing.T, cert *entra.Certificate) string {
	t.Helper()
	c := entra.Client{Clock: f.clock}
	tok, err := c.RequestToken(context.Background(), entra.Request{
		AuthorityHost: f.login, TenantID: rollHomeTenant, ClientID: rollClientID, Credential: cert, Resource: entra.GraphResource(v1alpha1.CloudPublic),
	})
	if err != nil {
		t.Fatalf("Graph token: %v", err)
	}
	return tok.AccessToken
}

func (f *rollFixture) request(t *testing.T, proving *entra.Certificate) entra.KeyRequest {
	t.Helper()
	return entra.KeyRequest{GraphHost: f.graph, ObjectID: rollObjectID, AccessToken: f.graphToken(t, proving), Proving: proving}
}

func TestGraphClientRollsTheAppsKey(t *testing.T) {
	f := newRollFixture(t)
	client := entra.GraphClient{Clock: f.clock}
	next, nextLeaf := generate(t, rollT0)

	keyID, err := client.AddKey(context.Background(), f.request(t, f.current), next)
	if err != nil {
		t.Fatalf("AddKey: %v", err)
	}
	keys := f.emu.KeyCredentials(rollClientID)
	if len(keys) != 2 || keys[1].KeyID != keyID || keys[1].NotAfter != nextLeaf.NotAfter {
		t.Fatalf("after AddKey returned %s: key credentials %+v", keyID, keys)
	}
	if err := client.RemoveKey(context.Background(), f.request(t, next), keys[0].KeyID); err != nil {
		t.Fatalf("RemoveKey: %v", err)
	}
	if keys := f.emu.KeyCredentials(rollClientID); len(keys) != 1 || keys[0].KeyID != keyID {
		t.Fatalf("after RemoveKey: key credentials %+v", keys)
	}
}

func TestGraphClientFailures(t *testing.T) {
	tests := []struct {
		name        string
		failure     entraemu.GraphFailure
		wantStatus  int
		wantCode    string
		needsPerson bool
	}{
		{"forbidden", entraemu.GraphForbidden(), 403, "Authorization_RequestDenied", true},
		{"unknown object", entraemu.GraphNotFound(rollObjectID), 404, "Request_ResourceNotFound", true},
		{"rejected proof", entraemu.GraphBadProof(), 401, "Authentication_MissingOrMalformed", true},
		{"throttled", entraemu.GraphFailure{Status: 429, Code: "TooManyRequests", Message: "Too many requests."}, 429, "TooManyRequests", false},
		{"server error", entraemu.GraphFailure{Status: 503, Code: "serviceNotAvailable", Message: "Try later."}, 503, "serviceNotAvailable", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newRollFixture(t)
			f.emu.SetGraphFailure(rollObjectID, tt.failure)
			next, _ := generate(t, rollT0)
			req := f.request(t, f.current)
			_, err := (&entra.GraphClient{Clock: f.clock}).AddKey(context.Background(), req, next)
			var gerr *entra.GraphError
			if !errors.As(err, &gerr) {
				t.Fatalf("AddKey: %v, want a *GraphError", err)
			}
			if gerr.Status != tt.wantStatus || gerr.Code != tt.wantCode || gerr.NeedsPerson() != tt.needsPerson || gerr.RequestID == "" {
				t.Fatalf("AddKey: %#v (needs a person: %v)", gerr, gerr.NeedsPerson())
			}
			if strings.Contains(err.Error(), req.AccessToken) || strings.Contains(err.Error(), "eyJ") {
				t.Fatalf("the error quotes a token: %s", err)
			}
			if keys := f.emu.KeyCredentials(rollClientID); len(keys) != 1 {
				t.Fatalf("a failed AddKey left %d keys", len(keys))
			}
		})
	}
}

// A proxy that echoes the request (token and proof included) into a long error,
// or redirects elsewhere, costs nothing: the error is scrubbed and short, and the
// redirect is not followed with the token.
func TestGraphClientAgainstAHostileHost(t *testing.T) {
	f := newRollFixture(t)
	var redirected bool
	target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { redirected = true }))
	t.Cleanup(target.Close)
	var sawProof string
	hostile := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/removeKey") {
			http.Redirect(w, r, target.URL, http.StatusTemporaryRedirect)
			return
		}
		buf := make([]byte, 4096)
		n, _ := r.Body.Read(buf)
		body := string(buf[:n])
		sawProof = body
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = fmt.Fprintf(w, `{"error":{"code":"echo","message":"%s %s %s"}}`, r.Header.Get("Authorization"),
			strings.ReplaceAll(body, `"`, `'`), strings.Repeat("x", 30<<10))
	}))
	t.Cleanup(hostile.Close)
	req := f.request(t, f.current)
	req.GraphHost = hostile.URL
	next, _ := generate(t, rollT0)
	_, err := (&entra.GraphClient{Clock: f.clock}).AddKey(context.Background(), req, next)
	if err == nil || sawProof == "" {
		t.Fatalf("AddKey: %v", err)
	}
	msg := err.Error()
	if strings.Contains(msg, req.AccessToken) || strings.Contains(msg, "eyJ") || len(msg) > 400 {
		t.Fatalf("the error quotes the request or is unbounded (%d bytes): %.300s", len(msg), msg)
	}
	if err := (&entra.GraphClient{Clock: f.clock}).RemoveKey(context.Background(), req, "00000000-0000-4000-8000-000000000000"); err == nil || redirected {
		t.Fatalf("RemoveKey through a redirect: err %v, followed %v", err, redirected)
	}
}

func TestGeneratedCertificate(t *testing.T) {
	notBefore, notAfter := rollT0.Add(-time.Hour), rollT0.Add(2160*time.Hour)
	_, certPEM, keyPEM, err := entra.GenerateCertificate("partner-app", notBefore, notAfter)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pub, ok := leaf.PublicKey.(*rsa.PublicKey)
	if !ok || pub.N.BitLen() != 2048 || !leaf.NotBefore.Equal(notBefore) || !leaf.NotAfter.Equal(notAfter) || leaf.Subject.CommonName != "partner-app" {
		t.Fatalf("generated certificate: %T %d bits, %s to %s, %s", leaf.PublicKey, pub.N.BitLen(), leaf.NotBefore, leaf.NotAfter, leaf.Subject)
	}
	if err := leaf.CheckSignature(leaf.SignatureAlgorithm, leaf.RawTBSCertificate, leaf.Signature); err != nil {
		t.Fatalf("not self-signed: %v", err)
	}
	if keyBlock, _ := pem.Decode(keyPEM); keyBlock == nil || keyBlock.Type != "PRIVATE KEY" {
		t.Fatalf("tls.key is not a PKCS#8 PEM key")
	}
}

func TestGraphHosts(t *testing.T) {
	var none entra.GraphHosts
	for cloud, want := range map[v1alpha1.Cloud]string{
		"":                      "https://graph.microsoft.com",
		v1alpha1.CloudPublic:    "https://graph.microsoft.com",
		v1alpha1.CloudUSGov:     "https://graph.microsoft.com",
		v1alpha1.CloudUSGovHigh: "https://graph.microsoft.us",
		v1alpha1.CloudDoD:       "https://dod-graph.microsoft.us",
	} {
		if got := none.Host(cloud); got != want {
			t.Errorf("Host(%q) = %s, want %s", cloud, got, want)
		}
	}
	all, err := entra.ParseGraphHosts("http://127.0.0.1:8080/")
	if err != nil || all.Host(v1alpha1.CloudDoD) != "http://127.0.0.1:8080" {
		t.Errorf("one URL: %v, %v", all, err)
	}
	some, err := entra.ParseGraphHosts("USGovHigh=https://graph-proxy.example, DoD=https://dod-proxy.example")
	if err != nil || some.Host(v1alpha1.CloudUSGovHigh) != "https://graph-proxy.example" ||
		some.Host(v1alpha1.CloudDoD) != "https://dod-proxy.example" || some.Host(v1alpha1.CloudPublic) != "https://graph.microsoft.com" {
		t.Errorf("per cloud: %v, %v", some, err)
	}
	for _, bad := range []string{"http://graph.example", "Mars=https://x.example", "Public=https://a.example,Public=https://b.example", "https://u:p@x.example", ""} {
		if _, err := entra.ParseGraphHosts(bad); err == nil {
			t.Errorf("ParseGraphHosts(%q) accepted", bad)
		}
	}
}

// A host that echoes only a part of the bearer token or of the proof (a JWT's
// payload, its signature) gets neither into the error: each part long enough to
// matter is scrubbed, as for the token endpoint's assertions.
func TestGraphClientScrubsPartsOfTheTokenAndProof(t *testing.T) {
	f := newRollFixture(t)
	var parts []string
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Proof string `json:"proof"`
		}
		_ = json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&body)
		token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		parts = slices.Concat(strings.Split(token, ".")[1:], strings.Split(body.Proof, ".")[1:])
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = fmt.Fprintf(w, `{"error":{"code":"echo","message":"payload %s sig %s proof %s sig %s"}}`, parts[0], parts[1], parts[2], parts[3])
	}))
	t.Cleanup(echo.Close)
	req := f.request(t, f.current)
	req.GraphHost = echo.URL
	next, _ := generate(t, rollT0)
	_, err := (&entra.GraphClient{Clock: f.clock}).AddKey(context.Background(), req, next)
	if err == nil || len(parts) != 4 {
		t.Fatalf("AddKey: %v (parts seen %d)", err, len(parts))
	}
	if !strings.Contains(err.Error(), "payload") {
		t.Fatalf("error %q does not carry the host's message at all", err)
	}
	// The message is cut to a bounded length, so a part shows, if at all, by its
	// beginning.
	for _, p := range parts {
		if strings.Contains(err.Error(), p[:16]) {
			t.Errorf("error quotes a part of the token or proof: %.200s", err)
		}
	}
}
