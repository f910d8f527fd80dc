package entraemu

import (
	"context"
	"crypto/sha1" //nolint:gosec // x5t is defined as a SHA-1 thumbprint (RFC 7515 section 4.1.7).
	"crypto/sha256"
	"crypto/x509"
	"slices"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// DefaultFederatedAudience is the audience Entra proposes for a federated identity
// credential, and the one a FederatedCredential without Audience gets.
const DefaultFederatedAudience = "api://AzureADTokenExchange"

// FederatedCredential is a federated identity credential of an app registration:
// Entra accepts, as the app's client assertion, a token that Issuer signed about
// Subject for Audience. Entra matches all three case-sensitively.
type FederatedCredential struct {
	// Issuer is the token issuer, such as a cluster's service-account issuer URL.
	Issuer string `json:"issuer"`
	// Subject is the token's sub, such as system:serviceaccount:<namespace>:<name>.
	Subject string `json:"subject"`
	// Audience must be one of the token's aud; empty means DefaultFederatedAudience.
	Audience string `json:"audience,omitempty"`
}

// audience returns the audience the credential asks for, with the default applied.
func (fc FederatedCredential) audience() string {
	if fc.Audience == "" {
		return DefaultFederatedAudience
	}
	return fc.Audience
}

// KeySource returns the verification keys of a federated token issuer, as Entra
// fetches them from the issuer's OIDC discovery document: for a cluster, the
// kube-apiserver's /openid/v1/jwks. It is called for each federated assertion of
// the issuer, without any lock held, so it may make a request of its own.
type KeySource func(ctx context.Context) (jose.JSONWebKeySet, error)

// app is an app registration and its credentials.
type app struct {
	// objectID and homeTenant are set by RegisterApplication: the app
	// registration's object in its home tenant, which Microsoft Graph serves.
	objectID   string
	homeTenant string
	secrets    []Secret
	certs      []certificate
	feds       []FederatedCredential
	// permissions are the application roles the registration requests per
	// resourceKey(URI): what admin consent grants.
	permissions map[string][]string
}

// certificate is a certificate credential, kept with the thumbprints a client
// assertion names it by.
type certificate struct {
	cert   *x509.Certificate
	sha1   [sha1.Size]byte
	sha256 [sha256.Size]byte
	// keyID is the keyCredential's keyId, as Graph's addKey returns it.
	keyID string
	// usableAt is when the token endpoint first accepts the key: Entra ID
	// replicates a new key to its replicas with a delay (SetReplicationDelay).
	usableAt time.Time
}

// newCertificateLocked is a new key credential of the certificate, usable after
// the replication delay.
func (e *Emulator) newCertificateLocked(c *x509.Certificate) certificate {
	return certificate{
		cert: c, sha1: sha1.Sum(c.Raw), sha256: sha256.Sum256(c.Raw), //nolint:gosec // see the import
		keyID: newGUID(), usableAt: e.clock.Now().Add(e.replicationDelay),
	}
}

// clone copies the credential lists, so that a request can check them without the lock.
func (a *app) clone() app {
	return app{
		objectID: a.objectID, homeTenant: a.homeTenant,
		secrets: slices.Clone(a.secrets), certs: slices.Clone(a.certs), feds: slices.Clone(a.feds),
	}
}

// appLocked returns the app registration, adding it if it does not exist yet.
func (e *Emulator) appLocked(clientID string) *app {
	id := normalizeID(clientID)
	a, ok := e.apps[id]
	if !ok {
		a = &app{}
		e.apps[id] = a
	}
	return a
}

// AddCertificate adds a certificate credential to an app, registering the app if
// needed, as uploading the public certificate in the portal does. A client assertion
// names it by its SHA-256 thumbprint (header x5t#S256) or, in the older form, by its
// SHA-1 thumbprint (x5t). Entra stops accepting it after its NotAfter, and starts
// only after the replication delay (SetReplicationDelay).
func (e *Emulator) AddCertificate(clientID string, cert *x509.Certificate) {
	e.mu.Lock()
	defer e.mu.Unlock()
	a := e.appLocked(clientID)
	a.certs = append(a.certs, e.newCertificateLocked(cert))
}

// SetCertificates replaces all certificate credentials of an app, as a rotation that
// deletes the old certificate does, registering the app if needed.
func (e *Emulator) SetCertificates(clientID string, certs ...*x509.Certificate) {
	e.mu.Lock()
	defer e.mu.Unlock()
	a := e.appLocked(clientID)
	a.certs = nil
	for _, c := range certs {
		a.certs = append(a.certs, e.newCertificateLocked(c))
	}
}

// AddFederatedCredential adds a federated identity credential to an app,
// registering the app if needed. The issuer's keys come from SetIssuerKeys or
// SetIssuerKeySource.
func (e *Emulator) AddFederatedCredential(clientID string, fc FederatedCredential) {
	e.mu.Lock()
	defer e.mu.Unlock()
	a := e.appLocked(clientID)
	a.feds = append(a.feds, fc)
}

// SetFederatedCredentials replaces all federated identity credentials of an app,
// registering the app if needed.
func (e *Emulator) SetFederatedCredentials(clientID string, fcs ...FederatedCredential) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.appLocked(clientID).feds = slices.Clone(fcs)
}

// SetIssuerKeys sets the verification keys of a federated token issuer, named
// exactly as its tokens' iss claim names it.
func (e *Emulator) SetIssuerKeys(issuer string, keys jose.JSONWebKeySet) {
	keys.Keys = slices.Clone(keys.Keys)
	e.SetIssuerKeySource(issuer, func(context.Context) (jose.JSONWebKeySet, error) { return keys, nil })
}

// SetIssuerKeySource makes src the source of a federated token issuer's keys, for
// an issuer whose keys rotate, such as a real kube-apiserver. Nil forgets the issuer.
func (e *Emulator) SetIssuerKeySource(issuer string, src KeySource) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if src == nil {
		delete(e.issuers, issuer)
		return
	}
	e.issuers[issuer] = src
}

// issuerKeySource returns the key source of the issuer, or nil.
func (e *Emulator) issuerKeySource(issuer string) KeySource {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.issuers[issuer]
}
