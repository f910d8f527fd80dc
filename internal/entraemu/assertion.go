package entraemu

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// jwtBearer is the client_assertion_type of a JWT client assertion (RFC 7523).
const jwtBearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// assertionSkew is how far Entra lets a client assertion's nbf and exp miss the
// clock: the five minutes of Microsoft.IdentityModel's default clock skew.
const assertionSkew = 5 * time.Minute

// Authentication context class references of the app in a token (appidacr, azpacr).
const (
	acrSecret    = "1" // a client secret
	acrAssertion = "2" // a certificate or federated client assertion
)

// certificateAlgorithms are the signatures Entra accepts on a certificate
// assertion: PS256, and RS256 of the older form with x5t.
var certificateAlgorithms = []jose.SignatureAlgorithm{jose.PS256, jose.RS256}

// federatedAlgorithms are the signatures an external OIDC issuer may use, such as
// a kube-apiserver's RS256 or ES256.
var federatedAlgorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512, jose.ES256, jose.ES384, jose.ES512,
}

// Documentation links Entra puts in its client assertion errors.
const (
	certificateCredentialsDoc = "https://learn.microsoft.com/entra/identity-platform/certificate-credentials"
	federationDoc             = "https://learn.microsoft.com/entra/workload-id/workload-identity-federation"
)

// authenticate checks the client's credential against the app's and returns the
// acr the token names it by. It runs without the lock: it verifies signatures, and
// may fetch an issuer's keys.
func (e *Emulator) authenticate(ctx context.Context, clientID string, a app, req tokenRequest) (string, *Failure) {
	switch {
	case req.assertion != "" && req.secret != "":
		// RFC 6749 section 2.3: a client must not use more than one method.
		return "", oauthError(http.StatusBadRequest, "invalid_request", 0,
			"The request must not contain both 'client_secret' and 'client_assertion'.")
	case req.assertion != "":
		switch req.assertionType {
		case jwtBearer:
		case "":
			return "", missingParameter("client_assertion_type")
		default:
			return "", oauthError(http.StatusBadRequest, "invalid_request", 0,
				"The provided client_assertion_type '%s' is not supported.", req.assertionType)
		}
		if fail := e.checkAssertion(ctx, clientID, a, req); fail != nil {
			return "", fail
		}
		return acrAssertion, nil
	default:
		if fail := checkSecret(clientID, a.secrets, req.secret, e.clock.Now()); fail != nil {
			return "", fail
		}
		return acrSecret, nil
	}
}

// checkAssertion verifies a client assertion. An assertion that names a
// certificate thumbprint, or that the app issued about itself (iss = client_id), is
// a certificate assertion; any other is an external issuer's token for a federated
// identity credential.
func (e *Emulator) checkAssertion(ctx context.Context, clientID string, a app, req tokenRequest) *Failure {
	tok, err := jwt.ParseSigned(req.assertion, federatedAlgorithms)
	if err != nil || len(tok.Headers) != 1 {
		return malformedAssertion()
	}
	var c jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&c); err != nil {
		return malformedAssertion()
	}
	header := tok.Headers[0]
	_, hasX5t := header.ExtraHeaders["x5t"]
	_, hasX5tS256 := header.ExtraHeaders["x5t#S256"]
	if hasX5t || hasX5tS256 || strings.EqualFold(c.Issuer, clientID) {
		return e.checkCertificateAssertion(tok, header, c, clientID, a.certs, req.audiences)
	}
	return e.checkFederatedAssertion(ctx, tok, header, c, a.feds)
}

func malformedAssertion() *Failure {
	return oauthError(http.StatusUnauthorized, "invalid_client", 50027, "JWT token is invalid or malformed.")
}

