package entraemu

import (
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

// ProofAudience is the aud of the proof of possession that addKey and removeKey
// verify: the application ID of the (retired) Azure AD Graph, as Microsoft's
// sample and the Learn pages name it, not Microsoft Graph's.
const ProofAudience = "00000002-0000-0000-c000-000000000000"

// maxProofLifetime is the longest exp - nbf Microsoft accepts in a proof ("the
// token lifespan should not exceed 10 minutes", application-addkey).
const maxProofLifetime = 10 * time.Minute

// maxGraphBody bounds what the emulator reads of a Graph request body: a
// keyCredential holds one certificate, a few kilobytes.
const maxGraphBody = 64 << 10

// graphContentType is what Microsoft Graph sends with its JSON bodies.
const graphContentType = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"

// Application is an app registration as Microsoft Graph knows it.
type Application struct {
	// ObjectID is the application object's id, the {id} of /applications/{id}.
	ObjectID string
	// ClientID is its appId, what token requests name as client_id.
	ClientID string
	// HomeTenantID is the tenant the app is registered in: Graph serves the
	// object only to tokens of that tenant.
	HomeTenantID string
}

// RegisterApplication makes the app registration an object of Microsoft Graph in
// its home tenant, where the app gets a service principal that may request Graph
// tokens without any Graph permission (as every app in its home tenant may). The
// app keeps its credentials; AddCertificate registers the first certificate, as a
// person uploading it does.
func (e *Emulator) RegisterApplication(a Application) {
	e.mu.Lock()
	defer e.mu.Unlock()
	registered := e.appLocked(a.ClientID)
	registered.objectID, registered.homeTenant = normalizeID(a.ObjectID), normalizeID(a.HomeTenantID)
	e.objects[normalizeID(a.ObjectID)] = normalizeID(a.ClientID)
	// Graph of every cloud is a known resource, so a service principal without
	// grants is all a Graph token with no roles needs.
	t := e.tenantLocked(a.HomeTenantID)
	if id := normalizeID(a.ClientID); t.principals[id] == nil {
		t.principals[id] = map[string][]string{}
	}
}

// SetReplicationDelay makes every key added from now on, by addKey or
// AddCertificate, unknown to the token endpoint for d on the emulator's clock:
// until then a client assertion signed with it gets AADSTS700027, as from an
// Entra ID replica the new key has not reached. How long real replication takes
// is not documented (seconds to minutes is what users report).
func (e *Emulator) SetReplicationDelay(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.replicationDelay = d
}

// KeyCredential is a certificate registered on an app, as a test sees it.
type KeyCredential struct {
	KeyID string
	// SHA1Thumbprint is the certificate's SHA-1 thumbprint in upper-case hex, as
	// the portal shows it.
	SHA1Thumbprint string
	NotAfter       time.Time
	// UsableAt is when the token endpoint starts accepting it.
	UsableAt time.Time
}

// KeyCredentials returns the app's certificates, in the order they were added.
func (e *Emulator) KeyCredentials(clientID string) []KeyCredential {
	e.mu.Lock()
	defer e.mu.Unlock()
	a, ok := e.apps[normalizeID(clientID)]
	if !ok {
		return nil
	}
	out := make([]KeyCredential, 0, len(a.certs))
	for _, c := range a.certs {
		out = append(out, KeyCredential{
			KeyID: c.keyID, SHA1Thumbprint: strings.ToUpper(fmt.Sprintf("%x", c.sha1[:])),
			NotAfter: c.cert.NotAfter, UsableAt: c.usableAt,
		})
	}
	return out
}

// GraphFailure is an answer Graph gives every addKey and removeKey of an object
// until it is cleared, after the bearer token was checked: what a person must fix.
type GraphFailure struct {
	Status  int
	Code    string
	Message string
}

// GraphForbidden is Graph refusing the call: 403 Authorization_RequestDenied, as an
// app management policy or a missing permission answers. The body is Graph's usual
// one for a denied request (seen in public issue reports); that addKey answers
// exactly this when a policy blocks it is unconfirmed.
func GraphForbidden() GraphFailure {
	return GraphFailure{Status: http.StatusForbidden, Code: "Authorization_RequestDenied",
		Message: "Insufficient privileges to complete the operation."}
}

// GraphNotFound is Graph not finding the application object, as for a deleted app
// registration: the body Graph gives for GET /applications/{id} of an unknown id
// (seen in public issue reports); for addKey it is unconfirmed.
func GraphNotFound(objectID string) GraphFailure {
	return notFound(objectID)
}

// GraphBadProof is Graph rejecting the proof of possession whatever it holds: 401
// Authentication_MissingOrMalformed, the body public reports show for an addKey
// whose proof had the wrong aud.
func GraphBadProof() GraphFailure {
	return badProof()
}

func notFound(id string) GraphFailure {
	return GraphFailure{Status: http.StatusNotFound, Code: "Request_ResourceNotFound",
		Message: fmt.Sprintf("Resource '%s' does not exist or one of its queried reference-property objects are not present.", id)}
}

func badProof() GraphFailure {
	return GraphFailure{Status: http.StatusUnauthorized, Code: "Authentication_MissingOrMalformed",
		Message: "Access Token missing or malformed."}
}

// invalidToken is Graph rejecting the bearer token. The code is the one Graph
// uses for token validation failures; the exact message per cause is unconfirmed.
func invalidToken(message string) GraphFailure {
	return GraphFailure{Status: http.StatusUnauthorized, Code: "InvalidAuthenticationToken", Message: message}
}

// badRequest is Graph refusing a body it cannot use; code and message unconfirmed.
func badRequest(message string) GraphFailure {
	return GraphFailure{Status: http.StatusBadRequest, Code: "Request_BadRequest", Message: message}
}

// SetGraphFailure makes every addKey and removeKey of the object get f, after the
// bearer token was checked, until ClearGraphFailure.
func (e *Emulator) SetGraphFailure(objectID string, f GraphFailure) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.graphFailures[normalizeID(objectID)] = f
}

