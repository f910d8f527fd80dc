package entra

import (
	"net/url"
	"strings"
	"time"
)

// Credential is how the application proves who it is in a token request: a
// ClientSecret, a *Certificate or a ClientAssertion. Only this package implements
// it, so every credential is one whose handling (never printed, scrubbed from
// messages) is known here.
type Credential interface {
	// authParams returns the form fields that carry the credential in one token
	// request. Any error is the credential's own fault, such as a key that cannot
	// sign; it must not contain key material.
	authParams(a assertionContext) (url.Values, error)
}

// assertionContext is what a Credential may need to build one request's fields.
type assertionContext struct {
	// clientID is the application's GUID, the assertion's iss and sub.
	clientID string
	// tokenURL is the token endpoint the request goes to, the assertion's aud.
	tokenURL string
	// now is the Client's clock, the assertion's iat and nbf.
	now time.Time
}

// ClientAssertionType is the client_assertion_type of a signed JWT credential
// (RFC 7523), for both certificate credentials and workload identity federation.
const ClientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// ClientSecret is an application's client secret value, sent as client_secret.
// It prints as [redacted].
type ClientSecret string

//nolint:unparam // Credential: a certificate's signing can fail, a secret's cannot.
func (s ClientSecret) authParams(assertionContext) (url.Values, error) {
	if s == "" {
		// As before Credential existed: no field at all, and Entra ID answers
		// AADSTS7000218, which says so.
		return url.Values{}, nil
	}
	return url.Values{"client_secret": {string(s)}}, nil
}

// String hides the secret from %v and %s.
func (s ClientSecret) String() string { return redactedValue(string(s)) }

// GoString hides the secret from %#v.
func (s ClientSecret) GoString() string { return "entra.ClientSecret(" + s.String() + ")" }

// MarshalJSON hides the secret from encoding/json.
func (s ClientSecret) MarshalJSON() ([]byte, error) { return []byte(`"` + s.String() + `"`), nil }

// ClientAssertion is a ready-made client assertion, such as a Kubernetes
// ServiceAccount token for workload identity federation, sent as client_assertion.
// It is a bearer credential and prints as [redacted].
type ClientAssertion string

//nolint:unparam // Credential: a certificate's signing can fail, a ready assertion's cannot.
func (s ClientAssertion) authParams(assertionContext) (url.Values, error) {
	if s == "" {
		return url.Values{}, nil
	}
	return assertionParams(string(s)), nil
}

// String hides the assertion from %v and %s.
func (s ClientAssertion) String() string { return redactedValue(string(s)) }

// GoString hides the assertion from %#v.
func (s ClientAssertion) GoString() string { return "entra.ClientAssertion(" + s.String() + ")" }

// MarshalJSON hides the assertion from encoding/json.
func (s ClientAssertion) MarshalJSON() ([]byte, error) { return []byte(`"` + s.String() + `"`), nil }

func assertionParams(assertion string) url.Values {
	return url.Values{
		"client_assertion_type": {ClientAssertionType},
		"client_assertion":      {assertion},
	}
}

func redactedValue(v string) string {
	if v == "" {
		return ""
	}
	return redacted
}

// credentialKind names a credential for Request.String, never its value.
func credentialKind(c Credential) string {
	switch c.(type) {
	case nil:
		return "none"
	case ClientSecret:
		return "ClientSecret"
	case *Certificate:
		return "Certificate"
	case ClientAssertion:
		return "ClientAssertion"
	default:
		return "unknown"
	}
}

// minSecretPart is the shortest piece of an assertion that is scrubbed on its own.
// Shorter pieces are not worth hiding and would match ordinary text.
const minSecretPart = 16

// secretsIn lists what must never appear in a message about a request with these
// form fields: the secret or assertion whole, and each part of an assertion long
// enough to matter, in case something echoes only its payload or signature.
func secretsIn(params url.Values) []string {
	secrets := make([]string, 0, len(params["client_secret"])+4)
	for _, v := range params["client_secret"] {
		if v != "" {
			secrets = append(secrets, v)
		}
	}
	for _, v := range params["client_assertion"] {
		secrets = append(secrets, jwtParts(v)...)
	}
	return secrets
}

// jwtParts is a JWT (or any dotted secret) whole, and each of its parts long
// enough to matter; nothing for an empty one.
func jwtParts(v string) []string {
	if v == "" {
		return nil
	}
	out := []string{v}
	for part := range strings.SplitSeq(v, ".") {
		if len(part) >= minSecretPart && part != v {
			out = append(out, part)
		}
	}
	return out
}
