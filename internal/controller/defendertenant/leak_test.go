package defendertenant

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/manager"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
)

// secretMaterial collects everything that must never reach status, Events or logs:
// each client secret and assertion the operator sends to Entra ID and each access
// token Entra ID answers with, as the wire carries them, and the private keys and
// client secrets the test stores.
type secretMaterial struct {
	mu     sync.Mutex
	values map[string]string // value: what it is
}

func (m *secretMaterial) add(what, value string) {
	if len(value) < leakWindow {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.values == nil {
		m.values = map[string]string{}
	}
	m.values[value] = what
}

// through records the material of every token request and answer passing to the emulator.
func (m *secretMaterial) through(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		if form, err := url.ParseQuery(string(body)); err == nil {
			m.add("client secret sent", form.Get("client_secret"))
			m.add("client assertion sent", form.Get("client_assertion"))
		}
		rec := &answerRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		var answer struct {
			AccessToken string `json:"access_token"`
		}
		if json.Unmarshal(rec.body.Bytes(), &answer) == nil {
			m.add("access token issued", answer.AccessToken)
		}
	})
}

type answerRecorder struct {
	http.ResponseWriter
	body bytes.Buffer
}

func (a *answerRecorder) Write(p []byte) (int, error) {
	a.body.Write(p)
	return a.ResponseWriter.Write(p)
}

// leakWindow is the length of the substrings looked for: long enough that no
// ordinary text shares one with a random secret by chance, short enough to catch a
// quoted fragment.
const leakWindow = 16