// ClearGraphFailure undoes SetGraphFailure.
func (e *Emulator) ClearGraphFailure(objectID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.graphFailures, normalizeID(objectID))
}

// GraphCall is one addKey or removeKey call Graph answered.
type GraphCall struct {
	// Action is "addKey" or "removeKey".
	Action string
	Status int
	// KeyID is the key added or removed, when the call succeeded.
	KeyID string
}

// maxRecordedGraphCalls bounds the calls kept per object.
const maxRecordedGraphCalls = 64

// GraphCalls returns the object's last addKey and removeKey calls, oldest first.
func (e *Emulator) GraphCalls(objectID string) []GraphCall {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.graphCalls[normalizeID(objectID)])
}

func (e *Emulator) recordGraphCall(objectID string, c GraphCall) {
	e.mu.Lock()
	defer e.mu.Unlock()
	calls := e.graphCalls[objectID]
	if len(calls) == maxRecordedGraphCalls {
		calls = slices.Clone(calls[1:])
	}
	e.graphCalls[objectID] = append(calls, c)
}

// Graph returns the handler that answers as Microsoft Graph of cloud c
// (entra.GraphResource): graph.microsoft.com for Public and USGov,
// graph.microsoft.us for USGovHigh, dod-graph.microsoft.us for DoD. It serves
// POST /v1.0/applications/{id}/addKey and /removeKey. It panics on a cloud entra
// does not know, a programming error.
func (e *Emulator) Graph(c v1alpha1.Cloud) http.Handler {
	h, ok := e.graphHosts[entra.GraphResource(c)]
	if !ok {
		panic(fmt.Sprintf("entraemu: unknown cloud %q", c))
	}
	return h
}

type graphAction string

const (
	graphAddKey    graphAction = "addKey"
	graphRemoveKey graphAction = "removeKey"
)

