package entra_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/oauth2"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

const (
	testTenant = "6e3c1a8e-2f6b-4c4f-9b7e-0d6f2a1c9e11"
	testClient = "0b9f7c55-8a3e-4d2a-9c61-5f0e7d3b2a10"
)

var testNow = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

// entraError builds the error x/oauth2 returns for an Entra ID error answer, with
// the body shaped as Entra ID sends it.
func entraError(status int, errCode string, code int, desc string) *oauth2.RetrieveError {
	full := fmt.Sprintf("AADSTS%d: %s\r\nTrace ID: 0d1f8e62-7a4b-4d1e-9c3a-2b6f5e8d4c00\r\n"+
		"Correlation ID: 5a7c9e1b-3d2f-4a6b-8c0e-1f2a3b4c5d6e\r\nTimestamp: 2026-11-21 12:00:00Z", code, desc)
	uri := fmt.Sprintf("https://login.microsoftonline.com/error?code=%d", code)
	body, err := json.Marshal(map[string]any{
		"error":             errCode,
		"error_description": full,
		"error_codes":       []int{code},
		"timestamp":         "2026-11-21 12:00:00Z",
		"trace_id":          "0d1f8e62-7a4b-4d1e-9c3a-2b6f5e8d4c00",
		"correlation_id":    "5a7c9e1b-3d2f-4a6b-8c0e-1f2a3b4c5d6e",
		"error_uri":         uri,
	})
	if err != nil {
		panic(err)
	}
	return &oauth2.RetrieveError{
		Response:         response(status, "Content-Type", "application/json; charset=utf-8"),
		Body:             body,
		ErrorCode:        errCode,
		ErrorDescription: full,
		ErrorURI:         uri,
	}
}

// oauthError is an error answer without error_codes, as a proxy might send it.
func oauthError(status int, errCode, desc string) *oauth2.RetrieveError {
	body, _ := json.Marshal(map[string]string{"error": errCode, "error_description": desc})
	return &oauth2.RetrieveError{
		Response:         response(status, "Content-Type", "application/json"),
		Body:             body,
		ErrorCode:        errCode,
		ErrorDescription: desc,
	}
}

func rawError(status int, body string, header ...string) *oauth2.RetrieveError {
	return &oauth2.RetrieveError{Response: response(status, header...), Body: []byte(body)}
}

