// Package entraemu emulates the Microsoft Entra ID token endpoint for the OAuth2
// client-credentials grant, speaking its wire format: the v1 and v2 token endpoints,
// their success bodies, AADSTS error bodies, RS256 access tokens and the signing keys.
//
// It models what decides a client-credentials request in Entra: multi-tenant app
// registrations with their credentials (client secrets, certificates and federated
// identity credentials, the latter two presented as JWT client assertions),
// customer tenants in their clouds, and admin consent (a service principal of the
// app in the tenant, holding application roles on a resource).
// Failures the model cannot produce, such as throttling, outages and hanging
// connections, are injected per tenant.
//
// An Emulator is an http.Handler that answers as login.microsoftonline.com, the
// sign-in host of the Public and USGov clouds; Emulator.Cloud returns the handler of
// another cloud's sign-in host, over the same model. Serve each with
// httptest.NewServer and point a token client's authority host at the server's URL.
package entraemu

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/utils/clock"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

// Access token versions, chosen per tenant with SetTokenVersion.
const (
	// TokenV1 tokens are what the Defender APIs get, even from the v2 endpoint:
	// the resource, not the endpoint, picks the token version.
	TokenV1 = "1.0"
	// TokenV2 tokens are issued for resources that ask for them.
	TokenV2 = "2.0"
)

// defaultLifetime is the expires_in Entra returns for client credentials, rather than
// the documented random 60 to 90 minutes.
const defaultLifetime = 3599 * time.Second

// Options configure an Emulator.
type Options struct {
	// Clock is the source of iat, nbf and exp, of error timestamps and of secret
	// expiry. Nil means the real clock. Delays (Failure.Delay, SetLatency) always use
	// real time, because they hold real connections open.
	Clock clock.PassiveClock
	// DefaultLifetime is the token lifetime of tenants without SetLifetime.
	// Zero means 3599s, what Entra returns for client credentials.
	DefaultLifetime time.Duration
}

// Secret is a client secret of an app registration.
type Secret struct {
	// Value is the secret itself, what a client sends as client_secret.
	Value string `json:"value"`
	// ExpiresAt is when Entra stops accepting the secret; zero means never.
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
}

// Emulator is an emulated Entra ID token endpoint. Create it with New; all its
// methods are safe for concurrent use, including while it serves requests.
type Emulator struct {
	clock           clock.PassiveClock
	defaultLifetime time.Duration
	key             *signingKey
	// hosts holds a handler per sign-in host (entra.AuthorityHost), all serving the
	// same model. It is not changed after New, so it needs no lock.
	hosts   map[string]*http.ServeMux
	latency atomic.Int64 // time.Duration added to every token request
	// graphHosts holds a Microsoft Graph handler per Graph host
	// (entra.GraphResource), all serving the same app registrations.
	graphHosts map[string]*http.ServeMux

	// mu guards the model and the traffic state below. Every request holds it only
	// for map lookups, never while signing or waiting.
	mu        sync.Mutex
	apps      map[string]*app      // client ID → app registration
	issuers   map[string]KeySource // federated token issuer → its keys
	tenants   map[string]*tenant   // tenant ID → tenant
	resources map[string]string    // resourceKey(URI) → URI as registered
	domains   map[string]string    // verified domain, lower case → tenant ID
	failures  map[string][]Failure // tenant path segment → failures still to answer
	requests  map[string]int       // tenant path segment → token requests received
	total     int
	// discoveries counts OpenID discovery requests per tenant path segment, apart
	// from token requests, so that discovery does not change what Requests says.
	discoveries map[string]int
	// arrived is closed, and replaced, at every token request, so that
	// WaitForRequests wakes on the event rather than polling.
	arrived chan struct{}
	// headers holds the headers of the tenant's last maxRecordedRequests token
	// requests, oldest first, without Authorization; failureIDs the trace and
	// correlation IDs of the last error body the tenant was answered with.
	headers    map[string][]http.Header
	failureIDs map[string][2]string

	// objects maps an app registration's object ID to its client ID.
	objects map[string]string
	// replicationDelay is how long a new key waits before the token endpoint
	// accepts it.
	replicationDelay time.Duration
	// graphFailures answers an object's Graph calls until cleared; graphCalls logs
	// them, per object ID.
	graphFailures map[string]GraphFailure
	graphCalls    map[string][]GraphCall
}