// keyCredentialBody is a keyCredential as addKey takes and returns it.
type keyCredentialBody struct {
	ODataContext        string  `json:"@odata.context,omitempty"`
	CustomKeyIdentifier *string `json:"customKeyIdentifier"`
	DisplayName         *string `json:"displayName"`
	EndDateTime         *string `json:"endDateTime"`
	Key                 *string `json:"key"`
	KeyID               *string `json:"keyId"`
	StartDateTime       *string `json:"startDateTime"`
	Type                string  `json:"type"`
	Usage               string  `json:"usage"`
}

type graphRequestBody struct {
	KeyCredential *keyCredentialBody `json:"keyCredential"`
	KeyID         string             `json:"keyId"`
	Proof         string             `json:"proof"`
}

// graphHandler serves addKey or removeKey at the Graph host of a cloud, checking
// in the order Graph must: the bearer token, the object in the token's tenant, the
// caller being that app, then the proof and the body.
func (e *Emulator) graphHandler(host string, action graphAction) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		objectID := normalizeID(r.PathValue("id"))
		status, keyID, fail := e.serveGraph(r, host, objectID, action)
		call := GraphCall{Action: string(action), Status: status}
		if fail != nil {
			call.Status = fail.Status
			e.recordGraphCall(objectID, call)
			e.writeGraphError(w, r, *fail)
			return
		}
		call.KeyID = keyID
		e.recordGraphCall(objectID, call)
		if status == http.StatusNoContent {
			setGraphIDs(w, r)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		e.writeKeyCredential(w, r, host, objectID, keyID)
	}
}

func (e *Emulator) serveGraph(r *http.Request, host, objectID string, action graphAction) (int, string, *GraphFailure) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxGraphBody+1))
	if err != nil {
		f := badRequest("The request body could not be read.")
		return 0, "", &f
	}
	tokenTenant, tokenApp, fail := e.checkGraphToken(r, host)
	if fail != nil {
		return 0, "", fail
	}
	a, fail := e.graphObject(objectID, tokenTenant, tokenApp)
	if fail != nil {
		return 0, "", fail
	}
	if len(body) > maxGraphBody {
		f := badRequest("The request body is too large.")
		return 0, "", &f
	}
	var req graphRequestBody
	if err := json.Unmarshal(body, &req); err != nil {
		f := badRequest("Invalid JSON in the request body.")
		return 0, "", &f
	}
	if fail := e.checkProof(req.Proof, objectID, a.certs); fail != nil {
		return 0, "", fail
	}
	switch action {
	case graphAddKey:
		keyID, fail := e.addKey(a, req.KeyCredential)
		return http.StatusOK, keyID, fail
	default:
		fail := e.removeKey(a, req.KeyID)
		return http.StatusNoContent, req.KeyID, fail
	}
}

// checkGraphToken verifies the bearer token: signed by the emulator, for this
// Graph host, within its lifetime. It returns the token's tenant and client ID.
func (e *Emulator) checkGraphToken(r *http.Request, host string) (tenantID, clientID string, _ *GraphFailure) {
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || strings.TrimSpace(raw) == "" {
		f := invalidToken("Access token is empty.")
		return "", "", &f
	}
	tok, err := jwt.ParseSigned(strings.TrimSpace(raw), []jose.SignatureAlgorithm{jose.RS256})
	var c claims
	if err == nil {
		err = tok.Claims(e.key.public, &c)
	}
	if err != nil {
		f := invalidToken("Access token validation failure.")
		return "", "", &f
	}
	now := e.clock.Now().Unix()
	if now < c.Nbf || now >= c.Exp {
		f := invalidToken("Access token has expired or is not yet valid.")
		return "", "", &f
	}
	if resourceKey(c.Aud) != resourceKey(host) && c.Aud != appIDGraph {
		f := invalidToken("Access token validation failure. Invalid audience.")
		return "", "", &f
	}
	if c.Aud == appIDGraph {
		// A v2 token names its issuer's sign-in host; Graph of one cloud does not
		// take tokens of another.
		if !strings.HasPrefix(c.Iss, e.signInHostOfGraph(host)+"/") {
			f := invalidToken("Access token validation failure. Invalid audience.")
			return "", "", &f
		}
	}
	clientID = c.AppID
	if clientID == "" {
		clientID = c.Azp
	}
	return normalizeID(c.Tid), normalizeID(clientID), nil
}

