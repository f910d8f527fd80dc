package entra

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/utils/clock"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// DefaultTimeout bounds one token request when Client.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// Request is one client-credentials token request. All fields are required.
//
// Credential must never be logged, formatted into errors, or kept after the
// request. As a guard against accidents, a Request prints and marshals to JSON
// without it, naming only its kind.
type Request struct {
	// AuthorityHost is the Entra ID sign-in host, such as AuthorityHost(cloud) or
	// the result of ParseAuthorityHost.
	AuthorityHost string
	// TenantID is the customer tenant's GUID.
	TenantID string
	// ClientID is the multi-tenant application's GUID.
	ClientID string
	// Credential is the application's credential: a ClientSecret, a *Certificate
	// (from ParseCertificate) or a ClientAssertion.
	Credential Credential `json:"-"`
	// Resource is the API the token is for; the scope is Scope(Resource).
	Resource string
}

// String describes r without its credential, for %v and %s.
func (r Request) String() string {
	return fmt.Sprintf("{AuthorityHost:%s TenantID:%s ClientID:%s Credential:%s Resource:%s}",
		r.AuthorityHost, r.TenantID, r.ClientID, credentialKind(r.Credential), r.Resource)
}

// GoString describes r without its credential, for %#v.
func (r Request) GoString() string {
	return "entra.Request" + r.String()
}

// Token is a successful answer from the token endpoint.
type Token struct {
	// AccessToken is the raw JWT. Like the secret, it must never be logged.
	AccessToken string
	// TokenType is the token type, "Bearer" when the answer did not say.
	TokenType string
	// ClientRequestID is the request's client-request-id: the one Entra ID echoed
	// back, or else the one sent.
	ClientRequestID string
}

// Requester requests tokens. The controller depends on it so that tests can use a
// fake, or a Client pointed at the Entra ID emulator.
type Requester interface {
	// RequestToken sends req and returns the token, or a *Failure.
	RequestToken(ctx context.Context, req Request) (Token, error)
}

// Client is the Requester that talks to Entra ID. The zero value is ready to use
// and safe for concurrent use.
type Client struct {
	// HTTPClient sends the requests. nil uses a client shared by all Clients whose
	// transport is sized for many tenants signing in at the same host and reads at
	// most MaxResponseHeaderBytes of response headers. Redirects are never
	// followed, whatever the client's own policy; the limits of a caller's own
	// transport (such as MaxResponseHeaderBytes) are the caller's to set.
	HTTPClient *http.Client
	// Timeout bounds each request; zero means DefaultTimeout.
	Timeout time.Duration
	// Clock dates the client assertions signed for a *Certificate and resolves a
	// Retry-After given as an HTTP date into a wait, so that tests on a fake
	// clock get what they expect. nil means the real clock.
	Clock clock.PassiveClock
}

var _ Requester = (*Client)(nil)

// RequestToken requests a token with the client-credentials grant, credentials in
// the form body, and sends exactly one HTTP request. Every error it returns is a
// *Failure whose message contains no credential: no client secret, no assertion,
// no key.
//
// The credential goes in the form body: client_secret for a ClientSecret;
// client_assertion_type and client_assertion for a ClientAssertion and for a
// *Certificate, which signs a fresh assertion for each call (aud the token URL,
// iss and sub the client ID, valid from the Client's Clock for
// AssertionLifetime). A Certificate that cannot sign fails as
// InvalidCertificate, before any request is sent, with no ClientRequestID.
//
// Each request carries a fresh client-request-id GUID and asks Entra ID to echo it
// (return-client-request-id: true), as MSAL does: the customer tenant's sign-in
// logs and Microsoft support find a request by it. The Token or Failure returned
// carries it.
func (c *Client) RequestToken(ctx context.Context, req Request) (Token, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	tokenURL := TokenURL(req.AuthorityHost, req.TenantID)
	params, err := authParams(req.Credential, assertionContext{clientID: req.ClientID, tokenURL: tokenURL, now: c.now()})
	if err != nil {
		return Token{}, err
	}
	s := scrubber{secrets: secretsIn(params)}

	// A copy of the client, so that the wrapper is this request's alone.
	hc := *c.httpClient()
	ids := &requestIDTransport{base: hc.Transport, sent: string(uuid.NewUUID())}
	hc.Transport = ids
	ctx = context.WithValue(ctx, oauth2.HTTPClient, &hc)

	cfg := clientcredentials.Config{
		ClientID: req.ClientID,
		// Always empty: the credential is in EndpointParams, so that a secret and
		// an assertion travel the same way, and x/oauth2 adds no client_secret.
		ClientSecret:   "",
		EndpointParams: params,
		TokenURL:       tokenURL,
		Scopes:         []string{Scope(req.Resource)},
		// The default style tries Basic auth first and the form body after any
		// error, so a wrong secret would cost two requests (and two failed
		// sign-ins in the customer's logs). Entra ID takes the form body.
		AuthStyle: oauth2.AuthStyleInParams,
	}
	tok, err := cfg.Token(ctx)
	if err != nil {
		// x/oauth2 formats a failure to read the body with %v, which drops the
		// context error; put it back so a slow body reads as a timeout.
		if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
			err = errors.Join(ctxErr, err)
		}
		f := classify(err, c.now(), s, thumbprintOf(req.Credential))
		f.ClientRequestID = ids.clientRequestID(s)
		return Token{}, f
	}
	return Token{AccessToken: tok.AccessToken, TokenType: tok.Type(), ClientRequestID: ids.clientRequestID(s)}, nil
}