// checkCertificateAssertion verifies an assertion the app signed with the private
// key of one of its certificates.
func (e *Emulator) checkCertificateAssertion(tok *jwt.JSONWebToken, header jose.Header, c jwt.Claims,
	clientID string, certs []certificate, audiences []string) *Failure {
	if !strings.EqualFold(c.Issuer, clientID) || !strings.EqualFold(c.Subject, clientID) {
		return oauthError(http.StatusUnauthorized, "invalid_client", 700021,
			"Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation at %s .",
			certificateCredentialsDoc)
	}
	if !slices.Contains(certificateAlgorithms, jose.SignatureAlgorithm(header.Algorithm)) {
		return malformedAssertion()
	}
	thumbprint, byS256, ok := headerThumbprint(header)
	if !ok {
		return oauthError(http.StatusUnauthorized, "invalid_client", 50027,
			"Invalid JWT token. No certificate thumbprint specified in token header.")
	}
	found := -1
	now := e.clock.Now()
	for i, cert := range certs {
		if now.Before(cert.usableAt) {
			// Not yet on the replica that answers: to it, the key does not exist.
			continue
		}
		registered := cert.sha1[:]
		if byS256 {
			registered = cert.sha256[:]
		}
		if subtle.ConstantTimeCompare(registered, thumbprint) == 1 {
			found = i
			break
		}
	}
	if found < 0 {
		// Entra shows the thumbprint the client used, in the portal's upper-case hex.
		return oauthError(http.StatusUnauthorized, "invalid_client", 700027,
			"The certificate with identifier used to sign the client assertion is not registered on application. "+
				"[Reason - The key was not found., Thumbprint of key used by client: '%s', "+
				"Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '%s'. "+
				"Review the documentation at https://docs.microsoft.com/en-us/graph/deployments to determine the corresponding service endpoint "+
				"and https://docs.microsoft.com/en-us/graph/api/application-get?view=graph-rest-1.0&tabs=http to build a query request URL, "+
				"such as 'https://graph.microsoft.com/beta/applications/%s']. "+
				"Alternatively, SNI may be configured on the app. Please ensure that client assertion is being sent with the x5c claim "+
				"in the JWT header using MSAL's WithSendX5C() method so that Azure Active Directory can validate the certificate being used.",
			strings.ToUpper(hex.EncodeToString(thumbprint)), clientID, clientID)
	}
	cert := certs[found]
	foundKey := "Found key 'Start=" + cert.cert.NotBefore.UTC().Format(keyTimeFormat) +
		", End=" + cert.cert.NotAfter.UTC().Format(keyTimeFormat) + "'"
	used := strings.ToUpper(hex.EncodeToString(cert.sha1[:]))
	if !now.Before(cert.cert.NotAfter) {
		return oauthError(http.StatusUnauthorized, "invalid_client", 700027,
			"Client assertion contains an invalid signature. [Reason - The key used is expired., Thumbprint of key used by client: '%s', %s].",
			used, foundKey)
	}
	var verified jwt.Claims
	if err := tok.Claims(cert.cert.PublicKey, &verified); err != nil {
		return oauthError(http.StatusUnauthorized, "invalid_client", 700027,
			"Client assertion contains an invalid signature. [Reason - The provided signature value did not match the expected signature value., "+
				"Thumbprint of key used by client: '%s', %s].", used, foundKey)
	}
	if !slices.ContainsFunc(audiences, func(want string) bool {
		return slices.ContainsFunc(verified.Audience, func(got string) bool { return strings.EqualFold(got, want) })
	}) {
		return oauthError(http.StatusUnauthorized, "invalid_client", 700023,
			"Client assertion audience claim does not match Realm issuer. Review the documentation at %s .", certificateCredentialsDoc)
	}
	return e.checkAssertionTimes(verified)
}

// keyTimeFormat is how Entra shows a certificate's validity in its errors.
const keyTimeFormat = "01/02/2006 15:04:05"

// headerThumbprint returns the certificate thumbprint the assertion's header names:
// x5t#S256 if present, else x5t, and whether it is the SHA-256 one.
func headerThumbprint(h jose.Header) (thumbprint []byte, sha256 bool, ok bool) {
	for _, name := range []jose.HeaderKey{"x5t#S256", "x5t"} {
		s, isString := h.ExtraHeaders[name].(string)
		if !isString {
			continue
		}
		b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
		if err != nil {
			return nil, false, false
		}
		return b, name == "x5t#S256", true
	}
	return nil, false, false
}