// signInHostOfGraph is the sign-in host whose tokens the Graph host takes.
func (e *Emulator) signInHostOfGraph(graphHost string) string {
	for _, c := range []v1alpha1.Cloud{v1alpha1.CloudPublic, v1alpha1.CloudUSGovHigh, v1alpha1.CloudDoD} {
		if entra.GraphResource(c) == graphHost {
			return entra.AuthorityHost(c)
		}
	}
	return ""
}

// graphObject finds the application object in the token's tenant, answers a
// failure set with SetGraphFailure, and refuses a caller other than the app
// itself, which would need Application.ReadWrite permissions the emulator does not
// model.
func (e *Emulator) graphObject(objectID, tokenTenant, tokenApp string) (app, *GraphFailure) {
	e.mu.Lock()
	defer e.mu.Unlock()
	clientID, ok := e.objects[objectID]
	if !ok {
		f := notFound(objectID)
		return app{}, &f
	}
	a := e.apps[clientID]
	if a.homeTenant != tokenTenant {
		f := notFound(objectID)
		return app{}, &f
	}
	if f, ok := e.graphFailures[objectID]; ok {
		return app{}, &f
	}
	if tokenApp != clientID {
		f := GraphForbidden()
		return app{}, &f
	}
	return a.clone(), nil
}