// authParams returns the credential's form fields, or the *Failure of a
// credential that cannot make them. A nil Credential sends none, like an empty
// ClientSecret, and Entra ID answers that it got no credential (AADSTS7000218).
func authParams(cred Credential, a assertionContext) (url.Values, error) {
	if cred == nil {
		return url.Values{}, nil
	}
	params, err := cred.authParams(a)
	if err != nil {
		// Only a Certificate fails here. Its error comes from the signer, which
		// does not quote the key; scrub what it could have made anyway.
		s := scrubber{secrets: secretsIn(params)}
		f := &Failure{
			Reason: v1alpha1.ReasonInvalidCertificate,
			Message: "Could not sign the client assertion with the certificate's private key: " + s.line(err.Error(), maxDetailLen) +
				". Check the app's certificate Secret (tls.crt and tls.key, an RSA key of at least 2048 bits).",
		}
		f.Kind = kindOf(f.Reason)
		return nil, f
	}
	return params, nil
}

// thumbprintOf is the SHA-1 thumbprint of a certificate credential, so that
// AADSTS700027 can name the certificate to register; empty for any other.
func thumbprintOf(cred Credential) string {
	if c, ok := cred.(*Certificate); ok && c != nil && c.leaf != nil {
		return c.SHA1Thumbprint()
	}
	return ""
}

// requestIDTransport adds the client-request-id headers to the one token request
// of a RequestToken call and notes the ID Entra ID echoes. It is made per call
// around the shared transport, so connections are still pooled.
type requestIDTransport struct {
	base http.RoundTripper // nil means http.DefaultTransport
	sent string
	// echoed is the client-request-id response header. RoundTrip writes it in the
	// goroutine that sends the request, before the token request returns.
	echoed string
}

func (t *requestIDTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	// A RoundTripper must not modify the request it is given.
	r = r.Clone(r.Context())
	r.Header.Set("client-request-id", t.sent)
	r.Header.Set("return-client-request-id", "true")
	base := t.base
	if base == nil {
		base = http.DefaultTransport
	}
	resp, err := base.RoundTrip(r)
	if resp != nil {
		t.echoed = resp.Header.Get("client-request-id")
	}
	return resp, err
}

// clientRequestID prefers the echoed ID, cleaned up as it came from the network,
// to the one sent.
func (t *requestIDTransport) clientRequestID(s scrubber) string {
	if echoed := s.line(t.echoed, maxIDLen); echoed != "" {
		return echoed
	}
	return t.sent
}

func (c *Client) now() time.Time {
	if c.Clock == nil {
		return time.Now()
	}
	return c.Clock.Now()
}

// httpClient returns the client to send with, with redirects disabled: the request
// body carries the credential, and a 307 or 308 would resend it to wherever
// the Location header points. Copying an http.Client is cheap and shares its
// Transport, so connections are still pooled.
func (c *Client) httpClient() *http.Client {
	if c.HTTPClient == nil {
		return defaultHTTPClient()
	}
	hc := *c.HTTPClient
	hc.CheckRedirect = refuseRedirect
	return &hc
}

func refuseRedirect(*http.Request, []*http.Request) error {
	return http.ErrUseLastResponse
}

// MaxResponseHeaderBytes bounds the response headers the shared client reads from
// the token endpoint, or a proxy in front of it. Go's default is 10 MiB, far more
// than the kilobyte or two Entra ID sends: with 10 tenants minting at once, a
// hostile endpoint could make every request hold 10 MiB of headers. An answer
// over the limit is aborted by the transport while its headers are read, and
// fails as TokenEndpointUnavailable ("server response headers exceeded").
//
// The response body needs no limit of its own here: x/oauth2 reads at most 1 MiB
// of it (io.LimitReader in golang.org/x/oauth2/internal/token.go).
const MaxResponseHeaderBytes = 64 << 10

// defaultHTTPClient is shared so that every tenant reuses the same connections to
// the sign-in host. The transport is built here rather than cloned from
// http.DefaultTransport, which other code may have replaced.
var defaultHTTPClient = sync.OnceValue(func() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy: http.ProxyFromEnvironment, // air-gapped clusters reach Entra ID through a proxy
			DialContext: (&net.Dialer{
				Timeout:   10 * time.Second,
				KeepAlive: 30 * time.Second,
			}).DialContext,
			ForceAttemptHTTP2:   true,
			TLSHandshakeTimeout: 10 * time.Second,
			// All tenants of a cloud sign in at one host. Go's default of two idle
			// connections per host would make concurrent reconciles (10 by default)
			// pay a TLS handshake each time.
			MaxIdleConns:           100,
			MaxIdleConnsPerHost:    32,
			IdleConnTimeout:        90 * time.Second,
			ExpectContinueTimeout:  time.Second,
			MaxResponseHeaderBytes: MaxResponseHeaderBytes,
		},
		CheckRedirect: refuseRedirect,
	}
})
