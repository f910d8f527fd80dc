package entraemu

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// jsonContentType is what Entra sends with every JSON body.
const jsonContentType = "application/json; charset=utf-8"

// Failure is an answer that InjectFailures makes a token request get instead of its
// normal one. With Error set it is an Entra error body; otherwise Body is sent as is.
type Failure struct {
	// Status is the HTTP status. Zero means no answer of its own: after Delay the
	// request is processed normally, which makes a slow but otherwise normal answer.
	Status int
	// Error is the OAuth error, e.g. "temporarily_unavailable". Empty means a raw Body.
	Error string
	// Code is the AADSTS number of the error; zero means none.
	Code int
	// Description is the error text, after "AADSTSnnnn: ".
	Description string
	// Suberror is Entra's "suberror" field, e.g. "message_only" on a Conditional
	// Access block; empty means none.
	Suberror string
	// RetryAfter sets the Retry-After header, rounded up to whole seconds.
	RetryAfter time.Duration
	// Body is sent instead of an Entra error, e.g. a plain-text 429 or a proxy's HTML
	// error page.
	Body string
	// ContentType is the Content-Type of Body; empty means text/plain.
	ContentType string
	// Delay is how long to wait before answering. The wait ends early when the
	// client gives up, as a hanging endpoint would.
	Delay time.Duration
	// Hold, when set, keeps the answer back until it is closed (or the client gives
	// up), after Delay: a test can then change the world while a request is in
	// flight, and release it, in an order it decides rather than a race.
	Hold <-chan struct{}
}

// Held is a request that waits for release, then is answered normally.
func Held(release <-chan struct{}) Failure {
	return Failure{Hold: release}
}

// Throttled is Entra's rate limiting: 429 with Retry-After and a plain-text body,
// not the OAuth JSON that clients may expect.
func Throttled(retryAfter time.Duration) Failure {
	return Failure{Status: http.StatusTooManyRequests, RetryAfter: retryAfter, Body: "Too Many Requests"}
}

// ServerError is a transient failure inside Entra, in the OAuth error shape, which a
// retry with backoff gets past.
func ServerError() Failure {
	return Failure{
		Status:      http.StatusInternalServerError,
		Error:       "server_error",
		Code:        50033,
		Description: "A transient error has occurred. Please try again.",
	}
}

// BadGateway is a front-end proxy failing to reach Entra: 502 with an HTML page.
func BadGateway() Failure {
	return Failure{
		Status:      http.StatusBadGateway,
		Body:        "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>",
		ContentType: "text/html; charset=utf-8",
	}
}

// Hang is an endpoint that does not answer for d, after which a front-end proxy
// gives up with 504. Clients should time out well before.
func Hang(d time.Duration) Failure {
	return Failure{Status: http.StatusGatewayTimeout, Delay: d, Body: "upstream request timeout"}
}

// CrossCloud is a confidential client asking one cloud for a tenant of another: a
// GCC High or DoD tenant at login.microsoftonline.com, or a commercial tenant at
// login.microsoftonline.us.
func CrossCloud() Failure {
	return *oauthError(http.StatusBadRequest, "invalid_request", 900382,
		"Confidential Client is not supported in Cross Cloud request.")
}

// NationalCloudRedirect is a tenant of a national cloud asked in another cloud
// (NationalCloudTenantRedirection).
func NationalCloudRedirect() Failure {
	return *oauthError(http.StatusBadRequest, "invalid_request", 90038,
		"NationalCloudTenantRedirection - The specified tenant belongs to a National Cloud. "+
			"Current cloud instance does not federate with it. Please provide cloud-specific values.")
}

// ConditionalAccess is a Conditional Access policy of the tenant blocking the app.
func ConditionalAccess() Failure {
	f := oauthError(http.StatusBadRequest, "interaction_required", 53003,
		"Access has been blocked by Conditional Access policies. The access policy does not allow token issuance.")
	f.Suberror = "message_only"
	return *f
}

