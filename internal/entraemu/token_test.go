package entraemu_test

import (
	"bytes"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
)

func TestV2SuccessBodyHasNumbers(t *testing.T) {
	f := newFixture(t)
	resp := f.post(t, v2Path(tenantID), creds("scope", xdrScope))
	if resp.status != http.StatusOK {
		t.Fatalf("status = %d, body %s", resp.status, resp.body)
	}
	assertTokenHeaders(t, resp)

	body := decodeWithNumbers(t, resp.body)
	if want := []string{"access_token", "expires_in", "ext_expires_in", "token_type"}; !slices.Equal(sortedKeys(body), want) {
		t.Errorf("fields = %v, want %v", sortedKeys(body), want)
	}
	if body["token_type"] != "Bearer" {
		t.Errorf("token_type = %v, want Bearer", body["token_type"])
	}
	for _, k := range []string{"expires_in", "ext_expires_in"} {
		if n, ok := body[k].(json.Number); !ok || n != "3599" {
			t.Errorf("%s = %#v, want the JSON number 3599", k, body[k])
		}
	}
}

func TestV1SuccessBodyHasStrings(t *testing.T) {
	f := newFixture(t)
	resp := f.post(t, v1TokenPath, creds("resource", xdrAPI))
	if resp.status != http.StatusOK {
		t.Fatalf("status = %d, body %s", resp.status, resp.body)
	}
	assertTokenHeaders(t, resp)

	body := decodeWithNumbers(t, resp.body)
	want := map[string]string{
		"token_type":     "Bearer",
		"expires_in":     "3599",
		"ext_expires_in": "3599",
		"expires_on":     strconv.FormatInt(t0.Unix()+3599, 10),
		"not_before":     strconv.FormatInt(t0.Unix()-300, 10),
		"resource":       xdrAPI,
	}
	for k, v := range want {
		if got, ok := body[k].(string); !ok || got != v {
			t.Errorf("%s = %#v, want the string %q", k, body[k], v)
		}
	}
	if len(body) != len(want)+1 || body["access_token"] == nil {
		t.Errorf("fields = %v, want those of %v and access_token", sortedKeys(body), want)
	}
}

func assertTokenHeaders(t *testing.T, resp response) {
	t.Helper()
	if ct := resp.header.Get("Content-Type"); ct != entraJSON {
		t.Errorf("Content-Type = %q, want application/json; charset=utf-8", ct)
	}
	if cc := resp.header.Get("Cache-Control"); cc != "no-store, no-cache" {
		t.Errorf("Cache-Control = %q, want no-store, no-cache", cc)
	}
}

func decodeWithNumbers(t *testing.T, b []byte) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	return m
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func TestAccessTokenClaims(t *testing.T) {
	roles := []string{"Incident.Read.All", "AdvancedHunting.Read.All"}
	tests := []struct {
		name    string
		version string // "" keeps the default
		path    string
		form    url.Values
	}{
		{name: "v1 endpoint gives a v1 token", path: v1TokenPath, form: creds("resource", xdrAPI)},
		{name: "v2 endpoint gives a v1 token for Defender", path: v2Path(tenantID), form: creds("scope", xdrScope)},
		{name: "v2 endpoint gives a v2 token when the tenant says so", version: entraemu.TokenV2, path: v2Path(tenantID), form: creds("scope", xdrScope)},
		{name: "v1 endpoint gives a v2 token when the tenant says so", version: entraemu.TokenV2, path: v1TokenPath, form: creds("resource", xdrAPI)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			if tc.version != "" {
				f.emu.SetTokenVersion(tenantID, tc.version)
			}
			header, c, _ := f.verify(t, f.token(t, tc.path, tc.form))
			checkCommonClaims(t, header, c, roles)
			if tc.version == entraemu.TokenV2 {
				checkV2Claims(t, header, c)
			} else {
				checkV1Claims(t, header, c)
			}
		})
	}
}