func response(status int, header ...string) *http.Response {
	h := http.Header{}
	for i := 0; i+1 < len(header); i += 2 {
		h.Set(header[i], header[i+1])
	}
	return &http.Response{StatusCode: status, Status: fmt.Sprintf("%d %s", status, http.StatusText(status)), Header: h}
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

var tokenURL = entra.TokenURL("https://login.microsoftonline.com", testTenant)

func TestClassify(t *testing.T) {
	tests := []struct {
		name           string
		err            error
		wantReason     string
		wantKind       entra.Kind
		wantStatus     int
		wantErrorCode  string
		wantAADSTS     []int
		wantRetryAfter time.Duration
		wantInMessage  []string
	}{
		{
			name:          "AADSTS7000215 wrong secret, often the secret ID",
			err:           entraError(401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '"+testClient+"'."),
			wantReason:    v1alpha1.ReasonInvalidClientSecret,
			wantKind:      entra.NeedsHuman,
			wantStatus:    401,
			wantErrorCode: "invalid_client",
			wantAADSTS:    []int{7000215},
			wantInMessage: []string{"AADSTS7000215", "value, not its ID", "Invalid client secret provided"},
		},
		{
			name:          "AADSTS7000222 expired secret",
			err:           entraError(401, "invalid_client", 7000222, "The provided client secret keys for app '"+testClient+"' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds."),
			wantReason:    v1alpha1.ReasonClientSecretExpired,
			wantKind:      entra.NeedsHuman,
			wantStatus:    401,
			wantErrorCode: "invalid_client",
			wantAADSTS:    []int{7000222},
			wantInMessage: []string{"AADSTS7000222", "expired", "new secret"},
		},
		{
			name:          "AADSTS7000218 no secret sent",
			err:           entraError(401, "invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'."),
			wantReason:    v1alpha1.ReasonInvalidClientSecret,
			wantKind:      entra.NeedsHuman,
			wantStatus:    401,
			wantErrorCode: "invalid_client",
			wantAADSTS:    []int{7000218},
			wantInMessage: []string{"AADSTS7000218", "credential Secret"},
		},
		{
			name:          "AADSTS700016 app not found in tenant",
			err:           entraError(400, "unauthorized_client", 700016, "Application with identifier '"+testClient+"' was not found in the directory '"+testTenant+"'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."),
			wantReason:    v1alpha1.ReasonConsentRequired,
			wantKind:      entra.NeedsHuman,
			wantStatus:    400,
			wantErrorCode: "unauthorized_client",
			wantAADSTS:    []int{700016},
			wantInMessage: []string{"AADSTS700016", "status.adminConsentURL"},
		},
		{
			name:          "AADSTS7000229 no service principal wins over invalid_client",
			err:           entraError(401, "invalid_client", 7000229, "The client application "+testClient+" is missing service principal in the tenant "+testTenant+"."),
			wantReason:    v1alpha1.ReasonConsentRequired,
			wantKind:      entra.NeedsHuman,
			wantStatus:    401,
			wantErrorCode: "invalid_client",
			wantAADSTS:    []int{7000229},
			wantInMessage: []string{"AADSTS7000229", "status.adminConsentURL"},
		},
		{
			name:          "AADSTS65001 consent not given",
			err:           entraError(400, "invalid_grant", 65001, "The user or administrator has not consented to use the application with ID '"+testClient+"' named 'Partner SOC'. Send an interactive authorization request for this user and resource."),
			wantReason:    v1alpha1.ReasonConsentRequired,
			wantKind:      entra.NeedsHuman,
			wantStatus:    400,
			wantErrorCode: "invalid_grant",
			wantAADSTS:    []int{65001},
			wantInMessage: []string{"AADSTS65001", "status.adminConsentURL"},
		},
		{
			name:          "AADSTS500011 resource has no service principal",
			err:           entraError(400, "invalid_resource", 500011, "The resource principal named https://api.security.microsoft.com was not found in the tenant named Contoso. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."),
			wantReason:    v1alpha1.ReasonConsentRequired,
			wantKind:      entra.NeedsHuman,
			wantStatus:    400,
			wantErrorCode: "invalid_resource",
			wantAADSTS:    []int{500011},
			wantInMessage: []string{"AADSTS500011", "spec.resource", "status.adminConsentURL"},
		},
		{
			name:          "AADSTS90002 tenant not found",
			err:           entraError(400, "invalid_tenant", 90002, "Tenant '"+testTenant+"' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."),
			wantReason:    v1alpha1.ReasonTenantNotFound,
			wantKind:      entra.NeedsHuman,
			wantStatus:    400,
			wantErrorCode: "invalid_tenant",
			wantAADSTS:    []int{90002},
			wantInMessage: []string{"AADSTS90002", "spec.tenantID", "spec.cloud"},
		},
		{
			name:          "AADSTS90002 with the older invalid_request error",
			err:           entraError(400, "invalid_request", 90002, "Tenant '"+testTenant+"' not found."),
			wantReason:    v1alpha1.ReasonTenantNotFound,
			wantKind:      entra.NeedsHuman,
			wantStatus:    400,
			wantErrorCode: "invalid_request",
			wantAADSTS:    []int{90002},
			wantInMessage: []string{"AADSTS90002"},
		},
		{
			name:          "AADSTS900023 malformed tenant",
			err:           entraError(400, "invalid_request", 900023, "Specified tenant identifier 'contoso_' is neither a valid DNS name, nor a valid external domain."),
			wantReason:    v1alpha1.ReasonTenantNotFound,
			wantKind:      entra.NeedsHuman,
			wantStatus:    400,
			wantErrorCode: "invalid_request",
			wantAADSTS:    []int{900023},
			wantInMessage: []string{"AADSTS900023", "spec.tenantID"},
		},
		{
			name:          "AADSTS70011 invalid scope",
			err:           entraError(400, "invalid_scope", 70011, "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope https://api.security.microsoft.com is not valid."),
			wantReason:    v1alpha1.ReasonConsentRequired,
			wantKind:      entra.NeedsHuman,
			wantStatus:    400,
			wantErrorCode: "invalid_scope",
			wantAADSTS:    []int{70011},
			wantInMessage: []string{"AADSTS70011", "spec.resource", "API permissions"},
		},
		{
			name:          "AADSTS1002012 scope without /.default",
			err:           entraError(400, "invalid_scope", 1002012, "The provided value for scope https://api.security.microsoft.com openid is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
			wantReason:    v1alpha1.ReasonConsentRequired,
			wantKind:      entra.NeedsHuman,
			wantStatus:    400,
			wantErrorCode: "invalid_scope",
			wantAADSTS:    []int{1002012},
			wantInMessage: []string{"AADSTS1002012", "spec.resource", "API permissions"},
		},
		{
			name:          "AADSTS50033 retryable error",
			err:           entraError(400, "invalid_request", 50033, "A transient error has occurred. Please try again."),
			wantReason:    v1alpha1.ReasonTokenEndpointUnavailable,
			wantKind:      entra.Transient,
			wantStatus:    400,
			wantErrorCode: "invalid_request",
			wantAADSTS:    []int{50033},
			wantInMessage: []string{"AADSTS50033", "retried"},
		},
		{
			name:          "AADSTS90006 external server retryable error",
			err:           entraError(500, "server_error", 90006, "External server returned an error. Please try again."),
			wantReason:    v1alpha1.ReasonTokenEndpointUnavailable,
			wantKind:      entra.Transient,
			wantStatus:    500,
			wantErrorCode: "server_error",
			wantAADSTS:    []int{90006},
			wantInMessage: []string{"AADSTS90006"},
		},
		{
			name:          "AADSTS90024 request budget exceeded",
			err:           entraError(400, "invalid_request", 90024, "RequestBudgetExceededError - A transient error has occurred. Try again."),
			wantReason:    v1alpha1.ReasonTokenEndpointUnavailable,
			wantKind:      entra.Transient,
			wantStatus:    400,
			wantErrorCode: "invalid_request",
			wantAADSTS:    []int{90024},
			wantInMessage: []string{"AADSTS90024"},
		},
		{
			name:          "temporarily_unavailable without codes",
			err:           oauthError(400, "temporarily_unavailable", "The service is temporarily unavailable."),
			wantReason:    v1alpha1.ReasonTokenEndpointUnavailable,
			wantKind:      entra.Transient,
			wantStatus:    400,
			wantErrorCode: "temporarily_unavailable",
			wantInMessage: []string{"temporarily unavailable"},
		},
		{
			name:           "429 with Retry-After seconds",
			err:            rawError(429, `{"error":"temporarily_unavailable"}`, "Retry-After", "60", "Content-Type", "application/json"),
			wantReason:     v1alpha1.ReasonThrottled,
			wantKind:       entra.Transient,
			wantStatus:     429,
			wantRetryAfter: 60 * time.Second,
			wantErrorCode:  "temporarily_unavailable",
			wantInMessage:  []string{"429", "1m0s"},
		},
		{
			name:           "429 with Retry-After HTTP date",
			err:            rawError(429, "", "Retry-After", testNow.Add(90*time.Second).Format(http.TimeFormat)),
			wantReason:     v1alpha1.ReasonThrottled,
			wantKind:       entra.Transient,
			wantStatus:     429,
			wantRetryAfter: 90 * time.Second,
			wantInMessage:  []string{"429", "1m30s"},
		},
		{
			name:           "429 with plain-text body",
			err:            rawError(429, "Too many requests. Please slow down.", "Retry-After", "30", "Content-Type", "text/plain"),
			wantReason:     v1alpha1.ReasonThrottled,
			wantKind:       entra.Transient,
			wantStatus:     429,
			wantRetryAfter: 30 * time.Second,
			wantInMessage:  []string{"throttled"},
		},
		{
			name:           "429 wins over an AADSTS code",
			err:            withHeader(entraError(429, "invalid_client", 7000215, "Invalid client secret provided."), "Retry-After", "5"),
			wantReason:     v1alpha1.ReasonThrottled,
			wantKind:       entra.Transient,
			wantStatus:     429,
			wantErrorCode:  "invalid_client",
			wantAADSTS:     []int{7000215},
			wantInMessage:  []string{"AADSTS7000215", "throttled"},
			wantRetryAfter: 5 * time.Second,
		},
		{
			name:          "429 with a Retry-After in the past",
			err:           rawError(429, "", "Retry-After", testNow.Add(-time.Minute).Format(http.TimeFormat)),
			wantReason:    v1alpha1.ReasonThrottled,
			wantKind:      entra.Transient,
			wantStatus:    429,
			wantInMessage: []string{"backoff"},
		},
		{
			name:           "429 with an absurd Retry-After is capped at an hour",
			err:            rawError(429, "", "Retry-After", "99999999999999999999"),
			wantReason:     v1alpha1.ReasonThrottled,
			wantKind:       entra.Transient,
			wantStatus:     429,
			wantRetryAfter: time.Hour,
		},
		{
			name:           "503 with Retry-After",
			err:            rawError(503, "<html><body>Service Unavailable</body></html>", "Retry-After", "120", "Content-Type", "text/html"),
			wantReason:     v1alpha1.ReasonTokenEndpointUnavailable,
			wantKind:       entra.Transient,
			wantStatus:     503,
			wantRetryAfter: 2 * time.Minute,
			wantInMessage:  []string{"HTTP 503", "2m0s"},
		},
		{
			name:          "500 without a body",
			err:           rawError(500, ""),
			wantReason:    v1alpha1.ReasonTokenEndpointUnavailable,
			wantKind:      entra.Transient,
			wantStatus:    500,
			wantInMessage: []string{"HTTP 500", "backoff"},
		},
		{
			name:          "invalid_client without codes falls back to InvalidClientSecret",
			err:           oauthError(401, "invalid_client", "Client authentication failed."),
			wantReason:    v1alpha1.ReasonInvalidClientSecret,
			wantKind:      entra.NeedsHuman,
			wantStatus:    401,
			wantErrorCode: "invalid_client",
		},
		{
			name:          "unauthorized_client without codes falls back to ConsentRequired",
			err:           oauthError(400, "unauthorized_client", ""),
			wantReason:    v1alpha1.ReasonConsentRequired,
			wantKind:      entra.NeedsHuman,
			wantStatus:    400,
			wantErrorCode: "unauthorized_client",
		},
		{
			name:          "invalid_grant without codes falls back to ConsentRequired",
			err:           oauthError(400, "invalid_grant", ""),
			wantReason:    v1alpha1.ReasonConsentRequired,
			wantKind:      entra.NeedsHuman,
			wantStatus:    400,
			wantErrorCode: "invalid_grant",
		},
		{
			name:          "invalid_resource without codes falls back to ConsentRequired",
			err:           oauthError(400, "invalid_resource", ""),
			wantReason:    v1alpha1.ReasonConsentRequired,
			wantKind:      entra.NeedsHuman,
			wantStatus:    400,
			wantErrorCode: "invalid_resource",
		},
		{
			name:          "invalid_scope without codes falls back to ConsentRequired",
			err:           oauthError(400, "invalid_scope", "The provided value for scope is not valid."),
			wantReason:    v1alpha1.ReasonConsentRequired,
			wantKind:      entra.NeedsHuman,
			wantStatus:    400,
			wantErrorCode: "invalid_scope",
			wantInMessage: []string{"spec.resource"},
		},
		{
			name:          "invalid_tenant without codes falls back to TenantNotFound",
			err:           oauthError(400, "invalid_tenant", ""),
			wantReason:    v1alpha1.ReasonTenantNotFound,
			wantKind:      entra.NeedsHuman,
			wantStatus:    400,
			wantErrorCode: "invalid_tenant",
		},
		{
			name:          "AADSTS code found in the description when error_codes is missing",
			err:           oauthError(401, "invalid_client", "AADSTS7000222: The provided client secret keys are expired."),
			wantReason:    v1alpha1.ReasonClientSecretExpired,
			wantKind:      entra.NeedsHuman,
			wantStatus:    401,
			wantErrorCode: "invalid_client",
			wantAADSTS:    []int{7000222},
			wantInMessage: []string{"AADSTS7000222"},
		},
		{
			name:          "unknown 4xx error is rejected, quoting the code and description",
			err:           entraError(400, "invalid_request", 50011, "The redirect URI specified in the request does not match."),
			wantReason:    v1alpha1.ReasonTokenRequestRejected,
			wantKind:      entra.NeedsHuman,
			wantStatus:    400,
			wantErrorCode: "invalid_request",
			wantAADSTS:    []int{50011},
			wantInMessage: []string{"AADSTS50011", `"invalid_request"`, "HTTP 400", "--authority-host", "redirect URI specified in the request does not match"},
		},
		{
			name:          "AADSTS900382 cross-cloud request",
			err:           entraError(400, "invalid_request", 900382, "Confidential Client is not supported in Cross Cloud request."),
			wantReason:    v1alpha1.ReasonTenantNotFound,
			wantKind:      entra.NeedsHuman,
			wantStatus:    400,
			wantErrorCode: "invalid_request",
			wantAADSTS:    []int{900382},
			wantInMessage: []string{"AADSTS900382", "commercial", "Azure Government", "GCC High and DoD", "registered in Azure Government", "spec.cloud", "Cross Cloud"},
		},
		{
			name:          "AADSTS900432 cross-cloud request",
			err:           entraError(400, "invalid_request", 900432, "Confidential Client is not supported in Cross Cloud request."),
			wantReason:    v1alpha1.ReasonTenantNotFound,
			wantKind:      entra.NeedsHuman,
			wantStatus:    400,
			wantErrorCode: "invalid_request",
			wantAADSTS:    []int{900432},
			wantInMessage: []string{"AADSTS900432", "commercial", "Azure Government", "spec.cloud"},
		},
		{
			name:          "AADSTS90038 national cloud tenant redirection",
			err:           entraError(400, "invalid_request", 90038, "NationalCloudTenantRedirection - The specified tenant 'Y' belongs to the National Cloud 'X'. Current cloud instance 'Z' does not federate with X."),
			wantReason:    v1alpha1.ReasonTenantNotFound,
			wantKind:      entra.NeedsHuman,
			wantStatus:    400,
			wantErrorCode: "invalid_request",
			wantAADSTS:    []int{90038},
			wantInMessage: []string{"AADSTS90038", "commercial", "Azure Government", "registered in Azure Government"},
		},
		{
			name:          "AADSTS53003 Conditional Access",
			err:           withSuberror(entraError(400, "interaction_required", 53003, "Access has been blocked by Conditional Access policies. The access policy does not allow token issuance."), "message_only"),
			wantReason:    v1alpha1.ReasonAccessBlocked,
			wantKind:      entra.NeedsHuman,
			wantStatus:    400,
			wantErrorCode: "interaction_required",
			wantAADSTS:    []int{53003},
			wantInMessage: []string{"AADSTS53003", "Conditional Access", "administrator of the customer tenant"},
		},
		{
			name:          "AADSTS500021 tenant restrictions",
			err:           entraError(400, "access_denied", 500021, "Access to '"+testTenant+"' tenant is denied."),
			wantReason:    v1alpha1.ReasonAccessBlocked,
			wantKind:      entra.NeedsHuman,
			wantStatus:    400,
			wantErrorCode: "access_denied",
			wantAADSTS:    []int{500021},
			wantInMessage: []string{"AADSTS500021", "Restrict-Access-To-Tenants", "network or proxy administrator"},
		},
		{
			name:          "AADSTS500022 tenant restrictions",
			err:           entraError(400, "access_denied", 500022, "Access to '"+testTenant+"' tenant is denied."),
			wantReason:    v1alpha1.ReasonAccessBlocked,
			wantKind:      entra.NeedsHuman,
			wantStatus:    400,
			wantErrorCode: "access_denied",
			wantAADSTS:    []int{500022},
			wantInMessage: []string{"AADSTS500022", "Restrict-Access-To-Tenants"},
		},
		{
			name:          "AADSTS5000224 tenant blocked",
			err:           entraError(400, "invalid_grant", 5000224, "We are sorry, this resource is not available."),
			wantReason:    v1alpha1.ReasonAccessBlocked,
			wantKind:      entra.NeedsHuman,
			wantStatus:    400,
			wantErrorCode: "invalid_grant",
			wantAADSTS:    []int{5000224},
			wantInMessage: []string{"AADSTS5000224", "Microsoft support"},
		},
		{
			name:          "AADSTS7000112 application disabled, not ConsentRequired",
			err:           entraError(400, "unauthorized_client", 7000112, "Application '"+testClient+"'(Partner Defender) is disabled."),
			wantReason:    v1alpha1.ReasonAccessBlocked,
			wantKind:      entra.NeedsHuman,
			wantStatus:    400,
			wantErrorCode: "unauthorized_client",
			wantAADSTS:    []int{7000112},
			wantInMessage: []string{"AADSTS7000112", "disabled", "owner", "enable it again"},
		},
		{
			name: "AADSTS700027 certificate not registered on the app",
			err: entraError(401, "invalid_client", 700027, "Client assertion contains an invalid signature. [Reason - The key was not found., "+
				"Thumbprint of key used by client: '8BDEB513EAC11E9E9DA752EB9D5087F317F6D931', Please visit the Azure Portal, Graph Explorer or "+
				"directly use MS Graph to see configured keys for app Id '"+testClient+"'.]"),
			wantReason:    v1alpha1.ReasonInvalidClientAssertion,
			wantKind:      entra.NeedsHuman,
			wantStatus:    401,
			wantErrorCode: "invalid_client",
			wantAADSTS:    []int{700027},
			wantInMessage: []string{"AADSTS700027", "not registered on the app registration", "status.certificate", "Thumbprint of key used by client"},
		},
		{
			name: "AADSTS700024 assertion outside its time window",
			err: entraError(400, "invalid_client", 700024, "Client assertion is not within its valid time range. Current time: 2026-11-21T12:00:00.0000000Z, "+
				"assertion valid from 2026-11-21T11:40:00.0000000Z, expiry time of assertion 2026-11-21T11:50:00.0000000Z. "+
				"Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials ."),
			wantReason:    v1alpha1.ReasonInvalidClientAssertion,
			wantKind:      entra.NeedsHuman,
			wantStatus:    400,
			wantErrorCode: "invalid_client",
			wantAADSTS:    []int{700024},
			wantInMessage: []string{"AADSTS700024", "time window", "clock skew", "NTP", "not within its valid time range"},
		},
		{
			name: "AADSTS70021 no federated credential matches, sent as invalid_request",
			err: entraError(400, "invalid_request", 70021, "No matching federated identity record found for presented assertion. "+
				"Assertion Issuer: 'https://oidc.example/cluster'. Assertion Subject: 'system:serviceaccount:defender:partner-app'. "+
				"Assertion Audience: 'api://AzureADTokenExchange'. https://docs.microsoft.com/en-us/azure/active-directory/develop/workload-identity-federation"),
			wantReason:    v1alpha1.ReasonInvalidClientAssertion,
			wantKind:      entra.NeedsHuman,
			wantStatus:    400,
			wantErrorCode: "invalid_request",
			wantAADSTS:    []int{70021},
			wantInMessage: []string{"AADSTS70021", "issuer, subject and audience", "status.federatedCredential", "case-sensitive"},
		},
		{
			name: "AADSTS700211 issuer matches no federated credential",
			err: entraError(400, "invalid_client", 700211, "No matching federated identity record found for presented assertion issuer 'https://oidc.example/cluster'. "+
				"Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. "+
				"https://docs.microsoft.com/en-us/azure/active-directory/develop/workload-identity-federation"),
			wantReason:    v1alpha1.ReasonInvalidClientAssertion,
			wantKind:      entra.NeedsHuman,
			wantStatus:    400,
			wantErrorCode: "invalid_client",
			wantAADSTS:    []int{700211},
			wantInMessage: []string{"AADSTS700211", "issuer matches no federated credential", "status.federatedCredential.issuer", "trailing slash"},
		},
		{
			name: "AADSTS700212 audience matches no federated credential",
			err: entraError(400, "invalid_client", 700212, "No matching federated identity record found for presented assertion audience 'api://AzureADMyOrg'. "+
				"Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. "+
				"https://docs.microsoft.com/en-us/azure/active-directory/develop/workload-identity-federation"),
			wantReason:    v1alpha1.ReasonInvalidClientAssertion,
			wantKind:      entra.NeedsHuman,
			wantStatus:    400,
			wantErrorCode: "invalid_client",
			wantAADSTS:    []int{700212},
			wantInMessage: []string{"AADSTS700212", "audience matches no federated credential", "status.federatedCredential.audience", "api://AzureADTokenExchange"},
		},
		{
			name: "AADSTS700213 subject matches no federated credential",
			err: entraError(400, "invalid_client", 700213, "No matching federated identity record found for presented assertion subject "+
				"'system:serviceaccount:defender:partner-app'. Check your federated identity credential Subject, Audience and Issuer against the presented assertion. "+
				"https://learn.microsoft.com/entra/workload-id/workload-identity-federation"),
			wantReason:    v1alpha1.ReasonInvalidClientAssertion,
			wantKind:      entra.NeedsHuman,
			wantStatus:    400,
			wantErrorCode: "invalid_client",
			wantAADSTS:    []int{700213},
			wantInMessage: []string{"AADSTS700213", "subject matches no federated credential", "status.federatedCredential.subject", "system:serviceaccount:"},
		},
		{
			name: "AADSTS7002138 subject matches only case-insensitively",
			err: entraError(400, "invalid_client", 7002138, "No matching federated identity record found for presented assertion subject "+
				"'system:serviceaccount:defender:partner-app'. The subject matches with case-insensitive comparison, but not with case-sensitive comparison. "+
				"Check your federated identity credential Subject, Audience and Issuer against the presented assertion. "+
				"See documentation at: https://learn.microsoft.com/entra/workload-id/workload-identity-federation."),
			wantReason:    v1alpha1.ReasonInvalidClientAssertion,
			wantKind:      entra.NeedsHuman,
			wantStatus:    400,
			wantErrorCode: "invalid_client",
			wantAADSTS:    []int{7002138},
			wantInMessage: []string{"AADSTS7002138", "matches case-sensitively", "Correct the case", "status.federatedCredential.subject"},
		},
		{
			name: "AADSTS7000272 the issuer's keys lack the token's signing key",
			err: entraError(401, "invalid_client", 7000272, "The certificate with identifier 'kid-1' used to sign the federated credential "+
				"could not be found in the metadata of identity provider https://oidc.example/cluster/."),
			wantReason:    v1alpha1.ReasonInvalidClientAssertion,
			wantKind:      entra.NeedsHuman,
			wantStatus:    401,
			wantErrorCode: "invalid_client",
			wantAADSTS:    []int{7000272},
			wantInMessage: []string{"AADSTS7000272", "/openid/v1/jwks", "status.federatedCredential.issuer"},
		},
		{
			name:          "interaction_required without codes falls back to AccessBlocked",
			err:           oauthError(400, "interaction_required", ""),
			wantReason:    v1alpha1.ReasonAccessBlocked,
			wantKind:      entra.NeedsHuman,
			wantStatus:    400,
			wantErrorCode: "interaction_required",
		},
		{
			name:          "access_denied without codes falls back to AccessBlocked",
			err:           oauthError(400, "access_denied", ""),
			wantReason:    v1alpha1.ReasonAccessBlocked,
			wantKind:      entra.NeedsHuman,
			wantStatus:    400,
			wantErrorCode: "access_denied",
			wantInMessage: []string{"Restrict-Access-To-Tenants"},
		},
		{
			name:          "404 without a body is rejected, quoting the status",
			err:           rawError(404, ""),
			wantReason:    v1alpha1.ReasonTokenRequestRejected,
			wantKind:      entra.NeedsHuman,
			wantStatus:    404,
			wantInMessage: []string{"HTTP 404", "--authority-host"},
		},
		{
			name:          "403 HTML page from a proxy is rejected",
			err:           rawError(403, "<html><body>Forbidden</body></html>", "Content-Type", "text/html"),
			wantReason:    v1alpha1.ReasonTokenRequestRejected,
			wantKind:      entra.NeedsHuman,
			wantStatus:    403,
			wantInMessage: []string{"HTTP 403"},
		},
		{
			name:          "408 is retried",
			err:           rawError(408, "Request Timeout"),
			wantReason:    v1alpha1.ReasonTokenEndpointUnavailable,
			wantKind:      entra.Transient,
			wantStatus:    408,
			wantInMessage: []string{"HTTP 408", "backoff"},
		},
		{
			name:          "unknown error in a 200 answer is retried",
			err:           oauthError(200, "something_new", ""),
			wantReason:    v1alpha1.ReasonTokenEndpointUnavailable,
			wantKind:      entra.Transient,
			wantStatus:    200,
			wantErrorCode: "something_new",
			wantInMessage: []string{"HTTP 200"},
		},
		{
			name:          "error in a 200 answer",
			err:           entraError(200, "invalid_client", 7000215, "Invalid client secret provided."),
			wantReason:    v1alpha1.ReasonInvalidClientSecret,
			wantKind:      entra.NeedsHuman,
			wantStatus:    200,
			wantErrorCode: "invalid_client",
			wantAADSTS:    []int{7000215},
			wantInMessage: []string{"AADSTS7000215"},
		},
		{
			name:          "garbage body on 400",
			err:           rawError(400, "\x00\xff\xfe<html>\n\x1b[31mnope", "Content-Type", "application/octet-stream"),
			wantReason:    v1alpha1.ReasonTokenRequestRejected,
			wantKind:      entra.NeedsHuman,
			wantStatus:    400,
			wantInMessage: []string{"HTTP 400"},
		},
		{
			name:          "error_codes of the wrong type",
			err:           rawError(400, `{"error":"invalid_client","error_codes":["7000215",{}]}`),
			wantReason:    v1alpha1.ReasonInvalidClientSecret,
			wantKind:      entra.NeedsHuman,
			wantStatus:    400,
			wantErrorCode: "invalid_client",
		},
		{
			name:          "2xx answer without access_token",
			err:           errors.New("oauth2: server response missing access_token"),
			wantReason:    v1alpha1.ReasonTokenEndpointUnavailable,
			wantKind:      entra.Transient,
			wantInMessage: []string{"missing access_token"},
		},
		{
			name:          "2xx answer that is not JSON",
			err:           errors.New("oauth2: cannot parse json: invalid character '<' looking for beginning of value"),
			wantReason:    v1alpha1.ReasonTokenEndpointUnavailable,
			wantKind:      entra.Transient,
			wantInMessage: []string{"cannot parse json"},
		},
		{
			name:          "context deadline exceeded",
			err:           context.DeadlineExceeded,
			wantReason:    v1alpha1.ReasonTokenEndpointUnavailable,
			wantKind:      entra.Transient,
			wantInMessage: []string{"timed out"},
		},
		{
			name:          "url.Error wrapping a net timeout",
			err:           &url.Error{Op: "Post", URL: tokenURL, Err: &net.OpError{Op: "read", Net: "tcp", Err: timeoutError{}}},
			wantReason:    v1alpha1.ReasonTokenEndpointUnavailable,
			wantKind:      entra.Transient,
			wantInMessage: []string{"timed out"},
		},
		{
			name:          "connection refused",
			err:           &url.Error{Op: "Post", URL: tokenURL, Err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}},
			wantReason:    v1alpha1.ReasonTokenEndpointUnavailable,
			wantKind:      entra.Transient,
			wantInMessage: []string{"Could not reach", "connection refused"},
		},
		{
			name:          "DNS failure",
			err:           &url.Error{Op: "Post", URL: tokenURL, Err: &net.DNSError{Err: "no such host", Name: "login.microsoftonline.com", IsNotFound: true}},
			wantReason:    v1alpha1.ReasonTokenEndpointUnavailable,
			wantKind:      entra.Transient,
			wantInMessage: []string{"no such host"},
		},
		{
			name:          "context canceled",
			err:           fmt.Errorf("wrapped: %w", context.Canceled),
			wantReason:    v1alpha1.ReasonTokenEndpointUnavailable,
			wantKind:      entra.Transient,
			wantInMessage: []string{"canceled"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := entra.Classify(tt.err, testNow)
			if f == nil {
				t.Fatal("Classify returned nil")
			}
			if f.Reason != tt.wantReason || f.Kind != tt.wantKind {
				t.Errorf("got %s/%s, want %s/%s", f.Reason, f.Kind, tt.wantReason, tt.wantKind)
			}
			if f.StatusCode != tt.wantStatus {
				t.Errorf("StatusCode = %d, want %d", f.StatusCode, tt.wantStatus)
			}
			if f.ErrorCode != tt.wantErrorCode {
				t.Errorf("ErrorCode = %q, want %q", f.ErrorCode, tt.wantErrorCode)
			}
			if !slices.Equal(f.AADSTS, tt.wantAADSTS) {
				t.Errorf("AADSTS = %v, want %v", f.AADSTS, tt.wantAADSTS)
			}
			if f.RetryAfter != tt.wantRetryAfter {
				t.Errorf("RetryAfter = %v, want %v", f.RetryAfter, tt.wantRetryAfter)
			}
			for _, s := range tt.wantInMessage {
				if !strings.Contains(f.Message, s) {
					t.Errorf("Message %q does not contain %q", f.Message, s)
				}
			}
			if strings.ContainsAny(f.Message, "\r\n") || strings.Contains(f.Message, "Trace ID") {
				t.Errorf("Message %q is not a single line of Entra ID's description", f.Message)
			}
			if !strings.HasPrefix(f.Error(), f.Reason+": ") {
				t.Errorf("Error() = %q, want it to start with the reason", f.Error())
			}
		})
	}
}

// withSuberror adds Entra ID's "suberror" field to an error body, as Conditional
// Access sends it.
func withSuberror(e *oauth2.RetrieveError, suberror string) *oauth2.RetrieveError {
	var body map[string]any
	if err := json.Unmarshal(e.Body, &body); err != nil {
		panic(err)
	}
	body["suberror"] = suberror
	b, err := json.Marshal(body)
	if err != nil {
		panic(err)
	}
	e.Body = b
	return e
}

func withHeader(e *oauth2.RetrieveError, key, value string) *oauth2.RetrieveError {
	e.Response.Header.Set(key, value)
	return e
}

func TestClassifyNil(t *testing.T) {
	if f := entra.Classify(nil, testNow); f != nil {
		t.Errorf("Classify(nil) = %v, want nil", f)
	}
}

func TestClassifyShortensLongDescriptions(t *testing.T) {
	desc := "AADSTS7000215: " + strings.Repeat("very long ", 1000)
	f := entra.Classify(oauthError(401, "invalid_client", desc), testNow)
	if len(f.Message) > 600 {
		t.Errorf("Message is %d bytes, want it shortened: %q", len(f.Message), f.Message)
	}
	if !strings.HasSuffix(f.Message, "…") {
		t.Errorf("Message %q does not show it was shortened", f.Message)
	}
}

// kindOfReason is the contract's table: which reasons Classify may return, and
// how each is retried.
var kindOfReason = map[string]entra.Kind{
	v1alpha1.ReasonInvalidClientSecret:      entra.NeedsHuman,
	v1alpha1.ReasonClientSecretExpired:      entra.NeedsHuman,
	v1alpha1.ReasonConsentRequired:          entra.NeedsHuman,
	v1alpha1.ReasonTenantNotFound:           entra.NeedsHuman,
	v1alpha1.ReasonThrottled:                entra.Transient,
	v1alpha1.ReasonTokenEndpointUnavailable: entra.Transient,
	v1alpha1.ReasonAccessBlocked:            entra.NeedsHuman,
	v1alpha1.ReasonTokenRequestRejected:     entra.NeedsHuman,
	v1alpha1.ReasonInvalidClientAssertion:   entra.NeedsHuman,
}

// assertionAADSTS are the codes of a rejected certificate or federated assertion:
// the only ones that give InvalidClientAssertion.
var assertionAADSTS = []int{700027, 700024, 70021, 700211, 700212, 700213, 7002138}

// transientAADSTS are the codes Entra ID sends with a 4xx status that still mean
// "try again": ENTRA.md's retryable AADSTS codes.
var transientAADSTS = []int{50033, 90006, 90024}

// retriedDespite4xx reports whether fl, from a 4xx other than 408 and 429, carries
// one of the answers that mean "try again" whatever the status.
func retriedDespite4xx(fl *entra.Failure) bool {
	if fl.ErrorCode == "temporarily_unavailable" {
		return true
	}
	for _, c := range fl.AADSTS {
		if slices.Contains(transientAADSTS, c) {
			return true
		}
	}
	return false
}

//nolint:gocyclo // one invariant per contract rule, checked in one place so a seed exercises them all
func FuzzClassify(f *testing.F) {
	for _, e := range []*oauth2.RetrieveError{
		entraError(401, "invalid_client", 7000215, "Invalid client secret provided."),
		entraError(400, "invalid_scope", 1002012, "The provided value for scope is not valid."),
		entraError(400, "invalid_request", 900382, "Confidential Client is not supported in Cross Cloud request."),
		withSuberror(entraError(400, "interaction_required", 53003, "Access has been blocked by Conditional Access policies."), "message_only"),
		entraError(400, "unauthorized_client", 7000112, "Application is disabled."),
		entraError(401, "invalid_client", 700027, "Client assertion contains an invalid signature. [Reason - The key was not found.]"),
		entraError(400, "invalid_client", 7002138, "No matching federated identity record found for presented assertion subject 'x'."),
		oauthError(400, "invalid_request", "AADSTS700212: No matching federated identity record found for presented assertion audience 'y'."),
		rawError(404, ""),
		rawError(408, "Request Timeout"),
		oauthError(400, "temporarily_unavailable", ""),
		rawError(429, "Too many requests", "Retry-After", "60"),
		rawError(503, "", "Retry-After", testNow.Format(http.TimeFormat)),
		rawError(200, `{"error_codes":[1e99,-1,"x"],"error_description":"AADSTS99999999999"}`),
	} {
		f.Add(e.Response.StatusCode, e.Response.Header.Get("Retry-After"), e.ErrorCode, e.Body)
	}
	f.Fuzz(func(t *testing.T, status int, retryAfter, errCode string, body []byte) {
		err := &oauth2.RetrieveError{
			Response:  response(status, "Retry-After", retryAfter),
			Body:      body,
			ErrorCode: errCode,
		}
		check := func(fl *entra.Failure) {
			t.Helper()
			want, ok := kindOfReason[fl.Reason]
			if !ok {
				t.Fatalf("Reason %q is not one Classify may return", fl.Reason)
			}
			if fl.Kind != want {
				t.Errorf("Kind = %s for %s, want %s", fl.Kind, fl.Reason, want)
			}
			if fl.RetryAfter < 0 || fl.RetryAfter > time.Hour {
				t.Errorf("RetryAfter = %v, want within [0, 1h]", fl.RetryAfter)
			}
			if fl.Message == "" || !utf8.ValidString(fl.Message) || strings.ContainsAny(fl.Message, "\r\n") {
				t.Errorf("Message %q is empty, not UTF-8 or not one line", fl.Message)
			}
			if len(fl.Message) > 2000 {
				t.Errorf("Message is %d bytes long", len(fl.Message))
			}
		}
		fl := entra.Classify(err, testNow)
		check(fl)
		if fl.StatusCode != status {
			t.Errorf("StatusCode = %d, want %d", fl.StatusCode, status)
		}
		// A 4xx other than 408 and 429 is a refusal: it is never retried as
		// transient unless Entra ID said to try again.
		if status >= 400 && status < 500 && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests &&
			!retriedDespite4xx(fl) {
			if fl.Kind == entra.Transient || fl.Reason == v1alpha1.ReasonTokenEndpointUnavailable {
				t.Errorf("HTTP %d classified as %s/%s (code %q, AADSTS %v), want a reason that needs a human", status, fl.Reason, fl.Kind, fl.ErrorCode, fl.AADSTS)
			}
		}
		// InvalidClientAssertion comes from an assertion code and nothing else, and
		// an assertion code first in line always gives it (but for 429).
		hasAssertionCode := slices.ContainsFunc(fl.AADSTS, func(c int) bool { return slices.Contains(assertionAADSTS, c) })
		if fl.Reason == v1alpha1.ReasonInvalidClientAssertion && !hasAssertionCode {
			t.Errorf("InvalidClientAssertion for AADSTS %v, none of %v", fl.AADSTS, assertionAADSTS)
		}
		if status != http.StatusTooManyRequests && len(fl.AADSTS) > 0 && slices.Contains(assertionAADSTS, fl.AADSTS[0]) &&
			fl.Reason != v1alpha1.ReasonInvalidClientAssertion {
			t.Errorf("AADSTS %v classified as %s, want InvalidClientAssertion", fl.AADSTS, fl.Reason)
		}
		// Without a body there is nothing to recognise: a 4xx other than 408 and 429
		// is TokenRequestRejected, 408 and 5xx are TokenEndpointUnavailable.
		if len(body) == 0 && errCode == "" {
			switch {
			case status == http.StatusTooManyRequests:
			case status == http.StatusRequestTimeout || status >= 500:
				if fl.Reason != v1alpha1.ReasonTokenEndpointUnavailable {
					t.Errorf("empty HTTP %d classified as %s, want TokenEndpointUnavailable", status, fl.Reason)
				}
			case status >= 400:
				if fl.Reason != v1alpha1.ReasonTokenRequestRejected || !strings.Contains(fl.Message, fmt.Sprintf("HTTP %d", status)) {
					t.Errorf("empty HTTP %d classified as %s (%q), want TokenRequestRejected quoting the status", status, fl.Reason, fl.Message)
				}
			}
		}
		check(entra.Classify(errors.New(string(body)), testNow))
	})
}
