package defendertenant

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
)

// secondClientID is another multi-tenant app registration, consented in the
// harness's tenant like the first.
const secondClientID = "7c1e4b2a-9d3f-4e8a-b6c5-2a1f0e9d8c7b"

// gccDefenderAPI is the Defender XDR API of the USGov (GCC) cloud, its default
// resource in API.md's cloud table.
const gccDefenderAPI = "https://api-gcc.security.microsoft.us"

// sentTokenRequest is one token request as it reached Entra ID, and the access
// token it was answered with (empty when it was refused).
type sentTokenRequest struct {
	tenant          string
	clientID        string
	scope           string
	clientSecret    string
	clientAssertion string
	accessToken     string
}

// tokenRequestLog records every token request that passes through it to the emulator.
type tokenRequestLog struct {
	mu   sync.Mutex
	sent []sentTokenRequest
}

func (l *tokenRequestLog) through(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		form, _ := url.ParseQuery(string(body))
		rec := &answerRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		var answer struct {
			AccessToken string `json:"access_token"`
		}
		_ = json.Unmarshal(rec.body.Bytes(), &answer)
		l.mu.Lock()
		defer l.mu.Unlock()
		l.sent = append(l.sent, sentTokenRequest{
			tenant:          strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")[0],
			clientID:        form.Get("client_id"),
			scope:           form.Get("scope"),
			clientSecret:    form.Get("client_secret"),
			clientAssertion: form.Get("client_assertion"),
			accessToken:     answer.AccessToken,
		})
	})
}

func (l *tokenRequestLog) all() []sentTokenRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.sent)
}

// newLoggedHarness is newHarness with every token request recorded in the log it returns.
func newLoggedHarness(t *testing.T) (*harness, *tokenRequestLog) {
	t.Helper()
	t.Parallel()
	log := &tokenRequestLog{}
	return newHarnessServedThrough(t, log.through), log
}

// expectSent fails unless the log holds exactly want requests, and returns them.
func expectSent(t *testing.T, log *tokenRequestLog, want int) []sentTokenRequest {
	t.Helper()
	sent := log.all()
	if len(sent) != want {
		t.Fatalf("token requests sent = %d, want %d", len(sent), want)
	}
	return sent
}

// expectPublished fails unless the token Secret holds the token Entra ID answered
// the request with, and returns that token's claims.
func (h *harness) expectPublished(req sentTokenRequest) map[string]any {
	h.t.Helper()
	secret := h.tokenSecret(tenantName + "-token")
	if secret == nil {
		h.t.Fatal("no token Secret published")
	}
	published := string(secret.Data[v1alpha1.TokenSecretKeyAccessToken])
	if req.accessToken == "" || published != req.accessToken {
		h.t.Fatal("the token Secret does not hold the token the last request was answered with")
	}
	return tokenClaims(h.t, published)
}

// appNamed is the name of the harness's app of kind: ClusterDefenderApps are
// cluster-scoped, so theirs is unique per test.
func (h *harness) appNamed(kind v1alpha1.AppKind) string {
	if kind == v1alpha1.AppKindClusterDefenderApp {
		return h.clusterAppName()
	}
	return appName
}

// credentialNamespaceOf is where an app of kind keeps its credential.
func (h *harness) credentialNamespaceOf(kind v1alpha1.AppKind) string {
	if kind == v1alpha1.AppKindClusterDefenderApp {
		return h.crn
	}
	return h.ns
}

