package entra

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/oauth2"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// Kind says how the controller retries after a Failure.
type Kind int

const (
	// Transient failures go away by themselves: they are retried with exponential
	// backoff and the DefenderTenant reports Reconciling=True.
	Transient Kind = iota
	// NeedsHuman failures need a credential, consent or spec fix. They are still
	// retried, slowly, because the fix usually happens in Entra ID where the operator
	// cannot watch it; the DefenderTenant reports Stalled=True.
	NeedsHuman
)

// String returns the Kind's name.
func (k Kind) String() string {
	switch k {
	case Transient:
		return "Transient"
	case NeedsHuman:
		return "NeedsHuman"
	default:
		return "Kind(" + strconv.Itoa(int(k)) + ")"
	}
}

// Failure is a failed token request, classified. It is the only error type
// RequestToken returns, and it is built so that it can be copied into conditions
// and events as is: it holds no secret, no token and no response body.
type Failure struct {
	// Reason is one of the v1alpha1.Reason* constants.
	Reason string
	// Kind says how to retry.
	Kind Kind
	// Message says what happened and what the user should do. It starts with the
	// AADSTS code when Entra ID sent one and may end with the first line of Entra
	// ID's error_description, shortened.
	Message string
	// RetryAfter is the wait Entra ID asked for with Retry-After on a 429 or 503;
	// zero when absent.
	RetryAfter time.Duration
	// StatusCode is the HTTP status, zero when no response arrived.
	StatusCode int
	// ErrorCode is the OAuth2 "error" field, such as "invalid_client".
	ErrorCode string
	// AADSTS holds Entra ID's "error_codes", such as 7000215.
	AADSTS []int
	// TraceID and CorrelationID are the error body's "trace_id" and
	// "correlation_id", empty when Entra ID sent none. Microsoft support and the
	// customer tenant's sign-in logs know a request by them; they are kept out of
	// Message so that it stays the same from one attempt to the next.
	TraceID       string
	CorrelationID string
	// ClientRequestID is the request's client-request-id: the one Entra ID echoed
	// back, or else the one sent. RequestToken sets it when it sent a request
	// (not for a certificate that could not sign); Classify cannot know it.
	ClientRequestID string
}

// Error returns the reason and the message.
func (f *Failure) Error() string {
	return f.Reason + ": " + f.Message
}

// Classify maps err, as returned by an x/oauth2 token request, to a Failure. It is
// the one place where Entra ID's answers become contract reasons. now is used to
// resolve a Retry-After given as an HTTP date. Classify(nil, now) is nil.
//
// The order of precedence is: HTTP 429, then AADSTS codes, then the OAuth2 error,
// then the HTTP status (408, 5xx and others: TokenEndpointUnavailable; any other 4xx:
// TokenRequestRejected). 429 comes first because its Retry-After decides when to try
// again, whatever the body says; AADSTS codes come before the OAuth2 error because
// they are more specific (invalid_client covers both a wrong secret and missing
// consent).
//
// Classify does not know the credential; RequestToken, which does, also removes
// it from the message, and names a certificate Entra ID does not know by its
// SHA-1 thumbprint (AADSTS700027).
func Classify(err error, now time.Time) *Failure {
	return classify(err, now, scrubber{}, "")
}

// rule is what a recognised answer means: a reason, and advice saying what
// happened and what to do.
type rule struct {
	reason string
	advice string
}