// maxRecordedRequests bounds the request headers kept per tenant, so that a
// long-running emulator does not grow without end.
const maxRecordedRequests = 32

// tenant is a customer tenant.
type tenant struct {
	lifetime time.Duration // zero means the emulator's default
	version  string
	cloud    v1alpha1.Cloud // empty means Public
	// missing holds the resourceKey of resources that have no service principal in
	// the tenant, such as the Defender APIs in a tenant without a Defender licence.
	missing map[string]bool
	// principals holds the service principals of apps consented in the tenant:
	// client ID → resourceKey(URI) → application roles granted on that resource.
	principals map[string]map[string][]string
}

// New returns an Emulator that knows the Defender API resources and nothing else.
// It generates a fresh RSA-2048 signing key.
func New(opts Options) (*Emulator, error) {
	e := &Emulator{
		clock:           opts.Clock,
		defaultLifetime: opts.DefaultLifetime,
		apps:            map[string]*app{},
		issuers:         map[string]KeySource{},
		tenants:         map[string]*tenant{},
		resources:       map[string]string{},
		domains:         map[string]string{},
		discoveries:     map[string]int{},
		failures:        map[string][]Failure{},
		requests:        map[string]int{},
		arrived:         make(chan struct{}),
		headers:         map[string][]http.Header{},
		failureIDs:      map[string][2]string{},
		objects:         map[string]string{},
		graphFailures:   map[string]GraphFailure{},
		graphCalls:      map[string][]GraphCall{},
	}
	if e.clock == nil {
		e.clock = clock.RealClock{}
	}
	if e.defaultLifetime <= 0 {
		e.defaultLifetime = defaultLifetime
	}
	key, err := newSigningKey(e.clock.Now())
	if err != nil {
		return nil, err
	}
	e.key = key
	// Every Emulator knows the Defender APIs that the operator allows by default.
	for _, r := range entra.DefaultAllowedResources {
		e.resources[resourceKey(r)] = r
	}

	e.hosts = map[string]*http.ServeMux{}
	for _, c := range []v1alpha1.Cloud{v1alpha1.CloudPublic, v1alpha1.CloudUSGovHigh} {
		host := entra.AuthorityHost(c)
		mux := http.NewServeMux()
		mux.HandleFunc("POST /{tenant}/oauth2/token", e.tokenHandler(host, v1Endpoint))
		mux.HandleFunc("POST /{tenant}/oauth2/v2.0/token", e.tokenHandler(host, v2Endpoint))
		mux.HandleFunc("GET /{tenant}/discovery/keys", e.serveKeys)
		mux.HandleFunc("GET /{tenant}/discovery/v2.0/keys", e.serveKeys)
		mux.HandleFunc("GET /{tenant}/v2.0/adminconsent", e.serveAdminConsent(host))
		mux.HandleFunc("GET /{tenant}/.well-known/openid-configuration", e.discoveryHandler(host, discoveryV1))
		mux.HandleFunc("GET /{tenant}/v2.0/.well-known/openid-configuration", e.discoveryHandler(host, discoveryV2))
		e.hosts[host] = mux
	}
	e.graphHosts = map[string]*http.ServeMux{}
	for _, c := range []v1alpha1.Cloud{v1alpha1.CloudPublic, v1alpha1.CloudUSGovHigh, v1alpha1.CloudDoD} {
		host := entra.GraphResource(c)
		mux := http.NewServeMux()
		mux.HandleFunc("POST /v1.0/applications/{id}/addKey", e.graphHandler(host, graphAddKey))
		mux.HandleFunc("POST /v1.0/applications/{id}/removeKey", e.graphHandler(host, graphRemoveKey))
		e.graphHosts[host] = mux
	}
	return e, nil
}