// createAppOfKind creates the harness's app of kind with spec, a ClusterDefenderApp
// granting the harness's namespace and tenant, and the tenant using it.
func (h *harness) createAppOfKind(kind v1alpha1.AppKind, spec v1alpha1.AppSpec) {
	h.t.Helper()
	if kind == v1alpha1.AppKindClusterDefenderApp {
		app := &v1alpha1.ClusterDefenderApp{
			ObjectMeta: metav1.ObjectMeta{Name: h.clusterAppName()},
			Spec: v1alpha1.ClusterDefenderAppSpec{
				AppSpec:      spec,
				TenantGrants: []v1alpha1.TenantGrant{{Namespaces: []string{h.ns}, TenantIDs: []string{testTenantID}}},
			},
		}
		if err := k8s.Create(h.ctx, app); err != nil {
			h.t.Fatal(err)
		}
		h.t.Cleanup(func() { _ = k8s.Delete(h.ctx, app) })
	} else {
		app := &v1alpha1.DefenderApp{ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: appName}, Spec: v1alpha1.DefenderAppSpec{AppSpec: spec}}
		if err := k8s.Create(h.ctx, app); err != nil {
			h.t.Fatal(err)
		}
	}
	h.createAppTenant(kind, h.appNamed(kind))
}

func (h *harness) updateAppSpec(kind v1alpha1.AppKind, mutate func(*v1alpha1.AppSpec)) {
	h.t.Helper()
	app := h.app(kind)
	mutate(app.AppSpec())
	if err := k8s.Update(h.ctx, app); err != nil {
		h.t.Fatal(err)
	}
}

// storeClientSecret stores the harness app's client secret where an app of kind
// keeps its credential.
func (h *harness) storeClientSecret(kind v1alpha1.AppKind) *corev1.Secret {
	h.t.Helper()
	return createCredentialIn(h.t, h.credentialNamespaceOf(kind), credentialName, map[string][]byte{v1alpha1.DefaultClientSecretKey: []byte(testClientSecret)})
}

func clientSecretAppSpec(cloud v1alpha1.Cloud) v1alpha1.AppSpec {
	return v1alpha1.AppSpec{ClientID: testClientID, Cloud: cloud, Credential: appClientSecretCredential()}
}

func TestClusterDefenderAppWithAClientSecretServesAGrantedTenant(t *testing.T) {
	h, log := newLoggedHarness(t)
	h.storeClientSecret(v1alpha1.AppKindClusterDefenderApp)
	h.createAppOfKind(v1alpha1.AppKindClusterDefenderApp, clientSecretAppSpec(""))
	h.reconcile()

	h.expectReady()
	h.expectRequests(1)
	sent := expectSent(t, log, 1)[0]
	if sent.clientID != testClientID || sent.clientSecret != testClientSecret || sent.clientAssertion != "" {
		t.Errorf("request sent client_id %q with a client_secret of %d bytes and an assertion of %d, want the app's client ID and secret",
			sent.clientID, len(sent.clientSecret), len(sent.clientAssertion))
	}
	if claims := h.expectPublished(sent); claims["appid"] != testClientID || claims["appidacr"] != "1" {
		t.Errorf("published token appid %v, appidacr %v; want %s minted with a client secret (\"1\")", claims["appid"], claims["appidacr"], testClientID)
	}
}

// appChange is a change of an app's spec after its tenant's first token, and what
// the token request that follows must carry.
type appChange struct {
	name string
	kind v1alpha1.AppKind
	// prepare makes Entra ID accept the changed app, as its admin would.
	prepare func(h *harness)
	change  func(spec *v1alpha1.AppSpec)
	expect  func(t *testing.T, sent sentTokenRequest, claims map[string]any)
}