const (
	adviceConsent = "Have an administrator of the customer tenant grant admin consent at status.adminConsentURL."
	thenConsent   = "then have an administrator of the customer tenant grant admin consent at status.adminConsentURL."
	adviceScope   = "Entra ID rejected the requested scope. Check spec.resource and the application's API permissions, " + thenConsent
	adviceTenant  = "Entra ID does not know the tenant. Check spec.tenantID, and spec.cloud: a GCC High or DoD tenant needs cloud USGovHigh or DoD."
	adviceBusy    = "Entra ID reported a temporary problem; the request is retried with backoff."
	adviceCloud   = "The tenant lives in another cloud than the one asked: a GCC High or DoD tenant is in Azure Government " +
		"(login.microsoftonline.us), a commercial or GCC tenant in the commercial cloud (login.microsoftonline.com). " +
		"Check spec.cloud (USGovHigh or DoD for a GCC High or DoD tenant); GCC High and DoD tenants also need an app " +
		"registered in Azure Government, as an app of the commercial cloud cannot get their tokens. If --authority-host " +
		"sends every cloud to one proxy, name the clouds one by one (--authority-host=Public=URL,USGovHigh=URL)."
	adviceConditionalAccess = "A Conditional Access policy of the customer tenant blocks the application. Consent does not help: " +
		"an administrator of the customer tenant's Conditional Access must exclude the application, or the operator's " +
		"network location, from the policy."
	adviceTenantRestrictions = "Tenant restrictions block the request: a proxy on the operator's egress adds a " +
		"Restrict-Access-To-Tenants header that does not list this tenant. The partner's network or proxy administrator " +
		"must add the tenant to the list, or exempt the operator's traffic."
	adviceTenantBlocked = "Microsoft has blocked the customer tenant. Only Microsoft support can lift the block; " +
		"an administrator of the customer tenant must contact them."
	adviceAppDisabled = "The application is disabled, in the customer tenant or by Microsoft. Consent does not help: " +
		"the application's owner, or the administrator of the customer tenant who disabled it, must enable it again."
	adviceAssertionTime = "The client assertion was outside its valid time window when Entra ID checked it: the operator's clock " +
		"is probably off (clock skew), as each assertion is valid for 10 minutes from the moment it is signed. Synchronise the " +
		"clock of the node the operator runs on (NTP); with workload identity, also check that the ServiceAccount token has not expired."
	adviceNoFederatedMatch = "No federated credential of the app registration matches the assertion's issuer, subject and audience. " +
		"Add one in Entra ID (Certificates & secrets, Federated credentials) with the issuer, subject and audience exactly as the " +
		"app's status.federatedCredential shows them; matching is case-sensitive."
	adviceFederatedIssuer = "The assertion's issuer matches no federated credential of the app registration. Set the federated " +
		"credential's Issuer to the cluster's service-account issuer exactly as status.federatedCredential.issuer shows it " +
		"(a trailing slash counts; matching is case-sensitive)."
	adviceFederatedAudience = "The assertion's audience matches no federated credential of the app registration. Set the federated " +
		"credential's Audience to status.federatedCredential.audience (api://AzureADTokenExchange by default), or set the app's " +
		"spec.credential.workloadIdentity.audience to the audience registered, if the operator's --workload-identity-audiences " +
		"allows it; matching is case-sensitive."
	adviceFederatedSubject = "The assertion's subject matches no federated credential of the app registration. Set the federated " +
		"credential's Subject to status.federatedCredential.subject (system:serviceaccount:<namespace>:<name>) exactly; " +
		"matching is case-sensitive."
	adviceFederatedSubjectCase = "The assertion's subject matches a federated credential of the app registration only when case is " +
		"ignored, and Entra ID matches case-sensitively. Correct the case of the federated credential's Subject to " +
		"status.federatedCredential.subject exactly."
	adviceFederatedIssuerKeys = "Entra ID could not find the key that signed the ServiceAccount token in the issuer's published keys: " +
		"the cluster's OIDC discovery document and JWKS (/openid/v1/jwks) must be reachable by Entra ID over https at " +
		"the issuer URL of status.federatedCredential.issuer, and be current after a signing key rotation."
)

// unknownCertificateCode is AADSTS700027: Entra ID has no key for the assertion's
// signature, so the message names the certificate to register when it can.
const unknownCertificateCode = 700027

