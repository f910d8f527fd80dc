package entra

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/utils/clock"
)

// maxGraphResponseBody bounds what is read of a Graph answer: a keyCredential or
// an error body is well under a kilobyte, and a hostile proxy must not make the
// operator buffer more.
const maxGraphResponseBody = 64 << 10

// KeyRoller rolls an app registration's certificates through Microsoft Graph. The
// app controller depends on it so that tests can point it at the emulator.
type KeyRoller interface {
	// AddKey registers next on the application object and returns its keyId.
	AddKey(ctx context.Context, req KeyRequest, next *Certificate) (string, error)
	// RemoveKey removes the key credential keyID from the application object.
	RemoveKey(ctx context.Context, req KeyRequest, keyID string) error
}

// KeyRequest says which application object a key call is about and how it is
// authorised. Like Request, it prints and marshals without its secrets.
type KeyRequest struct {
	// GraphHost is Microsoft Graph's base URL for the app's cloud (GraphHosts.Host).
	GraphHost string
	// ObjectID is the application object's id (not its client ID).
	ObjectID string
	// AccessToken is a Graph token of the app itself in its home tenant.
	AccessToken string `json:"-"`
	// Proving is a certificate registered on the app now, whose key signs the
	// proof of possession.
	Proving *Certificate `json:"-"`
}

// String describes r without its token or key.
func (r KeyRequest) String() string {
	return fmt.Sprintf("{GraphHost:%s ObjectID:%s Proving:%v}", r.GraphHost, r.ObjectID, r.Proving)
}

// GoString describes r without its token or key.
func (r KeyRequest) GoString() string { return "entra.KeyRequest" + r.String() }

// GraphError is Microsoft Graph refusing a key call, or the call not reaching
// it. Its text holds Graph's code and message (which never echo the request),
// scrubbed of the token and proof all the same, and never the request itself.
type GraphError struct {
	// Action is "addKey" or "removeKey".
	Action string
	// Status is the HTTP status; zero when no answer came.
	Status int
	// Code and Message are Graph's error.code and error.message.
	Code    string
	Message string
	// RequestID is Graph's request-id, for Microsoft support.
	RequestID string
}

func (e *GraphError) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("Microsoft Graph %s could not be reached: %s", e.Action, e.Message)
	}
	text := fmt.Sprintf("Microsoft Graph %s answered %d", e.Action, e.Status)
	if e.Code != "" {
		text += " " + e.Code
	}
	if e.Message != "" {
		text += ": " + e.Message
	}
	if e.RequestID != "" {
		text += " (request-id " + e.RequestID + ")"
	}
	return text
}

// NeedsPerson reports whether retrying cannot help until someone acts: Graph
// refused the call (403), does not know the object (404), rejected the proof
// (401 Authentication_MissingOrMalformed) or the body (400). A failure to reach
// Graph, throttling, a server error or an expired bearer token is retried.
func (e *GraphError) NeedsPerson() bool {
	switch e.Status {
	case http.StatusBadRequest, http.StatusForbidden, http.StatusNotFound:
		return true
	case http.StatusUnauthorized:
		return e.Code == "Authentication_MissingOrMalformed"
	}
	return false
}

// GraphClient calls Microsoft Graph's addKey and removeKey. The zero value is
// ready to use.
type GraphClient struct {
	// HTTPClient sends the calls; nil uses the client token requests share.
	// Redirects are never followed: a call carries a bearer token and a proof.
	HTTPClient *http.Client
	// Timeout bounds each call; zero means DefaultTimeout.
	Timeout time.Duration
	// Clock dates the proofs; nil means the real clock.
	Clock clock.PassiveClock
}

var _ KeyRoller = (*GraphClient)(nil)

type graphKeyCredential struct {
	Type  string `json:"type"`
	Usage string `json:"usage"`
	Key   string `json:"key"`
}

