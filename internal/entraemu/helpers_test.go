package entraemu_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
)

const (
	tenantID = "6e3c1a8e-2f6b-4c4f-9b7e-0d6f2a1c9e11"
	clientID = "0b9f7c55-8a3e-4d2a-9c61-5f0e7d3b2a10"
	secret   = "s3cret~Value.with+special/chars="
	xdrAPI   = "https://api.security.microsoft.com"
	xdrScope = xdrAPI + "/.default"
	// entraJSON is the Content-Type of every JSON body Entra sends.
	entraJSON = "application/json; charset=utf-8"
)

// t0 is the fake clock's start; error timestamps show it as "2026-11-21 12:00:00Z".
var t0 = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

var guidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// fixture is an emulator on a fake clock, served over HTTP, with one app consented
// in one tenant with two roles on the Defender XDR API.
type fixture struct {
	emu   *entraemu.Emulator
	clock *clocktesting.FakePassiveClock
	srv   *httptest.Server
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureWith(t, entraemu.Options{})
}

// newFixtureWith is newFixture with options; their clock is always the fixture's.
func newFixtureWith(t *testing.T, opts entraemu.Options) *fixture {
	t.Helper()
	clock := clocktesting.NewFakePassiveClock(t0)
	opts.Clock = clock
	emu, err := entraemu.New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	emu.AddApp(clientID, entraemu.Secret{Value: secret})
	emu.Grant(tenantID, clientID, xdrAPI, "Incident.Read.All", "AdvancedHunting.Read.All")
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	return &fixture{emu: emu, clock: clock, srv: srv}
}

// response is an answer, read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (f *fixture) do(t *testing.T, req *http.Request) response {
	t.Helper()
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close() // read to the end or failed; either way there is nothing left to lose
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: body}
}

// post sends form to path, as a token client does.
func (f *fixture) post(t *testing.T, path string, form url.Values) response {
	t.Helper()
	return f.postAt(t, f.srv.URL, path, form)
}

// postAt is post to the server at base, such as one of serve's.
func (f *fixture) postAt(t *testing.T, base, path string, form url.Values) response {
	t.Helper()
	return f.do(t, newPost(t, base+path, form))
}

// serve serves h, such as the emulator's handler of another cloud, for the
// duration of the test and returns its base URL.
func (f *fixture) serve(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func newPost(t *testing.T, u string, form url.Values) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return req
}

func v2Path(tenant string) string { return "/" + tenant + "/oauth2/v2.0/token" }

// v1TokenPath is the fixture tenant's v1 endpoint; every test of another tenant
// uses the v2 one.
const v1TokenPath = "/" + tenantID + "/oauth2/token"

// creds is a client-credentials form with the fixture's app and secret, plus
// extra key/value pairs.
func creds(extra ...string) url.Values {
	form := url.Values{
		"grant_type":    {"client_credentials"},
		"client_id":     {clientID},
		"client_secret": {secret},
	}
	for i := 0; i+1 < len(extra); i += 2 {
		form.Set(extra[i], extra[i+1])
	}
	return form
}

// entraError is Entra's error body.
type entraError struct {
	Error         string `json:"error"`
	Description   string `json:"error_description"`
	Codes         []int  `json:"error_codes"`
	Timestamp     string `json:"timestamp"`
	TraceID       string `json:"trace_id"`
	CorrelationID string `json:"correlation_id"`
	ErrorURI      string `json:"error_uri"`
}

// tokenClaims are the claims of an access token, decoded independently of the
// emulator's own types.
type tokenClaims struct {
	Aud      string   `json:"aud"`
	Iss      string   `json:"iss"`
	Iat      int64    `json:"iat"`
	Nbf      int64    `json:"nbf"`
	Exp      int64    `json:"exp"`
	Aio      string   `json:"aio"`
	AppID    string   `json:"appid"`
	AppIDACR string   `json:"appidacr"`
	Azp      string   `json:"azp"`
	AzpACR   string   `json:"azpacr"`
	Idp      string   `json:"idp"`
	Oid      string   `json:"oid"`
	Rh       string   `json:"rh"`
	Roles    []string `json:"roles"`
	Sub      string   `json:"sub"`
	Tid      string   `json:"tid"`
	Uti      string   `json:"uti"`
	Ver      string   `json:"ver"`
}

// token requests a token and returns its raw access token, failing the test on any
// answer but 200.
func (f *fixture) token(t *testing.T, path string, form url.Values) string {
	t.Helper()
	return f.tokenAt(t, f.srv.URL, path, form)
}

// tokenAt is token from the server at base.
func (f *fixture) tokenAt(t *testing.T, base, path string, form url.Values) string {
	t.Helper()
	resp := f.postAt(t, base, path, form)
	if resp.status != http.StatusOK {
		t.Fatalf("POST %s: status %d, body %s", path, resp.status, resp.body)
	}
	var body struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(resp.body, &body); err != nil {
		t.Fatalf("decoding the token response: %v", err)
	}
	return body.AccessToken
}

// keys fetches a JSON Web Key Set from the emulator.
func (f *fixture) keys(t *testing.T, path string) jose.JSONWebKeySet {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, f.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp := f.do(t, req)
	if resp.status != http.StatusOK {
		t.Fatalf("GET %s: status %d", path, resp.status)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(resp.body, &set); err != nil {
		t.Fatalf("decoding the key set: %v", err)
	}
	return set
}

// verify checks the token's signature against the emulator's published key and
// returns its header, its claims, and its claims as a map to see which are present.
func (f *fixture) verify(t *testing.T, raw string) (jose.Header, tokenClaims, map[string]any) {
	t.Helper()
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatalf("parsing the access token: %v", err)
	}
	header := tok.Headers[0]
	set := f.keys(t, "/common/discovery/keys")
	keys := set.Key(header.KeyID)
	if len(keys) != 1 {
		t.Fatalf("the key set has %d keys with kid %q, want 1", len(keys), header.KeyID)
	}
	var c tokenClaims
	var present map[string]any
	if err := tok.Claims(keys[0].Key, &c, &present); err != nil {
		t.Fatalf("verifying the access token: %v", err)
	}
	return header, c, present
}