// adviceUnknownCertificate is AADSTS700027's advice, naming the certificate by
// its SHA-1 thumbprint when the caller knows it.
func adviceUnknownCertificate(sha1Thumbprint string) string {
	which := "the certificate (its SHA-1 thumbprint is in the app's status.certificate)"
	if sha1Thumbprint != "" {
		which = "the certificate with SHA-1 thumbprint " + sha1Thumbprint
	}
	return "Entra ID could not verify the client assertion's signature: the certificate is not registered on the app " +
		"registration, or was removed. Upload " + which + " to the app registration in Entra ID (Certificates & secrets, " +
		"Certificates), or put the certificate registered there in the app's certificate Secret."
}

// aadstsRules follows the AADSTS table of ENTRA.md and the reasons of API.md.
var aadstsRules = map[int]rule{
	7000215: {v1alpha1.ReasonInvalidClientSecret, "Entra ID rejected the client secret. Put the secret's value, not its ID, in the credential Secret."},
	7000218: {v1alpha1.ReasonInvalidClientSecret, "Entra ID received no client secret. Put the secret's value in the credential Secret."},
	7000222: {v1alpha1.ReasonClientSecretExpired, "The client secret has expired. Create a new secret for the application in Entra ID and put its value in the credential Secret."},
	700016:  {v1alpha1.ReasonConsentRequired, "The application was not found in the tenant: it has not been consented there, or spec.tenantID or spec.clientID is wrong. " + adviceConsent},
	7000229: {v1alpha1.ReasonConsentRequired, "The application has no service principal in the tenant. " + adviceConsent},
	65001:   {v1alpha1.ReasonConsentRequired, "The application has not been consented in the tenant. " + adviceConsent},
	500011:  {v1alpha1.ReasonConsentRequired, "The resource has no service principal in the tenant. Check spec.resource and that the tenant has Microsoft Defender, " + thenConsent},
	90002:   {v1alpha1.ReasonTenantNotFound, adviceTenant},
	900023:  {v1alpha1.ReasonTenantNotFound, "The tenant identifier is malformed. Check spec.tenantID."},
	70011:   {v1alpha1.ReasonConsentRequired, adviceScope},
	1002012: {v1alpha1.ReasonConsentRequired, adviceScope},
	900382:  {v1alpha1.ReasonTenantNotFound, adviceCloud},
	900432:  {v1alpha1.ReasonTenantNotFound, adviceCloud},
	90038:   {v1alpha1.ReasonTenantNotFound, adviceCloud},
	53003:   {v1alpha1.ReasonAccessBlocked, adviceConditionalAccess},
	500021:  {v1alpha1.ReasonAccessBlocked, adviceTenantRestrictions},
	500022:  {v1alpha1.ReasonAccessBlocked, adviceTenantRestrictions},
	5000224: {v1alpha1.ReasonAccessBlocked, adviceTenantBlocked},
	7000112: {v1alpha1.ReasonAccessBlocked, adviceAppDisabled},
	700027:  {v1alpha1.ReasonInvalidClientAssertion, adviceUnknownCertificate("")},
	700024:  {v1alpha1.ReasonInvalidClientAssertion, adviceAssertionTime},
	70021:   {v1alpha1.ReasonInvalidClientAssertion, adviceNoFederatedMatch},
	700211:  {v1alpha1.ReasonInvalidClientAssertion, adviceFederatedIssuer},
	700212:  {v1alpha1.ReasonInvalidClientAssertion, adviceFederatedAudience},
	700213:  {v1alpha1.ReasonInvalidClientAssertion, adviceFederatedSubject},
	7002138: {v1alpha1.ReasonInvalidClientAssertion, adviceFederatedSubjectCase},
	7000272: {v1alpha1.ReasonInvalidClientAssertion, adviceFederatedIssuerKeys},
	50033:   {v1alpha1.ReasonTokenEndpointUnavailable, adviceBusy},
	90006:   {v1alpha1.ReasonTokenEndpointUnavailable, adviceBusy},
	90024:   {v1alpha1.ReasonTokenEndpointUnavailable, adviceBusy},
}