// TenantRestrictions is a proxy of the caller adding a Restrict-Access-To-Tenants
// header that does not list the tenant.
func TenantRestrictions() Failure {
	return *oauthError(http.StatusBadRequest, "access_denied", 500021, "Access to the tenant is denied.")
}

// TenantBlocked is a tenant Microsoft has blocked.
func TenantBlocked() Failure {
	return *oauthError(http.StatusBadRequest, "invalid_grant", 5000224,
		"We are sorry, this resource is not available. If you are seeing this message by mistake, please contact Microsoft support.")
}

// AppDisabled is an application disabled in the tenant or by Microsoft.
func AppDisabled() Failure {
	return *oauthError(http.StatusBadRequest, "unauthorized_client", 7000112, "Application is disabled.")
}

// oauthError returns a Failure in the shape of an Entra error.
func oauthError(status int, oauthErr string, code int, format string, args ...any) *Failure {
	return &Failure{Status: status, Error: oauthErr, Code: code, Description: fmt.Sprintf(format, args...)}
}

// errorBody is Entra's error body, its fields in Entra's order.
type errorBody struct {
	Error         string `json:"error"`
	Description   string `json:"error_description"`
	Codes         []int  `json:"error_codes,omitempty"`
	Timestamp     string `json:"timestamp"`
	TraceID       string `json:"trace_id"`
	CorrelationID string `json:"correlation_id"`
	ErrorURI      string `json:"error_uri,omitempty"`
	Suberror      string `json:"suberror,omitempty"`
}

// writeFailure answers the tenant's request at the sign-in host with f, which must
// have a Status, and records the trace and correlation IDs it sends (none for a raw
// Body).
func (e *Emulator) writeFailure(w http.ResponseWriter, host, tenantID string, f Failure) {
	if f.RetryAfter > 0 {
		secs := (f.RetryAfter + time.Second - 1) / time.Second
		w.Header().Set("Retry-After", strconv.FormatInt(int64(secs), 10))
	}
	if f.Error == "" {
		contentType := f.ContentType
		if contentType == "" {
			contentType = "text/plain; charset=utf-8"
		}
		w.Header().Set("Content-Type", contentType)
		e.recordFailureIDs(tenantID, "", "")
		w.WriteHeader(f.Status)
		_, _ = io.WriteString(w, f.Body) // a failed write means the client is gone
		return
	}

	body := e.errorBody(host, f)
	e.recordFailureIDs(tenantID, body.TraceID, body.CorrelationID)
	writeJSON(w, f.Status, body)
}

// errorBody is the Entra error body of f, as the sign-in host answers it, with
// fresh trace and correlation IDs.
func (e *Emulator) errorBody(host string, f Failure) errorBody {
	// Entra repeats the trace and correlation IDs and the time in the description,
	// where people who paste error messages into support tickets find them.
	body := errorBody{
		Error:         f.Error,
		Description:   f.Description,
		Timestamp:     e.clock.Now().UTC().Format("2006-01-02 15:04:05Z"),
		TraceID:       newGUID(),
		CorrelationID: newGUID(),
		Suberror:      f.Suberror,
	}
	if f.Code != 0 {
		body.Description = fmt.Sprintf("AADSTS%d: %s", f.Code, f.Description)
		body.Codes = []int{f.Code}
		// The error page is on the host that answered: login.microsoftonline.us
		// links to its own.
		body.ErrorURI = fmt.Sprintf("%s/error?code=%d", host, f.Code)
	}
	body.Description += "\r\nTrace ID: " + body.TraceID +
		"\r\nCorrelation ID: " + body.CorrelationID +
		"\r\nTimestamp: " + body.Timestamp
	return body
}

// writeJSON answers a token request with a JSON body. Like Entra, and as RFC 6749
// section 5.1 requires, it forbids caching the answer.
func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", jsonContentType)
	h.Set("Cache-Control", "no-store, no-cache")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_ = jsonEncode(w, v) // a failed write means the client is gone
}

// jsonEncode writes v as one line of JSON.
func jsonEncode(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}