// checkCommonClaims checks what v1 and v2 tokens have alike.
func checkCommonClaims(t *testing.T, header jose.Header, c tokenClaims, roles []string) {
	t.Helper()
	if header.Algorithm != "RS256" || header.KeyID == "" || header.ExtraHeaders["typ"] != "JWT" {
		t.Errorf("header alg=%q kid=%q typ=%v, want RS256, a kid and JWT", header.Algorithm, header.KeyID, header.ExtraHeaders["typ"])
	}
	if c.Iat != t0.Unix()-300 || c.Nbf != t0.Unix()-300 || c.Exp != t0.Unix()+3599 {
		t.Errorf("iat, nbf, exp = %d, %d, %d; want now-300, now-300, now+3599 with now = %d", c.Iat, c.Nbf, c.Exp, t0.Unix())
	}
	if c.Tid != tenantID || !slices.Equal(c.Roles, roles) {
		t.Errorf("tid = %q, roles = %v; want %q, %v", c.Tid, c.Roles, tenantID, roles)
	}
	if !guidRE.MatchString(c.Oid) || c.Sub != c.Oid {
		t.Errorf("oid = %q, sub = %q; want the same GUID", c.Oid, c.Sub)
	}
	if c.Aio == "" || c.Uti == "" || c.Rh == "" {
		t.Errorf("aio = %q, uti = %q, rh = %q; want them set", c.Aio, c.Uti, c.Rh)
	}
	if c.Idp != c.Iss {
		t.Errorf("idp = %q, want iss %q", c.Idp, c.Iss)
	}
}

func checkV1Claims(t *testing.T, header jose.Header, c tokenClaims) {
	t.Helper()
	want := tokenClaims{
		Aud: xdrAPI, Iss: "https://sts.windows.net/" + tenantID + "/", AppID: clientID, AppIDACR: "1", Ver: "1.0",
	}
	if c.Aud != want.Aud || c.Iss != want.Iss || c.AppID != want.AppID || c.AppIDACR != want.AppIDACR || c.Ver != want.Ver {
		t.Errorf("aud, iss, appid, appidacr, ver = %q, %q, %q, %q, %q; want %q, %q, %q, %q, %q",
			c.Aud, c.Iss, c.AppID, c.AppIDACR, c.Ver, want.Aud, want.Iss, want.AppID, want.AppIDACR, want.Ver)
	}
	if c.Azp != "" || c.AzpACR != "" {
		t.Errorf("azp = %q, azpacr = %q in a v1 token", c.Azp, c.AzpACR)
	}
	if x5t, ok := header.ExtraHeaders["x5t"]; !ok || x5t != header.KeyID {
		t.Errorf("x5t = %v, want the kid %q", x5t, header.KeyID)
	}
}

func checkV2Claims(t *testing.T, header jose.Header, c tokenClaims) {
	t.Helper()
	if !guidRE.MatchString(c.Aud) {
		t.Errorf("aud = %q, want the resource's GUID", c.Aud)
	}
	if want := "https://login.microsoftonline.com/" + tenantID + "/v2.0"; c.Iss != want {
		t.Errorf("iss = %q, want %q", c.Iss, want)
	}
	if c.Azp != clientID || c.AzpACR != "1" || c.Ver != "2.0" {
		t.Errorf("azp, azpacr, ver = %q, %q, %q; want %q, 1, 2.0", c.Azp, c.AzpACR, c.Ver, clientID)
	}
	if c.AppID != "" || c.AppIDACR != "" {
		t.Errorf("appid = %q, appidacr = %q in a v2 token", c.AppID, c.AppIDACR)
	}
	if x5t, ok := header.ExtraHeaders["x5t"]; ok {
		t.Errorf("x5t = %v in a v2 token", x5t)
	}
}

func TestStableIdentifiers(t *testing.T) {
	f := newFixture(t)
	const otherTenant = "3f2b8c1d-5a4e-4b7f-8c2d-1e9a6b5c4d30"
	f.emu.Grant(otherTenant, clientID, xdrAPI, "Incident.Read.All")
	f.emu.SetTokenVersion(tenantID, entraemu.TokenV2)
	f.emu.SetTokenVersion(otherTenant, entraemu.TokenV2)
	form := creds("scope", xdrScope)

	_, first, _ := f.verify(t, f.token(t, v2Path(tenantID), form))
	_, second, _ := f.verify(t, f.token(t, v2Path(tenantID), form))
	_, other, _ := f.verify(t, f.token(t, v2Path(otherTenant), form))

	if first.Oid != second.Oid {
		t.Errorf("oid changed between tokens of the same tenant and app: %q, %q", first.Oid, second.Oid)
	}
	if first.Oid == other.Oid {
		t.Errorf("two tenants share the service principal oid %q", first.Oid)
	}
	if first.Aud != other.Aud {
		t.Errorf("the resource's GUID differs between tenants: %q, %q", first.Aud, other.Aud)
	}
	if first.Uti == second.Uti {
		t.Errorf("two tokens share the uti %q", first.Uti)
	}
}