// AddKey posts {graph}/v1.0/applications/{id}/addKey with next's public
// certificate and a proof signed by req.Proving, and returns the new keyId. Its
// errors are *GraphError.
func (c *GraphClient) AddKey(ctx context.Context, req KeyRequest, next *Certificate) (string, error) {
	if next == nil || next.leaf == nil {
		return "", &GraphError{Action: "addKey", Message: "no certificate to add"}
	}
	var answer struct {
		KeyID string `json:"keyId"`
	}
	body := map[string]any{
		"keyCredential":      graphKeyCredential{Type: "AsymmetricX509Cert", Usage: "Verify", Key: next.certificateBase64()},
		"passwordCredential": nil,
	}
	if err := c.call(ctx, "addKey", req, body, &answer); err != nil {
		return "", err
	}
	if !IsGUID(answer.KeyID) {
		return "", &GraphError{Action: "addKey", Status: http.StatusOK, Message: "the answer holds no keyId"}
	}
	return answer.KeyID, nil
}

// RemoveKey posts {graph}/v1.0/applications/{id}/removeKey for keyID with a proof
// signed by req.Proving. Its errors are *GraphError.
func (c *GraphClient) RemoveKey(ctx context.Context, req KeyRequest, keyID string) error {
	return c.call(ctx, "removeKey", req, map[string]any{"keyId": keyID}, nil)
}

func (c *GraphClient) call(ctx context.Context, action string, req KeyRequest, body map[string]any, answer any) error {
	fail := func(status int, code, message, requestID string) *GraphError {
		// Whole, and each part long enough to matter, as for the token
		// endpoint's assertions: a host that echoes only a JWT's payload or
		// signature must not get it into a message either.
		s := scrubber{secrets: jwtParts(req.AccessToken)}
		if p, ok := body["proof"].(string); ok {
			s.secrets = append(s.secrets, jwtParts(p)...)
		}
		return &GraphError{Action: action, Status: status, Code: s.line(code, maxErrorCodeLen),
			Message: s.line(message, maxDetailLen), RequestID: s.line(requestID, maxIDLen)}
	}
	if !IsGUID(req.ObjectID) {
		return fail(0, "", "the application object ID is not a GUID", "")
	}
	proof, err := req.Proving.signProof(req.ObjectID, c.now())
	if err != nil {
		return fail(0, "", "could not sign the proof of possession with the current certificate", "")
	}
	body["proof"] = proof
	raw, err := json.Marshal(body)
	if err != nil {
		return fail(0, "", "could not encode the request", "")
	}

	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	u := strings.TrimRight(req.GraphHost, "/") + "/v1.0/applications/" + url.PathEscape(req.ObjectID) + "/" + action
	httpReq, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(raw))
	if err != nil {
		return fail(0, "", "invalid Graph host", "")
	}
	httpReq.Header.Set("Content-Type", "application/json")
	httpReq.Header.Set("Authorization", "Bearer "+req.AccessToken)
	httpReq.Header.Set("client-request-id", string(uuid.NewUUID()))
	resp, err := c.httpClient().Do(httpReq)
	if err != nil {
		// url.Error names the URL, which holds only the host and the object ID.
		return fail(0, "", err.Error(), "")
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxGraphResponseBody))
	requestID := resp.Header.Get("request-id")
	if err != nil {
		return fail(resp.StatusCode, "", "reading the answer: "+err.Error(), requestID)
	}
	if resp.StatusCode/100 == 2 {
		if answer == nil {
			return nil
		}
		if err := json.Unmarshal(data, answer); err != nil {
			return fail(resp.StatusCode, "", "the answer is not JSON", requestID)
		}
		return nil
	}
	var graphErr struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &graphErr) != nil || graphErr.Error.Code == "" {
		// A proxy's page, or something else that is not Graph's: its status says
		// enough, its body is not repeated.
		return fail(resp.StatusCode, "", http.StatusText(resp.StatusCode), requestID)
	}
	return fail(resp.StatusCode, graphErr.Error.Code, graphErr.Error.Message, requestID)
}

func (c *GraphClient) now() time.Time {
	if c.Clock == nil {
		return time.Now()
	}
	return c.Clock.Now()
}

func (c *GraphClient) httpClient() *http.Client {
	hc := *defaultHTTPClient()
	if c.HTTPClient != nil {
		hc = *c.HTTPClient
	}
	hc.CheckRedirect = refuseRedirect
	return &hc
}