// ServeHTTP answers as login.microsoftonline.com, the sign-in host of the Public and
// USGov clouds. It serves the token endpoints POST /{tenant}/oauth2/token (v1) and
// POST /{tenant}/oauth2/v2.0/token (v2), and the signing keys at
// GET /{tenant}/discovery/keys and GET /{tenant}/discovery/v2.0/keys, the OpenID
// discovery documents at GET /{tenant}/v2.0/.well-known/openid-configuration and
// GET /{tenant}/.well-known/openid-configuration (see AddDomain), and the admin
// consent link GET /{tenant}/v2.0/adminconsent (see serveAdminConsent).
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.hosts[entra.AuthorityHost(v1alpha1.CloudPublic)].ServeHTTP(w, r)
}

// AddApp registers a multi-tenant app, or adds secrets to one already registered.
// AddCertificate and AddFederatedCredential give it other credentials.
func (e *Emulator) AddApp(clientID string, secrets ...Secret) {
	e.mu.Lock()
	defer e.mu.Unlock()
	a := e.appLocked(clientID)
	a.secrets = append(a.secrets, secrets...)
}

// SetAppSecrets replaces all secrets of an app, as a rotation that deletes the old
// ones does, registering the app if needed. Its other credentials stay.
func (e *Emulator) SetAppSecrets(clientID string, secrets ...Secret) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.appLocked(clientID).secrets = slices.Clone(secrets)
}

// AddTenant makes a customer tenant exist. Grant, SetLifetime and SetTokenVersion
// add the tenant themselves.
func (e *Emulator) AddTenant(tenantID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tenantLocked(tenantID)
}

// AddResource makes a resource URI known besides the Defender APIs, as if its
// service principal existed in every tenant.
func (e *Emulator) AddResource(resource string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.addResourceLocked(resource)
}

// RemoveResource deletes the resource's service principal from the tenant, as in a
// tenant without a Defender licence, which has none for the Defender APIs: the
// tenant's token requests for it get AADSTS500011 while other tenants still get
// tokens. Grants on the resource are kept, unused, until RestoreResource.
func (e *Emulator) RemoveResource(tenantID, resource string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tenantLocked(tenantID).missing[resourceKey(resource)] = true
}

// RestoreResource undoes RemoveResource, as buying the licence does.
func (e *Emulator) RestoreResource(tenantID, resource string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.tenantLocked(tenantID).missing, resourceKey(resource))
}

// Grant records admin consent of the app in the tenant: the app gets a service
// principal there, holding roles on resource, which becomes known. Without roles the
// app is consented without any permission, and its tokens carry no roles claim.
// Granting again on the same resource replaces the roles.
func (e *Emulator) Grant(tenantID, clientID, resource string, roles ...string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.tenantLocked(tenantID)
	id := normalizeID(clientID)
	if t.principals[id] == nil {
		t.principals[id] = map[string][]string{}
	}
	t.principals[id][e.addResourceLocked(resource)] = slices.Clone(roles)
}

// Revoke deletes the app's service principal from the tenant, with all its grants.
func (e *Emulator) Revoke(tenantID, clientID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if t, ok := e.tenants[normalizeID(tenantID)]; ok {
		delete(t.principals, normalizeID(clientID))
	}
}

// SetLifetime sets the lifetime of the tenant's tokens; zero restores the default.
func (e *Emulator) SetLifetime(tenantID string, d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tenantLocked(tenantID).lifetime = d
}

// SetTokenVersion sets the version of the tenant's access tokens, TokenV1 (the
// default) or TokenV2. It panics on any other version, a programming error.
func (e *Emulator) SetTokenVersion(tenantID string, v string) {
	if v != TokenV1 && v != TokenV2 {
		panic(fmt.Sprintf("entraemu: unsupported token version %q", v))
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tenantLocked(tenantID).version = v
}

// InjectFailures queues failures that the tenant's next token requests get, one
// each, in order, before any normal processing. The tenant need not exist.
func (e *Emulator) InjectFailures(tenantID string, failures ...Failure) {
	e.mu.Lock()
	defer e.mu.Unlock()
	id := normalizeID(tenantID)
	e.failures[id] = append(e.failures[id], failures...)
}

// SetLatency adds d to every token request, as the network and Entra would. A
// request whose client gives up stops waiting.
func (e *Emulator) SetLatency(d time.Duration) {
	e.latency.Store(int64(d))
}

// Requests returns the number of token requests received for the tenant, whatever
// their outcome.
func (e *Emulator) Requests(tenantID string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.requests[normalizeID(tenantID)]
}

// WaitForRequests returns once the tenant has received at least n token requests,
// or with ctx's error: a test waits for a request to arrive, for instance one held
// by Held, without polling.
func (e *Emulator) WaitForRequests(ctx context.Context, tenantID string, n int) error {
	id := normalizeID(tenantID)
	for {
		e.mu.Lock()
		got, arrived := e.requests[id], e.arrived
		e.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-arrived:
		case <-ctx.Done():
			return fmt.Errorf("%d token requests for tenant %s, want %d: %w", got, tenantID, n, ctx.Err())
		}
	}
}