// leaks names the material any 16-byte substring of which appears in text.
func (m *secretMaterial) leaks(text string) []string {
	windows := map[string]bool{}
	for i := 0; i+leakWindow <= len(text); i++ {
		windows[text[i:i+leakWindow]] = true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var found []string
	for value, what := range m.values {
		for i := 0; i+leakWindow <= len(value); i++ {
			if windows[value[i:i+leakWindow]] {
				found = append(found, what+" (from byte "+strconv.Itoa(i)+")")
				break
			}
		}
	}
	return found
}

func randomClientSecret(t *testing.T) string {
	t.Helper()
	b := make([]byte, 30)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// leakScenario drives a tenant to one reason; it returns the reason to expect on
// the tenant's conditions, proof that the path was taken.
type leakScenario struct {
	name  string
	drive func(h *harness, m *secretMaterial) string
}

// inlineTenant stores a fresh random client secret that Entra ID knows, and a tenant using it.
func inlineTenant(h *harness, m *secretMaterial, mutate ...func(*v1alpha1.DefenderTenant)) {
	secret := randomClientSecret(h.t)
	m.add("client secret stored", secret)
	h.entra.AddApp(testClientID, entraemu.Secret{Value: secret})
	h.createCredential(secret)
	h.createTenant(mutate...)
}

// storeRandomSecret stores a fresh random client secret, unknown to Entra ID, as
// the tenant's credential.
func storeRandomSecret(h *harness, m *secretMaterial) {
	secret := randomClientSecret(h.t)
	m.add("client secret stored", secret)
	h.createCredential(secret)
}

// workloadIdentityTenant: a tenant of a workload identity ClusterDefenderApp whose
// federated credential names subject.
func workloadIdentityTenant(h *harness, subject string) {
	h.createWorkloadSA()
	h.federate(subject)
	h.createClusterApp(federatedCredential())
	h.createAppTenant(v1alpha1.AppKindClusterDefenderApp, h.clusterAppName())
}

func certificateTenant(h *harness, m *secretMaterial, register bool, c testCertificate) {
	m.add("private key stored", string(c.keyPEM))
	if register {
		h.entra.AddCertificate(testClientID, c.cert)
	}
	h.storeCertificate(h.crn, c)
	h.createClusterApp(certCredential())
	h.createAppTenant(v1alpha1.AppKindClusterDefenderApp, h.clusterAppName())
}

func leakScenarios() []leakScenario {
	failing := func(reason string, f ...entraemu.Failure) leakScenario {
		return leakScenario{"Entra answers " + reason, func(h *harness, m *secretMaterial) string {
			h.entra.InjectFailures(testTenantID, f...)
			inlineTenant(h, m)
			h.reconcile()
			return reason
		}}
	}
	return []leakScenario{
		{"token published, with a template", func(h *harness, m *secretMaterial) string {
			inlineTenant(h, m, func(dt *v1alpha1.DefenderTenant) {
				dt.Spec.SecretTemplate = &v1alpha1.SecretTemplate{Data: map[string]v1alpha1.DataTemplate{"authorization": "{{ .TokenType }} {{ .AccessToken }}"}}
			})
			h.reconcile()
			return v1alpha1.ReasonTokenReady
		}},
		{"token lacks a role", func(h *harness, m *secretMaterial) string {
			inlineTenant(h, m, func(dt *v1alpha1.DefenderTenant) {
				dt.Spec.RequiredRoles = append(dt.Spec.RequiredRoles, "Machine.Isolate")
			})
			h.reconcile()
			return v1alpha1.ReasonMissingRoles
		}},
		{"token refused by the checks", func(h *harness, m *secretMaterial) string {
			h.entra.SetLifetime(testTenantID, 48*time.Hour)
			inlineTenant(h, m)
			h.reconcile()
			return v1alpha1.ReasonInvalidToken
		}},
		{"no consent", func(h *harness, m *secretMaterial) string {
			h.entra.Revoke(testTenantID, testClientID)
			inlineTenant(h, m)
			h.reconcile()
			return v1alpha1.ReasonConsentRequired
		}},
		{"client secret unknown to Entra", func(h *harness, m *secretMaterial) string {
			storeRandomSecret(h, m)
			h.createTenant()
			h.reconcile()
			return v1alpha1.ReasonInvalidClientSecret
		}},
		{"client secret expired", func(h *harness, m *secretMaterial) string {
			secret := randomClientSecret(h.t)
			m.add("client secret stored", secret)
			h.entra.AddApp(testClientID, entraemu.Secret{Value: secret, ExpiresAt: h.clock.Now().Add(-time.Hour)})
			h.createCredential(secret)
			h.createTenant()
			h.reconcile()
			return v1alpha1.ReasonClientSecretExpired
		}},
		{"client secret implausible", func(h *harness, m *secretMaterial) string {
			secret := randomClientSecret(h.t) + "\x01" + randomClientSecret(h.t)
			m.add("client secret stored", secret)
			h.createCredential(secret)
			h.createTenant()
			h.reconcile()
			return v1alpha1.ReasonInvalidClientSecret
		}},
		failing(v1alpha1.ReasonTenantNotFound, entraemu.CrossCloud()),
		failing(v1alpha1.ReasonAccessBlocked, entraemu.ConditionalAccess()),
		failing(v1alpha1.ReasonThrottled, entraemu.Throttled(time.Minute)),
		failing(v1alpha1.ReasonTokenEndpointUnavailable, entraemu.BadGateway()),
		failing(v1alpha1.ReasonTokenRequestRejected, entraemu.Failure{Status: http.StatusBadRequest, Error: "invalid_request", Code: 50011, Description: "The redirect URI specified in the request does not match."}),
		{"token expired while refreshes fail", func(h *harness, m *secretMaterial) string {
			inlineTenant(h, m)
			h.reconcile()
			h.entra.InjectFailures(testTenantID, entraemu.ServerError(), entraemu.ServerError(), entraemu.ServerError())
			h.clock.Step(2 * time.Hour)
			h.reconcile()
			return v1alpha1.ReasonTokenExpired
		}},
		{"token Secret name taken", func(h *harness, m *secretMaterial) string {
			inlineTenant(h, m)
			h.forgeTokenSecret(h.tenant(), nil)
			h.reconcile()
			return v1alpha1.ReasonSecretConflict
		}},
		{"token Secret write refused", func(h *harness, m *secretMaterial) string {
			secret := randomClientSecret(h.t)
			m.add("client secret stored", secret)
			h.entra.AddApp(testClientID, entraemu.Secret{Value: secret})
			h.createCredential(secret)
			refuseSecretCreates(h.t, h)
			h.createTenant()
			h.reconcile()
			return v1alpha1.ReasonSecretWriteFailed
		}},
		{"resource not allowed", func(h *harness, m *secretMaterial) string {
			inlineTenant(h, m, func(dt *v1alpha1.DefenderTenant) { dt.Spec.Resource = "https://attacker.example.com" })
			h.reconcile()
			return v1alpha1.ReasonResourceNotAllowed
		}},
		{"template annotation without an allowed prefix", func(h *harness, m *secretMaterial) string {
			inlineTenant(h, m, func(dt *v1alpha1.DefenderTenant) {
				dt.Spec.SecretTemplate = &v1alpha1.SecretTemplate{Annotations: map[string]string{"replicator.example/replicate-to": "elsewhere"}}
			})
			h.reconcile()
			return v1alpha1.ReasonInvalidSecretTemplate
		}},
		{"suspended after publishing", func(h *harness, m *secretMaterial) string {
			inlineTenant(h, m)
			h.reconcile()
			h.setSuspend(true)
			return v1alpha1.ReasonTokenReady
		}},
		{"credential key missing", func(h *harness, m *secretMaterial) string {
			secret := randomClientSecret(h.t)
			m.add("client secret stored", secret)
			createCredentialIn(h.t, h.ns, credentialName, map[string][]byte{"other-key": []byte(secret)})
			h.createTenant()
			h.reconcile()
			return v1alpha1.ReasonCredentialsNotFound
		}},
		{"certificate app, token published", func(h *harness, m *secretMaterial) string {
			certificateTenant(h, m, true, h.validCertificate())
			h.reconcile()
			return v1alpha1.ReasonTokenReady
		}},
		{"certificate not registered", func(h *harness, m *secretMaterial) string {
			certificateTenant(h, m, false, h.validCertificate())
			h.reconcile()
			return v1alpha1.ReasonInvalidClientAssertion
		}},
		{"certificate with another key", func(h *harness, m *secretMaterial) string {
			c, other := h.validCertificate(), h.validCertificate()
			m.add("private key stored", string(other.keyPEM))
			c.keyPEM = other.keyPEM
			certificateTenant(h, m, true, c)
			h.reconcile()
			return v1alpha1.ReasonInvalidCertificate
		}},
		{"certificate expired", func(h *harness, m *secretMaterial) string {
			now := h.clock.Now()
			certificateTenant(h, m, true, newTestCertificate(h.t, now.AddDate(-1, 0, 0), now.Add(-time.Hour)))
			h.reconcile()
			return v1alpha1.ReasonCertificateExpired
		}},
		{"workload identity, token published", func(h *harness, m *secretMaterial) string {
			workloadIdentityTenant(h, h.workloadSubject())
			h.reconcile()
			return v1alpha1.ReasonTokenReady
		}},
		{"workload identity, subject mismatch", func(h *harness, m *secretMaterial) string {
			workloadIdentityTenant(h, "system:serviceaccount:elsewhere:someone")
			h.reconcile()
			return v1alpha1.ReasonInvalidClientAssertion
		}},
		{"workload identity, ServiceAccount not opted in", func(h *harness, m *secretMaterial) string {
			storeRandomSecret(h, m)
			h.createServiceAccount(workloadSAName, nil)
			h.createClusterApp(federatedCredential())
			h.createAppTenant(v1alpha1.AppKindClusterDefenderApp, h.clusterAppName())
			h.reconcile()
			return v1alpha1.ReasonServiceAccountNotAllowed
		}},
		{"workload identity, ServiceAccount missing", func(h *harness, m *secretMaterial) string {
			storeRandomSecret(h, m)
			h.createClusterApp(federatedCredential())
			h.createAppTenant(v1alpha1.AppKindClusterDefenderApp, h.clusterAppName())
			h.reconcile()
			return v1alpha1.ReasonServiceAccountNotFound
		}},
		{"suspended from the start", func(h *harness, m *secretMaterial) string {
			inlineTenant(h, m, func(dt *v1alpha1.DefenderTenant) { dt.Spec.Suspend = true })
			h.reconcile()
			return v1alpha1.ReasonSuspended
		}},
		{"app not found", func(h *harness, m *secretMaterial) string {
			storeRandomSecret(h, m)
			h.createAppTenant(v1alpha1.AppKindClusterDefenderApp, "does-not-exist")
			h.reconcile()
			return v1alpha1.ReasonAppNotFound
		}},
		{"grant withdrawn after publishing", func(h *harness, m *secretMaterial) string {
			certificateTenant(h, m, true, h.validCertificate())
			h.reconcile()
			h.withdrawGrant()
			h.reconcile()
			return v1alpha1.ReasonAppNotAllowed
		}},
	}
}

// Nothing derived from a token, a client secret, a private key or an assertion
// reaches a tenant's or an app's status, an Event or a log line, on any reason's
// path: every message is built from the reason, the spec and Entra ID's code and
// description.
func TestNothingSecretReachesStatusEventsOrLogs(t *testing.T) {
	requireControlPlane(t)
	for _, sc := range leakScenarios() {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			m := &secretMaterial{}
			h := newHarnessServedThrough(t, m.through)
			var logs bytes.Buffer
			var logsMu sync.Mutex
			// As verbose as --zap-log-level lets the operator be, asked for more.
			h.ctx = ctrl.LoggerInto(h.ctx, zap.New(zap.WriteTo(lockedWriter{&logs, &logsMu}), zap.Level(manager.CapLogLevel(zapcore.Level(-10)))))

			want := sc.drive(h, m)
			tokens := &issuedTokens{}
			for _, kind := range []v1alpha1.AppKind{v1alpha1.AppKindDefenderApp, v1alpha1.AppKindClusterDefenderApp} {
				r := h.appReconciler(kind, tokens)
				_, _ = r.Reconcile(h.ctx, ctrl.Request{NamespacedName: h.appKey(kind)})
			}
			for _, token := range tokens.all() {
				m.add("ServiceAccount token issued", token)
			}

			dt := h.tenant()
			if !hasReason(dt, want) {
				t.Fatalf("the scenario did not reach %s: status %s", want, mustJSONStatus(dt))
			}
			m.mu.Lock()
			material := len(m.values)
			m.mu.Unlock()
			if material == 0 {
				t.Fatal("no secret material was seen; the scan would prove nothing")
			}
			logsMu.Lock()
			places := map[string]string{"tenant status": mustJSONStatus(dt), "Events": strings.Join(h.drainEvents(), "\n"), "log": logs.String()}
			logsMu.Unlock()
			if app := h.clusterAppStatus(); app != "" {
				places["ClusterDefenderApp status"] = app
			}
			for place, text := range places {
				for _, leak := range m.leaks(text) {
					t.Errorf("%s holds part of a %s", place, leak)
					if place == "log" {
						t.Log(text[:min(len(text), 3000)])
					}
				}
			}
		})
	}
}

// TestLeakScanFindsAFragment is the scan's own positive control: a quoted
// fragment of a secret in the middle of a message is found.
func TestLeakScanFindsAFragment(t *testing.T) {
	m := &secretMaterial{}
	secret := randomClientSecret(t)
	m.add("client secret stored", secret)
	if found := m.leaks(`template: x:1: error calling slice: index out of range: "` + secret[7:24] + `"`); len(found) != 1 {
		t.Errorf("leaks = %v, want the client secret found", found)
	}
	if found := m.leaks("The token lacks required roles Machine.Isolate."); len(found) != 0 {
		t.Errorf("leaks = %v in a message that quotes nothing", found)
	}
}

func hasReason(dt *v1alpha1.DefenderTenant, reason string) bool {
	for _, c := range dt.Status.Conditions {
		if c.Reason == reason {
			return true
		}
	}
	return false
}

func (h *harness) clusterAppStatus() string {
	app := &v1alpha1.ClusterDefenderApp{}
	if err := k8s.Get(h.ctx, keyOf("", h.clusterAppName()), app); err != nil {
		return ""
	}
	b, _ := json.Marshal(app.Status)
	return string(b)
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