// errorRules apply when no AADSTS code is recognised, for example behind a proxy
// that rewrites error bodies. invalid_scope is not in the contract's fall-backs but
// is what 70011 and 1002012 arrive with, so it gets the same advice.
// interaction_required and access_denied are what Conditional Access and tenant
// restrictions answer with; a client-credentials request has no user to interact
// with, so both mean a policy blocks the application.
var errorRules = map[string]rule{
	"invalid_client":          {v1alpha1.ReasonInvalidClientSecret, "Entra ID rejected the client credentials. Check that the credential Secret holds the secret's value, not its ID, and that spec.clientID is right."},
	"unauthorized_client":     {v1alpha1.ReasonConsentRequired, "The application is not authorized in the tenant. " + adviceConsent},
	"invalid_grant":           {v1alpha1.ReasonConsentRequired, "Entra ID refused the grant. " + adviceConsent},
	"invalid_resource":        {v1alpha1.ReasonConsentRequired, "The resource is not set up in the tenant. Check spec.resource, " + thenConsent},
	"invalid_scope":           {v1alpha1.ReasonConsentRequired, adviceScope},
	"invalid_tenant":          {v1alpha1.ReasonTenantNotFound, adviceTenant},
	"interaction_required":    {v1alpha1.ReasonAccessBlocked, "A policy of the customer tenant, such as Conditional Access, blocks the application. Consent does not help: an administrator of the customer tenant must lift or adjust the policy."},
	"access_denied":           {v1alpha1.ReasonAccessBlocked, "Entra ID denied access, as tenant restrictions or a policy of the customer tenant do. Check with the partner's network or proxy administrator (Restrict-Access-To-Tenants) and the customer tenant's administrator."},
	"temporarily_unavailable": {v1alpha1.ReasonTokenEndpointUnavailable, adviceBusy},
}

// kindOf reads the Kind from the reasons table of v1alpha1, so that the Entra client
// and the conditions can never disagree.
func kindOf(reason string) Kind {
	if v1alpha1.Stalls(reason) {
		return NeedsHuman
	}
	return Transient
}

// classify is Classify with what RequestToken knows: the credential's values to
// scrub, and a certificate credential's SHA-1 thumbprint (empty otherwise).
func classify(err error, now time.Time, s scrubber, sha1Thumbprint string) *Failure {
	if err == nil {
		return nil
	}
	var f *Failure
	var rerr *oauth2.RetrieveError
	if errors.As(err, &rerr) {
		f = classifyResponse(rerr, now, s, sha1Thumbprint)
	} else {
		f = classifyTransport(err, s)
	}
	f.Kind = kindOf(f.Reason)
	// Belt and braces: the untrusted parts were scrubbed before truncation, which
	// could otherwise cut a credential in half; this catches anything else.
	f.Message = s.redact(f.Message)
	return f
}

// classifyResponse handles an answer from the token endpoint: x/oauth2 returns a
// *RetrieveError for every non-2xx status and for a 2xx carrying an "error".
func classifyResponse(rerr *oauth2.RetrieveError, now time.Time, s scrubber, sha1Thumbprint string) *Failure {
	var header http.Header
	f := &Failure{}
	if rerr.Response != nil {
		f.StatusCode = rerr.Response.StatusCode
		header = rerr.Response.Header
	}
	body := parseErrorBody(rerr)
	f.ErrorCode = s.line(body.Error, maxErrorCodeLen)
	f.AADSTS = body.Codes
	f.TraceID = s.line(body.TraceID, maxIDLen)
	f.CorrelationID = s.line(body.CorrelationID, maxIDLen)
	if f.StatusCode == http.StatusTooManyRequests || f.StatusCode == http.StatusServiceUnavailable {
		f.RetryAfter = parseRetryAfter(header.Get("Retry-After"), now)
	}

	code, r := ruleFor(f, body)
	f.Reason = r.reason
	if code == unknownCertificateCode && sha1Thumbprint != "" {
		r.advice = adviceUnknownCertificate(sha1Thumbprint)
	}

	// Show the code the rule matched, or else the first one, because support
	// tickets and Microsoft's documentation are keyed on it.
	if code == 0 && len(body.Codes) > 0 {
		code = body.Codes[0]
	}
	var msg strings.Builder
	if code != 0 {
		fmt.Fprintf(&msg, "AADSTS%d: ", code)
	}
	msg.WriteString(r.advice)
	if d := s.description(body.Description, code); d != "" {
		msg.WriteString(" Entra ID said: ")
		msg.WriteString(d)
	}
	f.Message = msg.String()
	return f
}