// checkProof verifies the proof of possession: RS256, signed by the private key of
// a certificate registered on the app and not expired, named by x5t, with aud
// ProofAudience, iss the object ID, and nbf to exp at most 10 minutes, around now.
// Every defect gets the same answer, as a public report shows for a wrong aud.
func (e *Emulator) checkProof(proof, objectID string, certs []certificate) *GraphFailure {
	bad := badProof()
	tok, err := jwt.ParseSigned(proof, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil || len(tok.Headers) != 1 {
		return &bad
	}
	thumbprint, byS256, ok := headerThumbprint(tok.Headers[0])
	if !ok {
		return &bad
	}
	now := e.clock.Now()
	for _, c := range certs {
		registered := c.sha1[:]
		if byS256 {
			registered = c.sha256[:]
		}
		if subtle.ConstantTimeCompare(registered, thumbprint) != 1 || !now.Before(c.cert.NotAfter) {
			continue
		}
		var verified jwt.Claims
		if err := tok.Claims(c.cert.PublicKey, &verified); err != nil {
			return &bad
		}
		if !verified.Audience.Contains(ProofAudience) || !strings.EqualFold(verified.Issuer, objectID) ||
			verified.NotBefore == nil || verified.Expiry == nil {
			return &bad
		}
		nbf, exp := verified.NotBefore.Time(), verified.Expiry.Time()
		if exp.Sub(nbf) > maxProofLifetime || now.Add(assertionSkew).Before(nbf) || !now.Add(-assertionSkew).Before(exp) {
			return &bad
		}
		return nil
	}
	return &bad
}

// addKey registers the certificate of the body on the app and returns its keyId.
func (e *Emulator) addKey(a app, kc *keyCredentialBody) (string, *GraphFailure) {
	if kc == nil || kc.Key == nil || kc.Type != "AsymmetricX509Cert" || kc.Usage != "Verify" {
		f := badRequest("Invalid value specified for property 'keyCredential' of resource 'Application'.")
		return "", &f
	}
	der, err := base64.StdEncoding.DecodeString(*kc.Key)
	var cert *x509.Certificate
	if err == nil {
		cert, err = x509.ParseCertificate(der)
	}
	if err != nil {
		f := badRequest("Invalid value specified for property 'key' of resource 'KeyCredential'.")
		return "", &f
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	registered := e.apps[e.objects[a.objectID]]
	c := e.newCertificateLocked(cert)
	registered.certs = append(registered.certs, c)
	return c.keyID, nil
}

// removeKey deletes the key credential with keyID from the app.
func (e *Emulator) removeKey(a app, keyID string) *GraphFailure {
	e.mu.Lock()
	defer e.mu.Unlock()
	registered := e.apps[e.objects[a.objectID]]
	i := slices.IndexFunc(registered.certs, func(c certificate) bool { return strings.EqualFold(c.keyID, keyID) })
	if i < 0 {
		// Graph's answer to an unknown keyId is unconfirmed.
		f := notFound(keyID)
		return &f
	}
	registered.certs = slices.Delete(slices.Clone(registered.certs), i, i+1)
	return nil
}

// writeKeyCredential answers addKey with the key credential it added, as Graph
// shows it: the key itself left out.
func (e *Emulator) writeKeyCredential(w http.ResponseWriter, r *http.Request, host, objectID, keyID string) {
	e.mu.Lock()
	var found *certificate
	for _, c := range e.apps[e.objects[objectID]].certs {
		if c.keyID == keyID {
			found = &c
			break
		}
	}
	e.mu.Unlock()
	if found == nil {
		// removed between the two locks; Graph's own races are not modelled further.
		e.writeGraphError(w, r, notFound(keyID))
		return
	}
	custom := base64.StdEncoding.EncodeToString(found.sha1[:])
	name := "CN=" + found.cert.Subject.CommonName
	start := found.cert.NotBefore.UTC().Format(time.RFC3339)
	end := found.cert.NotAfter.UTC().Format(time.RFC3339)
	body := keyCredentialBody{
		ODataContext:        host + "/v1.0/$metadata#microsoft.graph.keyCredential",
		CustomKeyIdentifier: &custom, DisplayName: &name, StartDateTime: &start, EndDateTime: &end,
		KeyID: &keyID, Type: "AsymmetricX509Cert", Usage: "Verify",
	}
	setGraphIDs(w, r)
	w.Header().Set("Content-Type", graphContentType)
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(body) // a failed write means the client is gone
}

// graphErrorBody is Graph's error body.
type graphErrorBody struct {
	Error struct {
		Code       string `json:"code"`
		Message    string `json:"message"`
		InnerError struct {
			Date            string `json:"date"`
			RequestID       string `json:"request-id"`
			ClientRequestID string `json:"client-request-id"`
		} `json:"innerError"`
	} `json:"error"`
}

func (e *Emulator) writeGraphError(w http.ResponseWriter, r *http.Request, f GraphFailure) {
	var body graphErrorBody
	body.Error.Code, body.Error.Message = f.Code, f.Message
	body.Error.InnerError.Date = e.clock.Now().UTC().Format("2006-01-02T15:04:05")
	body.Error.InnerError.RequestID, body.Error.InnerError.ClientRequestID = setGraphIDs(w, r)
	w.Header().Set("Content-Type", graphContentType)
	w.WriteHeader(f.Status)
	_ = json.NewEncoder(w).Encode(body) // a failed write means the client is gone
}

// setGraphIDs sets Graph's request-id and client-request-id headers: the client's
// client-request-id when it sent one, else the request-id.
func setGraphIDs(w http.ResponseWriter, r *http.Request) (requestID, clientRequestID string) {
	requestID = newGUID()
	clientRequestID = r.Header.Get("client-request-id")
	if !isGUID(clientRequestID) {
		clientRequestID = requestID
	}
	w.Header().Set("request-id", requestID)
	w.Header().Set("client-request-id", clientRequestID)
	return requestID, clientRequestID
}
