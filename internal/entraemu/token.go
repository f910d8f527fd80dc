package entraemu

import (
	"context"
	"crypto/subtle"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

// endpoint tells the v1 token endpoint (oauth2/token) from the v2 one
// (oauth2/v2.0/token). They take the resource differently and answer differently.
type endpoint int

const (
	v1Endpoint endpoint = iota + 1
	v2Endpoint
)

// backdate is how far Entra dates iat and nbf back, against clock skew.
const backdate = 5 * time.Minute

// tokenHandler serves one of the token endpoints of the sign-in host.
func (e *Emulator) tokenHandler(host string, ep endpoint) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tenantID := normalizeID(r.PathValue("tenant"))
		// Read the body before waiting: net/http notices that a client hung up, and
		// cancels r.Context(), only once the request body has been read.
		req, formErr := readTokenRequest(r)
		f, injected := e.arrive(tenantID, r.Header)
		echoClientRequestID(w, r)
		if !wait(r.Context(), time.Duration(e.latency.Load())) {
			return
		}
		if injected {
			if !wait(r.Context(), f.Delay) || !held(r.Context(), f.Hold) {
				return
			}
			if f.Status != 0 {
				e.writeFailure(w, host, tenantID, f)
				return
			}
		}

		req.audiences = tokenAudiences(r, host)
		g, fail := e.authorize(r.Context(), host, tenantID, ep, req, formErr)
		if fail != nil {
			e.writeFailure(w, host, tenantID, *fail)
			return
		}
		body, err := e.mint(g, ep)
		if err != nil {
			e.writeFailure(w, host, tenantID, *oauthError(http.StatusInternalServerError, "server_error", 0, "Signing the token failed: %v", err))
			return
		}
		writeJSON(w, http.StatusOK, body)
	}
}

// echoClientRequestID answers with the request's client-request-id header, as
// Entra does when the client asks for it with return-client-request-id: true.
func echoClientRequestID(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get("client-request-id")
	if id != "" && strings.EqualFold(strings.TrimSpace(r.Header.Get("return-client-request-id")), "true") {
		w.Header().Set("client-request-id", id)
	}
}

// tokenRequest is what a token request asks for, and with which credentials.
type tokenRequest struct {
	form          url.Values
	clientID      string
	secret        string
	assertion     string
	assertionType string
	// audiences are the aud values a certificate assertion may have for this
	// request: its own token URL.
	audiences []string
}