// classifyTransport handles errors where no usable answer arrived: timeouts,
// connection failures, and 2xx answers x/oauth2 could not parse.
func classifyTransport(err error, s scrubber) *Failure {
	f := &Failure{Reason: v1alpha1.ReasonTokenEndpointUnavailable}
	var netErr net.Error
	var urlErr *url.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		f.Message = "The token request timed out. Check that the operator can reach the authority host (egress rules, proxy, DNS); it is retried with backoff."
	case errors.Is(err, context.Canceled):
		f.Message = "The token request was canceled before Entra ID answered; it is retried."
	case errors.As(err, &urlErr), errors.As(err, &netErr):
		f.Message = "Could not reach the token endpoint: " + s.line(err.Error(), maxDetailLen) +
			". Check that the operator can reach the authority host (egress rules, proxy, DNS); it is retried with backoff."
	default:
		f.Message = "The token endpoint's answer could not be used: " + s.line(err.Error(), maxDetailLen) +
			". It is retried with backoff; if it persists, check --authority-host."
	}
	return f
}

// ruleFor applies the precedence documented on Classify to f (whose status,
// Retry-After and scrubbed error code are already set) and body. It returns the
// rule, with the AADSTS code that selected it if one did.
func ruleFor(f *Failure, body errorBody) (int, rule) {
	status := f.StatusCode
	if status == http.StatusTooManyRequests {
		return 0, rule{v1alpha1.ReasonThrottled, "Entra ID throttled the token request (HTTP 429); " + retryWhen(f.RetryAfter)}
	}
	for _, c := range body.Codes {
		if r, ok := aadstsRules[c]; ok {
			return c, r
		}
	}
	if r, ok := errorRules[body.Error]; ok {
		return 0, r
	}
	if status == http.StatusRequestTimeout || status >= 500 || status < 400 {
		// 408, 5xx, and a 2xx (or a stray 1xx or 3xx) that is not a token
		// response: the endpoint, or something in front of it, is in trouble.
		return 0, rule{v1alpha1.ReasonTokenEndpointUnavailable,
			fmt.Sprintf("The token endpoint answered HTTP %d; %s", status, retryWhen(f.RetryAfter))}
	}
	// Any other 4xx is Entra ID, or a proxy in front of it, refusing this request:
	// repeating it as is cannot help, so it needs a human. The message quotes the
	// AADSTS code and description when there are any, the HTTP status otherwise.
	what := ""
	if f.ErrorCode != "" {
		what = fmt.Sprintf(", error %q", f.ErrorCode)
	}
	if len(body.Codes) == 0 && f.ErrorCode == "" && body.Description == "" {
		return 0, rule{v1alpha1.ReasonTokenRequestRejected,
			fmt.Sprintf("The token endpoint rejected the request with HTTP %d and no Entra ID error, which the operator does not recognise. "+
				"Check spec.tenantID, spec.cloud and --authority-host (a proxy in the way answers like this); it is retried slowly.", status)}
	}
	return 0, rule{v1alpha1.ReasonTokenRequestRejected,
		fmt.Sprintf("Entra ID rejected the token request (HTTP %d%s) with an answer the operator does not recognise; it is retried slowly. "+
			"Look the code up in Microsoft's AADSTS error reference, and check spec.tenantID, spec.cloud, spec.resource and --authority-host.", status, what)}
}

func retryWhen(d time.Duration) string {
	if d > 0 {
		return "it is retried after " + d.String() + " as Entra ID asked."
	}
	return "it is retried with backoff."
}

// errorBody is the part of Entra ID's error JSON that classification uses.
type errorBody struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
	Codes       []int  `json:"error_codes"`
	// TraceID and CorrelationID identify the request for Microsoft support.
	TraceID       string `json:"trace_id"`
	CorrelationID string `json:"correlation_id"`
}