func TestRolesClaimOmittedWithoutPermissions(t *testing.T) {
	const endpointAPI = "https://api.securitycenter.microsoft.com"
	tests := []struct {
		name  string
		grant func(*entraemu.Emulator)
		form  url.Values
	}{
		{
			name:  "consented without any role",
			grant: func(e *entraemu.Emulator) { e.Grant(tenantID, clientID, xdrAPI) },
			form:  creds("scope", xdrScope),
		},
		{
			name:  "roles granted on another resource only",
			grant: func(*entraemu.Emulator) {}, // the fixture's roles are on the XDR API
			form:  creds("scope", endpointAPI+"/.default"),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			tc.grant(f.emu)
			_, _, present := f.verify(t, f.token(t, v2Path(tenantID), tc.form))
			if roles, ok := present["roles"]; ok {
				t.Errorf("roles = %v, want no roles claim at all", roles)
			}
		})
	}
}

func TestTokenTimesFollowTheClock(t *testing.T) {
	tests := []struct {
		name     string
		opts     entraemu.Options
		lifetime time.Duration // for SetLifetime; 0 leaves the tenant on the default
		want     time.Duration
	}{
		{name: "default lifetime", want: 3599 * time.Second},
		{name: "emulator default lifetime", opts: entraemu.Options{DefaultLifetime: time.Hour}, want: time.Hour},
		{name: "tenant lifetime", lifetime: 90 * time.Minute, want: 90 * time.Minute},
		{name: "tenant lifetime overrides the emulator default", opts: entraemu.Options{DefaultLifetime: time.Hour}, lifetime: 2 * time.Hour, want: 2 * time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixtureWith(t, tc.opts)
			if tc.lifetime != 0 {
				f.emu.SetLifetime(tenantID, tc.lifetime)
			}
			now := t0.Add(42 * time.Minute)
			f.clock.SetTime(now)

			resp := f.post(t, v2Path(tenantID), creds("scope", xdrScope))
			body := decodeWithNumbers(t, resp.body)
			if want := json.Number(strconv.Itoa(int(tc.want.Seconds()))); body["expires_in"] != want {
				t.Errorf("expires_in = %v, want %v", body["expires_in"], want)
			}
			_, c, _ := f.verify(t, body["access_token"].(string))
			if c.Iat != now.Add(-5*time.Minute).Unix() || c.Exp != now.Add(tc.want).Unix() {
				t.Errorf("iat, exp = %d, %d; want %d, %d", c.Iat, c.Exp, now.Add(-5*time.Minute).Unix(), now.Add(tc.want).Unix())
			}
		})
	}
}

func TestClientCredentialsInBasicAuthOrForm(t *testing.T) {
	const unencodedSecret = "100%-not-form-encoded" // "%-n" does not form-decode
	tests := []struct {
		name  string
		build func(t *testing.T, base string) *http.Request
	}{
		{
			name: "form",
			build: func(t *testing.T, base string) *http.Request {
				return newPost(t, base+v2Path(tenantID), creds("scope", xdrScope))
			},
		},
		{
			name: "Basic, form-encoded as RFC 6749 says",
			build: func(t *testing.T, base string) *http.Request {
				req := newPost(t, base+v2Path(tenantID), url.Values{"grant_type": {"client_credentials"}, "scope": {xdrScope}})
				req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret))
				return req
			},
		},
		{
			name: "Basic, not form-encoded",
			build: func(t *testing.T, base string) *http.Request {
				req := newPost(t, base+v2Path(tenantID), url.Values{"grant_type": {"client_credentials"}, "scope": {xdrScope}})
				req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(clientID+":"+unencodedSecret)))
				return req
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.emu.AddApp(clientID, entraemu.Secret{Value: unencodedSecret})
			resp := f.do(t, tc.build(t, f.srv.URL))
			if resp.status != http.StatusOK {
				t.Errorf("status = %d, body %s", resp.status, resp.body)
			}
			if n := f.emu.Requests(tenantID); n != 1 {
				t.Errorf("Requests = %d, want 1", n)
			}
		})
	}
}

func TestRequestCounters(t *testing.T) {
	const unknownTenant = "9a1d7e3c-6b2f-4e8a-b5c4-2d0f1e3a7b65"
	f := newFixture(t)
	f.emu.InjectFailures(tenantID, entraemu.ServerError())

	f.post(t, v2Path(tenantID), creds("scope", xdrScope))                       // injected failure
	f.post(t, v2Path(tenantID), creds("scope", xdrScope))                       // success
	f.post(t, v1TokenPath, creds("client_secret", "wrong"))                     // AADSTS7000215
	f.post(t, v2Path(strings.ToUpper(unknownTenant)), creds("scope", xdrScope)) // AADSTS90002, any case

	if n := f.emu.Requests(tenantID); n != 3 {
		t.Errorf("Requests(tenant) = %d, want 3", n)
	}
	if n := f.emu.Requests(unknownTenant); n != 1 {
		t.Errorf("Requests(unknown tenant) = %d, want 1", n)
	}
	if n := f.emu.TotalRequests(); n != 4 {
		t.Errorf("TotalRequests = %d, want 4", n)
	}
}