// RequestHeaders returns the headers of the tenant's last token requests, oldest
// first, at most the last 32. The Authorization header, which may carry the client
// secret, is left out.
func (e *Emulator) RequestHeaders(tenantID string) []http.Header {
	e.mu.Lock()
	defer e.mu.Unlock()
	recorded := e.headers[normalizeID(tenantID)]
	out := make([]http.Header, len(recorded))
	for i, h := range recorded {
		out[i] = h.Clone()
	}
	return out
}

// LastRequest returns the headers of the tenant's last token request, as
// RequestHeaders does, or nil when it received none.
func (e *Emulator) LastRequest(tenantID string) http.Header {
	recorded := e.RequestHeaders(tenantID)
	if len(recorded) == 0 {
		return nil
	}
	return recorded[len(recorded)-1]
}

// LastFailureIDs returns the trace_id and correlation_id of the last Entra error
// body the tenant's token requests were answered with. Both are empty when none
// was, or when the last failure was not an Entra error body (such as a plain-text
// 429).
func (e *Emulator) LastFailureIDs(tenantID string) (traceID, correlationID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ids := e.failureIDs[normalizeID(tenantID)]
	return ids[0], ids[1]
}

// TotalRequests returns the number of token requests received for all tenants.
func (e *Emulator) TotalRequests() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.total
}

// tenantLocked returns the tenant, adding it if it does not exist yet.
func (e *Emulator) tenantLocked(tenantID string) *tenant {
	id := normalizeID(tenantID)
	t, ok := e.tenants[id]
	if !ok {
		t = &tenant{principals: map[string]map[string][]string{}, missing: map[string]bool{}}
		e.tenants[id] = t
	}
	return t
}

// addResourceLocked makes resource known, keeping an earlier spelling, and returns
// its key.
func (e *Emulator) addResourceLocked(resource string) string {
	k := resourceKey(resource)
	if _, ok := e.resources[k]; !ok {
		e.resources[k] = resource
	}
	return k
}

// arrive counts a token request for the tenant path segment, records its
// headers, and pops the failure injected for it, if any.
func (e *Emulator) arrive(tenantID string, header http.Header) (Failure, bool) {
	header = header.Clone()
	header.Del("Authorization")
	e.mu.Lock()
	defer e.mu.Unlock()
	e.requests[tenantID]++
	close(e.arrived)
	e.arrived = make(chan struct{})
	e.total++
	recorded := e.headers[tenantID]
	if len(recorded) == maxRecordedRequests {
		recorded = append(make([]http.Header, 0, maxRecordedRequests), recorded[1:]...)
	}
	e.headers[tenantID] = append(recorded, header)
	queue := e.failures[tenantID]
	if len(queue) == 0 {
		return Failure{}, false
	}
	if len(queue) == 1 {
		delete(e.failures, tenantID)
	} else {
		e.failures[tenantID] = queue[1:]
	}
	return queue[0], true
}

// recordFailureIDs remembers the IDs of the error body the tenant is answered with.
func (e *Emulator) recordFailureIDs(tenantID, traceID, correlationID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failureIDs[tenantID] = [2]string{traceID, correlationID}
}

func (e *Emulator) serveKeys(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", jsonContentType)
	_, _ = w.Write(e.key.jwks) // a failed write means the client is gone
}

// normalizeID folds tenant and client IDs, which are GUIDs and so case-insensitive.
func normalizeID(id string) string {
	return strings.ToLower(id)
}

// resourceKey folds a resource URI the way Entra matches App ID URIs: without
// regard to case or a trailing slash.
func resourceKey(resource string) string {
	return strings.ToLower(strings.TrimSuffix(resource, "/"))
}