var appChanges = []appChange{{
	name: "client ID",
	kind: v1alpha1.AppKindDefenderApp,
	prepare: func(h *harness) {
		h.entra.AddApp(secondClientID, entraemu.Secret{Value: testClientSecret})
		h.entra.Grant(testTenantID, secondClientID, defenderAPI, "Incident.Read.All", "AdvancedHunting.Read.All")
	},
	change: func(spec *v1alpha1.AppSpec) { spec.ClientID = secondClientID },
	expect: func(t *testing.T, sent sentTokenRequest, claims map[string]any) {
		if sent.clientID != secondClientID || claims["appid"] != secondClientID {
			t.Errorf("request client_id %q, token appid %v; want the new client ID %s", sent.clientID, claims["appid"], secondClientID)
		}
	},
}, {
	name: "cloud",
	kind: v1alpha1.AppKindDefenderApp,
	prepare: func(h *harness) {
		h.entra.SetCloud(testTenantID, v1alpha1.CloudUSGov)
		h.entra.Grant(testTenantID, testClientID, gccDefenderAPI, "Incident.Read.All", "AdvancedHunting.Read.All")
	},
	change: func(spec *v1alpha1.AppSpec) { spec.Cloud = v1alpha1.CloudUSGov },
	expect: func(t *testing.T, sent sentTokenRequest, claims map[string]any) {
		if sent.scope != gccDefenderAPI+"/.default" || claims["aud"] != gccDefenderAPI {
			t.Errorf("request scope %q, token aud %v; want the GCC Defender API %s", sent.scope, claims["aud"], gccDefenderAPI)
		}
	},
}}

// credentialKindChanges: client secret to certificate, for both kinds of app.
func credentialKindChanges() []appChange {
	kinds := []v1alpha1.AppKind{v1alpha1.AppKindDefenderApp, v1alpha1.AppKindClusterDefenderApp}
	changes := make([]appChange, 0, len(kinds))
	for _, kind := range kinds {
		changes = append(changes, appChange{
			name: "credential kind of a " + string(kind),
			kind: kind,
			prepare: func(h *harness) {
				c := h.validCertificate()
				h.entra.AddCertificate(testClientID, c.cert)
				h.storeCertificate(h.credentialNamespaceOf(kind), c)
			},
			change: func(spec *v1alpha1.AppSpec) { spec.Credential = certCredential() },
			expect: func(t *testing.T, sent sentTokenRequest, claims map[string]any) {
				if sent.clientSecret != "" || sent.clientAssertion == "" || claims["appidacr"] != "2" {
					t.Errorf("request sent a client_secret of %d bytes and an assertion of %d, token appidacr %v; want a certificate assertion only",
						len(sent.clientSecret), len(sent.clientAssertion), claims["appidacr"])
				}
			},
		})
	}
	return changes
}

func TestAppSpecChangeMintsWithTheNewInputs(t *testing.T) {
	for _, tt := range append(slices.Clone(appChanges), credentialKindChanges()...) {
		t.Run(tt.name, func(t *testing.T) {
			h, log := newLoggedHarness(t)
			h.storeClientSecret(tt.kind)
			h.createAppOfKind(tt.kind, clientSecretAppSpec(""))
			h.reconcile()
			h.expectReady()
			first := expectSent(t, log, 1)[0]
			h.expectPublished(first)

			tt.prepare(h)
			h.updateAppSpec(tt.kind, tt.change)
			h.clock.Step(time.Minute)
			h.reconcile()

			h.expectReady()
			second := expectSent(t, log, 2)[1]
			claims := h.expectPublished(second)
			if second.accessToken == first.accessToken {
				t.Error("the token minted before the change is still the one published")
			}
			tt.expect(t, second, claims)
		})
	}
}

func TestAppClientSecretRotationMintsWithTheNewSecret(t *testing.T) {
	const rotated = "r0tated~secret.for-tests_fedcba9876543210"
	for _, kind := range []v1alpha1.AppKind{v1alpha1.AppKindDefenderApp, v1alpha1.AppKindClusterDefenderApp} {
		t.Run(string(kind), func(t *testing.T) {
			h, log := newLoggedHarness(t)
			credential := h.storeClientSecret(kind)
			h.createAppOfKind(kind, clientSecretAppSpec(""))
			h.reconcile()
			h.expectReady()
			first := expectSent(t, log, 1)[0]

			// Entra ID accepts only the new secret from now on: a request with the old
			// one would fail and leave the tenant Stalled.
			h.entra.SetAppSecrets(testClientID, entraemu.Secret{Value: rotated})
			credential.Data = map[string][]byte{v1alpha1.DefaultClientSecretKey: []byte(rotated)}
			if err := k8s.Update(h.ctx, credential); err != nil {
				t.Fatal(err)
			}
			h.clock.Step(time.Minute)
			h.reconcile()

			h.expectReady()
			second := expectSent(t, log, 2)[1]
			if second.clientSecret != rotated {
				t.Errorf("the request after the rotation sent a client_secret of %d bytes, not the rotated one", len(second.clientSecret))
			}
			if h.expectPublished(second); second.accessToken == first.accessToken {
				t.Error("the token minted with the old secret is still the one published")
			}
			h.expectRequests(2)
		})
	}
}