func TestKeyEndpoints(t *testing.T) {
	f := newFixture(t)
	common := f.keys(t, "/common/discovery/keys")
	tenant := f.keys(t, "/"+tenantID+"/discovery/v2.0/keys")

	if len(common.Keys) != 1 || len(tenant.Keys) != 1 {
		t.Fatalf("key counts = %d, %d; want 1 and 1", len(common.Keys), len(tenant.Keys))
	}
	k := common.Keys[0]
	if k.KeyID != tenant.Keys[0].KeyID {
		t.Errorf("the endpoints publish different keys: %q, %q", k.KeyID, tenant.Keys[0].KeyID)
	}
	pub, ok := k.Key.(*rsa.PublicKey)
	if !ok || pub.N.BitLen() != 2048 {
		t.Errorf("key = %T, want an RSA-2048 public key", k.Key)
	}
	if k.Use != "sig" || len(k.Certificates) != 1 {
		t.Errorf("use = %q with %d certificates, want sig with 1", k.Use, len(k.Certificates))
	}
	if got := base64.RawURLEncoding.EncodeToString(k.CertificateThumbprintSHA1); got != k.KeyID {
		t.Errorf("x5t = %q, want the kid %q", got, k.KeyID)
	}
}

// TestConcurrentRequests runs token requests for many tenants in parallel while the
// model changes, for the race detector.
func TestConcurrentRequests(t *testing.T) {
	const (
		tenants   = 8
		perTenant = 25
	)
	f := newFixture(t)
	ids := make([]string, tenants)
	for i := range ids {
		ids[i] = fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		f.emu.Grant(ids[i], clientID, xdrAPI, "Incident.Read.All")
	}

	var wg sync.WaitGroup
	statuses := make(chan int, tenants*perTenant)
	for _, id := range ids {
		for range perTenant {
			wg.Go(func() {
				resp, err := f.srv.Client().PostForm(f.srv.URL+v2Path(id), creds("scope", xdrScope))
				if err != nil {
					t.Error(err)
					return
				}
				_ = resp.Body.Close()
				statuses <- resp.StatusCode
			})
		}
	}
	// Change the model concurrently, without touching what the requests above need.
	wg.Go(func() {
		for i := range 50 {
			other := fmt.Sprintf("11111111-0000-4000-8000-%012d", i)
			f.emu.Grant(other, clientID, xdrAPI, "Incident.Read.All")
			f.emu.SetLifetime(other, time.Hour)
			f.emu.InjectFailures(other, entraemu.ServerError())
			f.emu.AddApp(fmt.Sprintf("app-%d", i), entraemu.Secret{Value: "x"})
			f.emu.Revoke(other, clientID)
			_ = f.emu.Requests(other)
		}
	})
	wg.Wait()
	close(statuses)

	for status := range statuses {
		if status != http.StatusOK {
			t.Errorf("status = %d, want 200", status)
		}
	}
	for _, id := range ids {
		if n := f.emu.Requests(id); n != perTenant {
			t.Errorf("Requests(%s) = %d, want %d", id, n, perTenant)
		}
	}
	if n := f.emu.TotalRequests(); n != tenants*perTenant {
		t.Errorf("TotalRequests = %d, want %d", n, tenants*perTenant)
	}
}

// BenchmarkTokenRequests measures token requests spread over 10,000 tenants, without
// the network.
func BenchmarkTokenRequests(b *testing.B) {
	const tenants = 10000
	emu, err := entraemu.New(entraemu.Options{})
	if err != nil {
		b.Fatal(err)
	}
	emu.AddApp(clientID, entraemu.Secret{Value: secret})
	ids := make([]string, tenants)
	for i := range ids {
		ids[i] = fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		emu.Grant(ids[i], clientID, xdrAPI, "Incident.Read.All")
	}
	body := creds("scope", xdrScope).Encode()

	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			req := httptest.NewRequest(http.MethodPost, v2Path(ids[i%tenants]), strings.NewReader(body))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			rec := httptest.NewRecorder()
			emu.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				b.Errorf("status = %d: %s", rec.Code, rec.Body) // Fatal is for the benchmark goroutine only
				return
			}
		}
	})
}