// readTokenRequest reads the form body and the client credentials, which come in
// HTTP Basic authentication or, failing that, in the form.
func readTokenRequest(r *http.Request) (tokenRequest, error) {
	err := r.ParseForm()
	req := tokenRequest{form: r.PostForm}
	if user, pass, ok := r.BasicAuth(); ok {
		// RFC 6749 section 2.3.1 form-encodes both before Basic encoding, which not
		// every client does: a value that does not decode is taken as sent.
		req.clientID, req.secret = formUnescape(user), formUnescape(pass)
	} else {
		req.clientID, req.secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	req.clientID = normalizeID(req.clientID)
	req.assertion = r.PostForm.Get("client_assertion")
	req.assertionType = r.PostForm.Get("client_assertion_type")
	return req, err
}

func formUnescape(s string) string {
	if u, err := url.QueryUnescape(s); err == nil {
		return u
	}
	return s
}

// wait pauses for d, and reports false if ctx ends first: the client has given up
// and nobody reads an answer.
func wait(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// held waits until release is closed; false when the client gave up first. A nil
// release holds nothing.
func held(ctx context.Context, release <-chan struct{}) bool {
	if release == nil {
		return true
	}
	select {
	case <-release:
		return true
	case <-ctx.Done():
		return false
	}
}

// grant is what a successful token request is allowed: everything the token says.
type grant struct {
	tenantID string
	clientID string
	resource string // App ID URI, as registered
	roles    []string
	lifetime time.Duration
	version  string
	host     string // the sign-in host of the tenant's cloud, which v2 issuers name
	acr      string // how the client authenticated: acrSecret or acrAssertion
}

// authorize decides a token request that reached the sign-in host, in the order
// Entra checks it, and returns either what to put in the token or the error to
// answer with. It holds the lock only to look the model up: the client's
// credential is checked without it.
func (e *Emulator) authorize(ctx context.Context, host, tenantID string, ep endpoint, req tokenRequest, formErr error) (*grant, *Failure) {
	if !isGUID(tenantID) && !isDomainName(tenantID) {
		return nil, oauthError(http.StatusBadRequest, "invalid_request", 900023,
			"Specified tenant identifier '%s' is neither a valid DNS name, nor a valid external domain.", tenantID)
	}
	if formErr != nil {
		return nil, oauthError(http.StatusBadRequest, "invalid_request", 0,
			"The request body is not a valid application/x-www-form-urlencoded form.")
	}
	a, fail := e.findClient(host, tenantID, req)
	if fail != nil {
		return nil, fail
	}
	acr, fail := e.authenticate(ctx, req.clientID, a, req)
	if fail != nil {
		return nil, fail
	}
	g, fail := e.grantFor(tenantID, ep, req)
	if fail != nil {
		return nil, fail
	}
	g.host, g.acr = host, acr
	return g, nil
}

// findClient finds the tenant and the app of a token request, and returns a copy of
// the app's credentials to check it against.
func (e *Emulator) findClient(host, tenantID string, req tokenRequest) (app, *Failure) {
	e.mu.Lock()
	defer e.mu.Unlock()

	t, ok := e.tenants[tenantID]
	if !ok {
		return app{}, tenantNotFound(tenantID)
	}
	// Entra finds the tenant in every cloud, and then refuses to serve a
	// confidential client from the sign-in host of another.
	if entra.AuthorityHost(t.cloud) != host {
		return app{}, crossCloud()
	}
	switch gt := req.form.Get("grant_type"); gt {
	case "client_credentials":
	case "":
		return app{}, missingParameter("grant_type")
	default:
		return app{}, oauthError(http.StatusBadRequest, "unsupported_grant_type", 70003,
			"The app requested an unsupported grant type '%s'.", gt)
	}
	if req.clientID == "" {
		return app{}, missingParameter("client_id")
	}
	a, ok := e.apps[req.clientID]
	if !ok {
		return app{}, oauthError(http.StatusBadRequest, "unauthorized_client", 700016,
			"Application with identifier '%s' was not found in the directory '%s'. "+
				"This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. "+
				"You may have sent your authentication request to the wrong tenant.", req.clientID, tenantID)
	}
	return a.clone(), nil
}

// grantFor decides what an authenticated client gets in the tenant: the service
// principals of the app and of the resource must both be there.
func (e *Emulator) grantFor(tenantID string, ep endpoint, req tokenRequest) (*grant, *Failure) {
	clientID := req.clientID
	e.mu.Lock()
	defer e.mu.Unlock()

	t := e.tenants[tenantID] // tenants are never deleted
	principal, ok := t.principals[clientID]
	if !ok {
		return nil, oauthError(http.StatusUnauthorized, "invalid_client", 7000229,
			"The client application %s is missing service principal in the tenant %s. "+
				"See instructions here: https://go.microsoft.com/fwlink/?linkid=2225119", clientID, tenantID)
	}
	requested, fail := requestedResource(req.form, ep)
	if fail != nil {
		return nil, fail
	}
	resource, ok := e.resources[resourceKey(requested)]
	if !ok || t.missing[resourceKey(requested)] {
		return nil, oauthError(http.StatusBadRequest, "invalid_resource", 500011,
			"The resource principal named %s was not found in the tenant named %s. "+
				"This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. "+
				"You might have sent your authentication request to the wrong tenant.", requested, tenantID)
	}

	g := &grant{
		tenantID: tenantID,
		clientID: clientID,
		resource: resource,
		roles:    slices.Clone(principal[resourceKey(requested)]),
		lifetime: t.lifetime,
		version:  t.version,
	}
	if g.lifetime <= 0 {
		g.lifetime = e.defaultLifetime
	}
	if g.version == "" {
		g.version = TokenV1
	}
	return g, nil
}

// checkSecret accepts the submitted secret if it matches one of the app's secrets
// that has not expired. Its errors never quote the secret.
func checkSecret(clientID string, secrets []Secret, submitted string, now time.Time) *Failure {
	if submitted == "" {
		return oauthError(http.StatusUnauthorized, "invalid_client", 7000218,
			"The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
	}
	matched := false
	for _, s := range secrets {
		if subtle.ConstantTimeCompare([]byte(s.Value), []byte(submitted)) != 1 {
			continue
		}
		if s.ExpiresAt.IsZero() || now.Before(s.ExpiresAt) {
			return nil
		}
		matched = true
	}
	if matched {
		return oauthError(http.StatusUnauthorized, "invalid_client", 7000222,
			"The provided client secret keys for app '%s' are expired. "+
				"Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, "+
				"or consider using certificate credentials for added security: https://aka.ms/certCreds.", clientID)
	}
	return oauthError(http.StatusUnauthorized, "invalid_client", 7000215,
		"Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, "+
			"not the client secret ID, for a secret added to app '%s'.", clientID)
}

// requestedResource returns the resource URI a token is asked for: the v1 resource
// parameter, or the v2 scope, which for client credentials must be the resource's
// "/.default" scope.
func requestedResource(form url.Values, ep endpoint) (string, *Failure) {
	if ep == v1Endpoint {
		resource := form.Get("resource")
		if resource == "" {
			return "", missingParameter("resource")
		}
		return resource, nil
	}

	if form.Has("resource") {
		return "", oauthError(http.StatusBadRequest, "invalid_request", 901002,
			"The 'resource' request parameter is not supported.")
	}
	scope := strings.TrimSpace(form.Get("scope"))
	if scope == "" {
		return "", oauthError(http.StatusBadRequest, "invalid_scope", 70011,
			"The provided request must include a 'scope' input parameter.")
	}
	resource, ok := strings.CutSuffix(scope, "/.default")
	if !ok || resource == "" || strings.ContainsAny(resource, " \t") {
		return "", oauthError(http.StatusBadRequest, "invalid_scope", 70011,
			"The provided value for scope %s is not valid. Client credential flows must have a scope value "+
				"with /.default suffixed to the resource identifier (application ID URI).", scope)
	}
	return resource, nil
}

func missingParameter(name string) *Failure {
	return oauthError(http.StatusBadRequest, "invalid_request", 900144,
		"The request body must contain the following parameter: '%s'.", name)
}

// claims are the claims of an app-only access token. The v1 and v2 versions differ
// in iss, aud, ver, and in naming the client appid or azp.
type claims struct {
	Aud      string   `json:"aud"`
	Iss      string   `json:"iss"`
	Iat      int64    `json:"iat"`
	Nbf      int64    `json:"nbf"`
	Exp      int64    `json:"exp"`
	Aio      string   `json:"aio"`
	AppID    string   `json:"appid,omitempty"`
	AppIDACR string   `json:"appidacr,omitempty"`
	Azp      string   `json:"azp,omitempty"`
	AzpACR   string   `json:"azpacr,omitempty"`
	Idp      string   `json:"idp"`
	Oid      string   `json:"oid"`
	Rh       string   `json:"rh"`
	Roles    []string `json:"roles,omitempty"` // omitted, not empty, without application permissions
	Sub      string   `json:"sub"`
	Tid      string   `json:"tid"`
	Uti      string   `json:"uti"`
	Ver      string   `json:"ver"`
}

// v1Response is the v1 endpoint's success body, where every number is a string.
type v1Response struct {
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in,string"`
	ExtExpiresIn int64  `json:"ext_expires_in,string"`
	ExpiresOn    int64  `json:"expires_on,string"`
	NotBefore    int64  `json:"not_before,string"`
	Resource     string `json:"resource"`
	AccessToken  string `json:"access_token"`
}

// v2Response is the v2 endpoint's success body.
type v2Response struct {
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	ExtExpiresIn int64  `json:"ext_expires_in"`
	AccessToken  string `json:"access_token"`
}

// mint signs the access token for g and returns the endpoint's success body.
func (e *Emulator) mint(g *grant, ep endpoint) (any, error) {
	now := e.clock.Now()
	c := claims{
		Iat:   now.Add(-backdate).Unix(),
		Nbf:   now.Add(-backdate).Unix(),
		Exp:   now.Add(g.lifetime).Unix(),
		Aio:   randomString(42),
		Oid:   stableGUID("service-principal", g.tenantID, g.clientID),
		Rh:    "0.A" + randomString(36) + ".",
		Roles: g.roles,
		Tid:   g.tenantID,
		Uti:   randomString(16),
		Ver:   g.version,
	}
	c.Sub = c.Oid
	signer := e.key.v1
	if g.version == TokenV2 {
		c.Aud = resourceAppID(g.resource)
		c.Iss = g.host + "/" + g.tenantID + "/v2.0"
		c.Azp, c.AzpACR = g.clientID, g.acr
		signer = e.key.v2
	} else {
		// v1 tokens name sts.windows.net in Azure Government too.
		c.Aud = g.resource
		c.Iss = "https://sts.windows.net/" + g.tenantID + "/"
		c.AppID, c.AppIDACR = g.clientID, g.acr
	}
	c.Idp = c.Iss
	token, err := jwt.Signed(signer).Claims(c).Serialize()
	if err != nil {
		return nil, fmt.Errorf("signing the access token: %w", err)
	}

	seconds := int64(g.lifetime / time.Second)
	if ep == v1Endpoint {
		return v1Response{
			TokenType:    "Bearer",
			ExpiresIn:    seconds,
			ExtExpiresIn: seconds,
			ExpiresOn:    c.Exp,
			NotBefore:    c.Nbf,
			Resource:     g.resource,
			AccessToken:  token,
		}, nil
	}
	return v2Response{TokenType: "Bearer", ExpiresIn: seconds, ExtExpiresIn: seconds, AccessToken: token}, nil
}