var aadstsPattern = regexp.MustCompile(`AADSTS(\d{1,9})\b`)

// parseErrorBody prefers what x/oauth2 already parsed (it also understands
// form-encoded bodies) and takes error_codes from the JSON body. Bodies that are
// not JSON, or JSON of the wrong shape, leave fields empty: a partial answer still
// classifies by status. Without error_codes the first AADSTS number in the
// description is used, as some proxies keep only error and error_description.
func parseErrorBody(rerr *oauth2.RetrieveError) errorBody {
	var b errorBody
	_ = json.Unmarshal(rerr.Body, &b) // best effort, see above
	if rerr.ErrorCode != "" {
		b.Error = rerr.ErrorCode
	}
	if rerr.ErrorDescription != "" {
		b.Description = rerr.ErrorDescription
	}
	codes := b.Codes[:0]
	for _, c := range b.Codes {
		if c > 0 { // a wrongly typed entry decodes as zero
			codes = append(codes, c)
		}
	}
	b.Codes = codes
	if len(b.Codes) == 0 {
		if m := aadstsPattern.FindStringSubmatch(b.Description); m != nil {
			if c, err := strconv.Atoi(m[1]); err == nil && c > 0 {
				b.Codes = []int{c}
			}
		}
	}
	if len(b.Codes) == 0 {
		b.Codes = nil
	}
	return b
}

// maxRetryAfter bounds Retry-After. Tokens live about an hour, so waiting longer
// than that cannot be right, and a broken proxy must not park a tenant for days.
const maxRetryAfter = time.Hour

// parseRetryAfter reads Retry-After as delta-seconds or an HTTP date (RFC 9110).
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	secs, err := strconv.ParseUint(v, 10, 64)
	switch {
	case err == nil && secs <= uint64(maxRetryAfter/time.Second):
		return time.Duration(secs) * time.Second
	case err == nil, errors.Is(err, strconv.ErrRange):
		return maxRetryAfter
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(t.Sub(now), 0), maxRetryAfter)
	}
	return 0
}

const (
	maxDetailLen    = 200
	maxErrorCodeLen = 64
	maxIDLen        = 64 // a GUID is 36 characters
	redacted        = "[redacted]"
)

// scrubber cleans text that came from the network or from an error before it goes
// into a Message. Such text can be huge, binary, multi-line, or, when a proxy
// echoes the request, contain the credential.
type scrubber struct {
	// secrets are the values that must not appear: a client secret, or an
	// assertion and its parts (see secretsIn), longest first so that a whole
	// assertion is replaced before its parts. Empty strings are ignored.
	secrets []string
}

// redact removes the secrets, raw and form-encoded (a proxy echoing the request
// body would show them form-encoded).
func (s scrubber) redact(text string) string {
	for _, secret := range s.secrets {
		if secret == "" {
			continue
		}
		text = strings.ReplaceAll(text, secret, redacted)
		if enc := url.QueryEscape(secret); enc != secret {
			text = strings.ReplaceAll(text, enc, redacted)
		}
	}
	return text
}

// line returns the first line of text, redacted first so that shortening cannot
// leave part of a secret behind, with control characters and invalid UTF-8
// replaced, and cut to at most n runes.
func (s scrubber) line(text string, n int) string {
	text = s.redact(text)
	if i := strings.IndexAny(text, "\r\n"); i >= 0 {
		text = text[:i]
	}
	text = strings.ToValidUTF8(text, "\uFFFD")
	text = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, text)
	text = strings.TrimSpace(text)
	if utf8.RuneCountInString(text) > n {
		text = string([]rune(text)[:n]) + "…"
	}
	return text
}

// description is the first line of error_description without the "AADSTSnnn: "
// prefix that the Message already starts with.
func (s scrubber) description(text string, code int) string {
	if code != 0 {
		text = strings.TrimPrefix(text, "AADSTS"+strconv.Itoa(code)+": ")
	}
	return s.line(text, maxDetailLen)
}