// cloudListeners serves the harness's emulator on one listener per cloud, each
// behind its own log, as per-cloud --authority-host entries would reach it, and
// points the reconciler at them.
func (h *harness) cloudListeners() map[v1alpha1.Cloud]*tokenRequestLog {
	h.t.Helper()
	clouds := []v1alpha1.Cloud{v1alpha1.CloudPublic, v1alpha1.CloudUSGov, v1alpha1.CloudUSGovHigh, v1alpha1.CloudDoD}
	logs := map[v1alpha1.Cloud]*tokenRequestLog{}
	entries := make([]string, 0, len(clouds))
	for _, cloud := range clouds {
		logs[cloud] = &tokenRequestLog{}
		server := httptest.NewServer(logs[cloud].through(h.entra.Cloud(cloud)))
		h.t.Cleanup(server.Close)
		entries = append(entries, string(cloud)+"="+server.URL)
	}
	authorities, err := entra.ParseAuthorities(strings.Join(entries, ","))
	if err != nil {
		h.t.Fatal(err)
	}
	h.r.Authorities = authorities
	return logs
}

func TestAppRefTenantUsesTheAppsCloud(t *testing.T) {
	// API.md's cloud table: authority host and default resource.
	for _, tt := range []struct {
		kind        v1alpha1.AppKind
		cloud       v1alpha1.Cloud
		consentHost string
		resource    string
	}{
		{v1alpha1.AppKindDefenderApp, v1alpha1.CloudUSGovHigh, "https://login.microsoftonline.us/", govDefenderAPI},
		{v1alpha1.AppKindDefenderApp, v1alpha1.CloudUSGov, "https://login.microsoftonline.com/", gccDefenderAPI},
		{v1alpha1.AppKindClusterDefenderApp, v1alpha1.CloudDoD, "https://login.microsoftonline.us/", govDefenderAPI},
	} {
		t.Run(string(tt.kind)+" in "+string(tt.cloud), func(t *testing.T) {
			h := newHarness(t)
			logs := h.cloudListeners()
			resource := tt.resource
			h.entra.SetCloud(testTenantID, tt.cloud)
			h.entra.Grant(testTenantID, testClientID, resource, "Incident.Read.All", "AdvancedHunting.Read.All")
			h.storeClientSecret(tt.kind)
			h.createAppOfKind(tt.kind, clientSecretAppSpec(tt.cloud))
			h.reconcile()

			h.expectReady()
			for cloud, log := range logs {
				want := 0
				if cloud == tt.cloud {
					want = 1
				}
				if n := len(log.all()); n != want {
					t.Errorf("token requests at the %s authority = %d, want %d", cloud, n, want)
				}
			}
			if sent := logs[tt.cloud].all(); len(sent) == 1 && sent[0].scope != resource+"/.default" {
				t.Errorf("scope = %q, want the %s default resource %s", sent[0].scope, tt.cloud, resource)
			}
			dt := h.tenant()
			if got := dt.Status.AdminConsentURL; !strings.HasPrefix(got, tt.consentHost+testTenantID+"/") || !strings.Contains(got, url.QueryEscape(resource+"/.default")) {
				t.Errorf("adminConsentURL %q is not on %s for %s", got, tt.consentHost, resource)
			}
		})
	}
}