// checkFederatedAssertion verifies an external issuer's token against the app's
// federated identity credentials, in Entra's order: a credential of the issuer,
// the issuer's signature, the time range, then subject and audience.
func (e *Emulator) checkFederatedAssertion(ctx context.Context, tok *jwt.JSONWebToken, header jose.Header,
	c jwt.Claims, feds []FederatedCredential) *Failure {
	if len(feds) == 0 {
		return oauthError(http.StatusUnauthorized, "invalid_client", 70021,
			"No matching federated identity record found for presented assertion. "+
				"Assertion Issuer: '%s'. Assertion Subject: '%s'. Assertion Audience: '%s'. "+
				"https://docs.microsoft.com/en-us/azure/active-directory/develop/workload-identity-federation",
			c.Issuer, c.Subject, strings.Join(c.Audience, ","))
	}
	var ofIssuer []FederatedCredential
	for _, fc := range feds {
		if fc.Issuer == c.Issuer {
			ofIssuer = append(ofIssuer, fc)
		}
	}
	if len(ofIssuer) == 0 {
		return oauthError(http.StatusUnauthorized, "invalid_client", 700211,
			"No matching federated identity record found for presented assertion issuer '%s'. "+
				"Check your federated identity credential Subject, Audience and Issuer against the presented assertion. %s",
			c.Issuer, federationDoc)
	}

	verified, fail := e.verifyFederatedSignature(ctx, tok, header, c.Issuer)
	if fail != nil {
		return fail
	}
	if fail := e.checkAssertionTimes(verified); fail != nil {
		return fail
	}

	var ofSubject []FederatedCredential
	caseOnly := false
	for _, fc := range ofIssuer {
		switch {
		case fc.Subject == verified.Subject:
			ofSubject = append(ofSubject, fc)
		case strings.EqualFold(fc.Subject, verified.Subject):
			caseOnly = true
		}
	}
	if len(ofSubject) == 0 && caseOnly {
		return oauthError(http.StatusUnauthorized, "invalid_client", 7002138,
			"No matching federated identity record found for presented assertion subject '%s'. "+
				"The subject matches with case-insensitive comparison, but not with case-sensitive comparison. "+
				"Check your federated identity credential Subject, Audience and Issuer against the presented assertion. "+
				"See documentation at: %s. See breaking change notification and remediation at: "+
				"https://learn.microsoft.com/en-us/entra/identity-platform/reference-breaking-changes#august-2024.",
			verified.Subject, federationDoc)
	}
	if len(ofSubject) == 0 {
		return oauthError(http.StatusUnauthorized, "invalid_client", 700213,
			"No matching federated identity record found for presented assertion subject '%s'. "+
				"Check your federated identity credential Subject, Audience and Issuer against the presented assertion. %s",
			verified.Subject, federationDoc)
	}
	for _, fc := range ofSubject {
		if slices.Contains(verified.Audience, fc.audience()) {
			return nil
		}
	}
	return oauthError(http.StatusUnauthorized, "invalid_client", 700212,
		"No matching federated identity record found for presented assertion audience '%s'. "+
			"Check your federated identity credential Subject, Audience and Issuer against the presented assertion. %s",
		strings.Join(verified.Audience, ","), federationDoc)
}

// verifyFederatedSignature checks the token's signature with the issuer's keys and
// returns its claims.
func (e *Emulator) verifyFederatedSignature(ctx context.Context, tok *jwt.JSONWebToken, header jose.Header,
	issuer string) (jwt.Claims, *Failure) {
	keyNotFound := oauthError(http.StatusUnauthorized, "invalid_client", 7000272,
		"The certificate with identifier %s used to sign the federated credential could not be found in the metadata of identity provider %s. "+
			"Please validate that your Identity Provider's metadata exposes the key used to sign the incoming token.",
		header.KeyID, issuer)
	src := e.issuerKeySource(issuer)
	if src == nil {
		return jwt.Claims{}, keyNotFound
	}
	set, err := src(ctx)
	if err != nil {
		return jwt.Claims{}, keyNotFound
	}
	keys := set.Keys
	if header.KeyID != "" {
		keys = set.Key(header.KeyID)
	}
	if len(keys) == 0 {
		return jwt.Claims{}, keyNotFound
	}
	for _, k := range keys {
		var verified jwt.Claims
		if err := tok.Claims(k.Public(), &verified); err == nil {
			return verified, nil
		}
	}
	return jwt.Claims{}, oauthError(http.StatusUnauthorized, "invalid_client", 700027,
		"Client assertion failed signature validation.")
}

// checkAssertionTimes rejects an assertion outside its nbf to exp range, give or take
// the clock skew. Entra shows a missing nbf or exp as 1970-01-01, and without exp no
// time is in range.
func (e *Emulator) checkAssertionTimes(c jwt.Claims) *Failure {
	now := e.clock.Now().UTC()
	var nbf, exp time.Time
	if c.NotBefore != nil {
		nbf = c.NotBefore.Time()
	} else {
		nbf = time.Unix(0, 0)
	}
	if c.Expiry != nil {
		exp = c.Expiry.Time()
	} else {
		exp = time.Unix(0, 0)
	}
	if now.Add(assertionSkew).Before(nbf) || !now.Add(-assertionSkew).Before(exp) {
		return oauthError(http.StatusBadRequest, "invalid_client", 700024,
			"Client assertion is not within its valid time range. Current time: %s, assertion valid from %s, "+
				"expiry time of assertion %s. Review the documentation at %s .",
			now.Format(assertionTimeFormat), nbf.UTC().Format(assertionTimeFormat), exp.UTC().Format(assertionTimeFormat),
			certificateCredentialsDoc)
	}
	return nil
}

// assertionTimeFormat is how Entra shows times in AADSTS700024.
const assertionTimeFormat = "2006-01-02T15:04:05.0000000Z"

// tokenAudiences returns what a certificate assertion's aud may be for a request
// that reached the token endpoint at r: the v2 or the v1 token URL of the request's
// tenant segment, at the host as the request reached it and at the sign-in host the
// handler stands in for.
func tokenAudiences(r *http.Request, host string) []string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	tenant := r.PathValue("tenant")
	out := make([]string, 0, 4)
	for _, base := range []string{scheme + "://" + r.Host, host} {
		out = append(out, base+"/"+tenant+"/oauth2/v2.0/token", base+"/"+tenant+"/oauth2/token")
	}
	return out
}
