package tokencheck

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

const (
	tenant      = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	client      = "0c3a2b1e-5d4f-4a6b-8c7d-9e0f1a2b3c4d"
	otherTenant = "11111111-2222-3333-4444-555555555555"
	otherClient = "66666666-7777-8888-9999-000000000000"
)

var (
	now = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	iat = now.Add(-5 * time.Minute)
	exp = now.Add(time.Hour)

	want = Expectation{TenantID: tenant, ClientID: client, RequiredRoles: []string{"Machine.Read.All", "AdvancedQuery.Read.All"}}
)

// testKey is generated once per test binary: RSA key generation is slow and
// the tests only need some key Entra-like tokens can be signed with.
var testKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// signPayload signs payload verbatim with RS256, so tests can build claim
// sets that a map could not express (null, wrong types, non-objects).
func signPayload(tb testing.TB, alg jose.SignatureAlgorithm, key any, payload string) string {
	tb.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		tb.Fatal(err)
	}
	obj, err := signer.Sign([]byte(payload))
	if err != nil {
		tb.Fatal(err)
	}
	s, err := obj.CompactSerialize()
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// token signs claims with RS256. Entries set to nil are removed, so cases can
// start from a base claim set and drop claims.
func token(tb testing.TB, claims map[string]any) string {
	tb.Helper()
	for k, v := range claims {
		if v == nil {
			delete(claims, k)
		}
	}
	b, err := json.Marshal(claims)
	if err != nil {
		tb.Fatal(err)
	}
	return signPayload(tb, jose.RS256, testKey(), string(b))
}

// v1 is an Entra v1 token as the Defender API gets it, with overrides.
func v1(tb testing.TB, overrides map[string]any) string {
	c := map[string]any{
		"aud": "https://api.securitycenter.microsoft.com", "iss": "https://sts.windows.net/" + tenant + "/",
		"ver": "1.0", "tid": tenant, "appid": client, "appidacr": "1", "oid": "a-b-c", "sub": "a-b-c",
		"iat": iat.Unix(), "nbf": iat.Unix(), "exp": exp.Unix(),
		"roles": []string{"Machine.Read.All", "AdvancedQuery.Read.All"},
	}
	for k, v := range overrides {
		c[k] = v
	}
	return token(tb, c)
}

// v2 is an Entra v2 token, with overrides.
func v2(tb testing.TB, overrides map[string]any) string {
	c := map[string]any{
		"aud": "fc780465-2017-40d4-a0c5-307022471b92", "iss": "https://login.microsoftonline.com/" + tenant + "/v2.0",
		"ver": "2.0", "tid": tenant, "azp": client, "azpacr": "1", "oid": "a-b-c", "sub": "a-b-c",
		"iat": iat.Unix(), "nbf": iat.Unix(), "exp": exp.Unix(),
		"roles": []string{"Machine.Read.All", "AdvancedQuery.Read.All"},
	}
	for k, v := range overrides {
		c[k] = v
	}
	return token(tb, c)
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

type checkCase struct {
	name    string
	raw     string
	want    Expectation
	verdict Verdict
	err     error  // nil or ErrInvalid
	errHas  string // the error message must say which check failed
}

func checkCases(tb testing.TB) []checkCase {
	tb.Helper()
	allRoles := []string{"AdvancedQuery.Read.All", "Machine.Read.All"}
	ok := Verdict{Version: "1.0", IssuedAt: iat, ExpiresAt: exp, GrantedRoles: allRoles}
	okV2 := ok
	okV2.Version = "2.0"
	noVer := ok
	noVer.Version = ""

	jweEnc, err := jose.NewEncrypter(jose.A128GCM, jose.Recipient{Algorithm: jose.RSA_OAEP, Key: &testKey().PublicKey}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	jwe, err := jwt.Encrypted(jweEnc).Claims(map[string]any{"tid": tenant, "appid": client, "exp": exp.Unix()}).Serialize()
	if err != nil {
		tb.Fatal(err)
	}
	validPayload := `{"ver":"1.0","tid":"` + tenant + `","appid":"` + client + `","exp":` + jsonInt(exp.Unix())
	odd := func(rest string) string { return signPayload(tb, jose.RS256, testKey(), validPayload+rest+"}") }
	valid := v1(tb, nil)
	parts := strings.Split(valid, ".")

	return []checkCase{
		{name: "valid v1 token checks appid", raw: valid, want: want, verdict: ok},
		{name: "valid v2 token checks azp", raw: v2(tb, nil), want: want, verdict: okV2},
		{name: "valid token without iat has zero IssuedAt", raw: v1(tb, map[string]any{"iat": nil}), want: want,
			verdict: Verdict{Version: "1.0", ExpiresAt: exp, GrantedRoles: allRoles}},
		{name: "valid token with no required roles", raw: valid, want: Expectation{TenantID: tenant, ClientID: client}, verdict: ok},
		{name: "exp exactly a day ahead is accepted", raw: v1(tb, map[string]any{"exp": now.Add(MaxLifetime).Unix()}), want: want,
			verdict: Verdict{Version: "1.0", IssuedAt: ok.IssuedAt, ExpiresAt: now.Add(MaxLifetime).UTC(), GrantedRoles: allRoles}},

		{name: "tenant mismatch", raw: v1(tb, map[string]any{"tid": otherTenant}), want: want, err: ErrInvalid, errHas: "tid claim does not match expected tenant \"" + tenant + "\""},
		{name: "tid missing", raw: v1(tb, map[string]any{"tid": nil}), want: want, err: ErrInvalid, errHas: "no tid claim"},
		{name: "tid empty string", raw: v1(tb, map[string]any{"tid": ""}), want: Expectation{ClientID: client}, err: ErrInvalid, errHas: "no tid claim"},
		{name: "tid not a string", raw: v1(tb, map[string]any{"tid": 42}), want: want, err: ErrInvalid, errHas: "claims are not a JSON object"},
		{name: "client mismatch v1 appid", raw: v1(tb, map[string]any{"appid": otherClient}), want: want, err: ErrInvalid, errHas: "appid claim does not match expected client \"" + client + "\""},
		{name: "client mismatch v2 azp", raw: v2(tb, map[string]any{"azp": otherClient}), want: want, err: ErrInvalid, errHas: "azp claim does not match expected client \"" + client + "\""},
		{name: "v1 token ignores matching azp and requires appid", raw: v1(tb, map[string]any{"appid": nil, "azp": client}), want: want, err: ErrInvalid, errHas: "no appid claim"},
		{name: "v2 token ignores matching appid and requires azp", raw: v2(tb, map[string]any{"azp": otherClient, "appid": client}), want: want, err: ErrInvalid, errHas: "azp claim does not match"},
		{name: "no ver with matching appid", raw: v1(tb, map[string]any{"ver": nil}), want: want, verdict: noVer},
		{name: "no ver with matching azp", raw: v2(tb, map[string]any{"ver": nil}), want: want, verdict: noVer},
		{name: "no ver with neither appid nor azp", raw: v1(tb, map[string]any{"ver": nil, "appid": nil}), want: want, err: ErrInvalid, errHas: "neither appid nor azp claim"},
		{name: "no ver with matching appid but other azp", raw: v1(tb, map[string]any{"ver": nil, "azp": otherClient}), want: want, err: ErrInvalid, errHas: "azp claim does not match"},
		{name: "unsupported ver", raw: v1(tb, map[string]any{"ver": "3.0"}), want: want, err: ErrInvalid, errHas: "unsupported ver claim"},
		{name: "ver not a string", raw: v1(tb, map[string]any{"ver": 1}), want: want, err: ErrInvalid, errHas: "claims are not a JSON object"},
		{name: "upper-case GUIDs in token match lower-case expectation", raw: v1(tb, map[string]any{"tid": strings.ToUpper(tenant), "appid": strings.ToUpper(client)}), want: want, verdict: ok},
		{name: "lower-case GUIDs in token match upper-case expectation", raw: valid,
			want: Expectation{TenantID: strings.ToUpper(tenant), ClientID: strings.ToUpper(client), RequiredRoles: want.RequiredRoles}, verdict: ok},

		{name: "expired exp equals now", raw: v1(tb, map[string]any{"exp": now.Unix()}), want: want, err: ErrInvalid, errHas: "exp is not after 2026-11-21T12:00:00Z"},
		{name: "expired exp before now", raw: v1(tb, map[string]any{"exp": now.Add(-time.Second).Unix()}), want: want, err: ErrInvalid, errHas: "exp is not after 2026-11-21T12:00:00Z"},
		{name: "exp more than a day ahead", raw: v1(tb, map[string]any{"exp": now.Add(MaxLifetime + time.Second).Unix()}), want: want, err: ErrInvalid, errHas: "exp is more than 24h0m0s after 2026-11-21T12:00:00Z"},
		{name: "exp one second after now is valid", raw: v1(tb, map[string]any{"exp": now.Add(time.Second).Unix()}), want: want,
			verdict: Verdict{Version: "1.0", IssuedAt: iat, ExpiresAt: now.Add(time.Second), GrantedRoles: allRoles}},
		{name: "missing exp", raw: v1(tb, map[string]any{"exp": nil}), want: want, err: ErrInvalid, errHas: "no exp claim"},
		{name: "exp as string", raw: v1(tb, map[string]any{"exp": "1795000000"}), want: want, err: ErrInvalid, errHas: "claims are not a JSON object"},
		{name: "exp absurdly large", raw: v1(tb, map[string]any{"exp": 1e300}), want: want, err: ErrInvalid, errHas: "claims are not a JSON object"},
		{name: "tenant mismatch reported before expiry", raw: v1(tb, map[string]any{"tid": otherTenant, "exp": 1}), want: want, err: ErrInvalid, errHas: "tid claim does not match"},

		{name: "not a JWT garbage", raw: "definitelyNotATokenAtAll", want: want, err: ErrInvalid, errHas: "not a signed JWT"},
		{name: "not a JWT garbage with punctuation", raw: "definitely not a token!", want: want, err: ErrInvalid, errHas: "characters other than base64url"},
		{name: "not a JWT empty", raw: "", want: want, err: ErrInvalid, errHas: "not a signed JWT"},
		{name: "not a JWT two segments", raw: parts[0] + "." + parts[1], want: want, err: ErrInvalid, errHas: "not a signed JWT"},
		{name: "not a JWT four segments", raw: valid + "." + parts[2], want: want, err: ErrInvalid, errHas: "not a signed JWT"},
		{name: "not a JWT encrypted JWE", raw: jwe, want: want, err: ErrInvalid, errHas: "not a signed JWT"},
		{name: "not a JWT unsigned alg none", raw: b64(`{"alg":"none","typ":"JWT"}`) + "." + parts[1] + ".", want: want, err: ErrInvalid, errHas: "not a signed JWT"},
		{name: "not a JWT HMAC signed", raw: signPayload(tb, jose.HS256, []byte(strings.Repeat("k", 32)), validPayload+"}"), want: want, err: ErrInvalid, errHas: "not a signed JWT"},
		{name: "not a JWT JSON serialization", raw: `{"payload":"` + parts[1] + `","protected":"` + parts[0] + `","signature":"` + parts[2] + `"}`, want: want, err: ErrInvalid, errHas: "characters other than base64url"},
		{name: "not a JWT trailing newline", raw: valid + "\n", want: want, err: ErrInvalid, errHas: "characters other than base64url"},
		{name: "not a JWT carriage return inside a segment", raw: parts[0] + "." + parts[1][:10] + "\r\n" + parts[1][10:] + "." + parts[2], want: want, err: ErrInvalid, errHas: "characters other than base64url"},
		{name: "not a JWT leading space", raw: " " + valid, want: want, err: ErrInvalid, errHas: "characters other than base64url"},
		{name: "not a JWT payload not base64", raw: parts[0] + ".x." + parts[2], want: want, err: ErrInvalid, errHas: "not a signed JWT"},
		{name: "claims not a JSON object", raw: signPayload(tb, jose.RS256, testKey(), `["tid"]`), want: want, err: ErrInvalid, errHas: "claims are not a JSON object"},
		{name: "claims not JSON", raw: signPayload(tb, jose.RS256, testKey(), `tid=`+tenant), want: want, err: ErrInvalid, errHas: "claims are not a JSON object"},
		{name: "duplicate tid claim", raw: odd(`,"tid":"` + otherTenant + `"`), want: want, err: ErrInvalid, errHas: "claims are not a JSON object"},

		{name: "roles absent lists every required role as missing", raw: v1(tb, map[string]any{"roles": nil}),
			want:    Expectation{TenantID: tenant, ClientID: client, RequiredRoles: []string{"Machine.Read.All", "AdvancedQuery.Read.All", "Machine.Read.All"}},
			verdict: Verdict{Version: "1.0", IssuedAt: iat, ExpiresAt: exp, MissingRoles: allRoles}},
		{name: "roles empty array is no roles", raw: v1(tb, map[string]any{"roles": []string{}}), want: want,
			verdict: Verdict{Version: "1.0", IssuedAt: iat, ExpiresAt: exp, MissingRoles: allRoles}},
		{name: "partial roles", raw: v1(tb, map[string]any{"roles": []string{"Machine.Read.All", "Ti.Read.All"}}), want: want,
			verdict: Verdict{Version: "1.0", IssuedAt: iat, ExpiresAt: exp, GrantedRoles: []string{"Machine.Read.All", "Ti.Read.All"}, MissingRoles: []string{"AdvancedQuery.Read.All"}}},
		{name: "roles compare case-sensitively", raw: v1(tb, map[string]any{"roles": []string{"machine.read.all", "AdvancedQuery.Read.All"}}), want: want,
			verdict: Verdict{Version: "1.0", IssuedAt: iat, ExpiresAt: exp, GrantedRoles: []string{"AdvancedQuery.Read.All", "machine.read.all"}, MissingRoles: []string{"Machine.Read.All"}}},
		{name: "duplicate roles and duplicate required roles", raw: v1(tb, map[string]any{"roles": []string{"b", "a", "b", "a"}}),
			want:    Expectation{TenantID: tenant, ClientID: client, RequiredRoles: []string{"c", "a", "c", "d"}},
			verdict: Verdict{Version: "1.0", IssuedAt: iat, ExpiresAt: exp, GrantedRoles: []string{"a", "b"}, MissingRoles: []string{"c", "d"}}},
		{name: "roles as a string is invalid", raw: v1(tb, map[string]any{"roles": "Machine.Read.All"}), want: want, err: ErrInvalid, errHas: "roles claim is not an array of strings"},
		{name: "roles as numbers is invalid", raw: v1(tb, map[string]any{"roles": []int{1, 2}}), want: want, err: ErrInvalid, errHas: "roles claim is not an array of strings"},
		{name: "roles mixing strings and numbers is invalid", raw: odd(`,"roles":["Machine.Read.All",1]`), want: want, err: ErrInvalid, errHas: "roles claim is not an array of strings"},
		{name: "roles null is invalid", raw: odd(`,"roles":null`), want: want, err: ErrInvalid, errHas: "roles claim is not an array of strings"},
		{name: "roles object is invalid", raw: odd(`,"roles":{"a":"b"}`), want: want, err: ErrInvalid, errHas: "roles claim is not an array of strings"},

		{name: "oversized input", raw: v1(tb, map[string]any{"pad": strings.Repeat("x", MaxTokenBytes)}), want: want, err: ErrInvalid, errHas: "more than the 65536 allowed"},
		{name: "oversized garbage", raw: strings.Repeat("a", MaxTokenBytes+1), want: want, err: ErrInvalid, errHas: "token is 65537 bytes, more than the 65536 allowed"},
	}
}

func jsonInt(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func TestCheck(t *testing.T) {
	for _, tc := range checkCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Check(tc.raw, tc.want, now)
			switch {
			case tc.err == nil && err != nil:
				t.Fatalf("Check() error = %v, want nil", err)
			case tc.err != nil && !errors.Is(err, tc.err):
				t.Fatalf("Check() error = %v, want errors.Is(%v)", err, tc.err)
			}
			if tc.err != nil && tc.errHas == "" {
				t.Fatal("failing case must set errHas")
			}
			if tc.err != nil && !strings.Contains(err.Error(), tc.errHas) {
				t.Errorf("Check() error = %q, want it to contain %q", err, tc.errHas)
			}
			if tc.err != nil && !reflect.DeepEqual(got, Verdict{}) {
				t.Errorf("Check() verdict = %+v with error, want zero Verdict", got)
			}
			assertVerdict(t, got, tc.verdict)
		})
	}
}

func assertVerdict(t *testing.T, got, want Verdict) {
	t.Helper()
	if got.Version != want.Version {
		t.Errorf("Version = %q, want %q", got.Version, want.Version)
	}
	if !got.IssuedAt.Equal(want.IssuedAt) || got.IssuedAt.Location() != want.IssuedAt.Location() {
		t.Errorf("IssuedAt = %v, want %v", got.IssuedAt, want.IssuedAt)
	}
	if !got.ExpiresAt.Equal(want.ExpiresAt) || got.ExpiresAt.Location() != want.ExpiresAt.Location() {
		t.Errorf("ExpiresAt = %v, want %v", got.ExpiresAt, want.ExpiresAt)
	}
	// DeepEqual on purpose: nil and empty slices must not be confused.
	if !reflect.DeepEqual(got.GrantedRoles, want.GrantedRoles) {
		t.Errorf("GrantedRoles = %#v, want %#v", got.GrantedRoles, want.GrantedRoles)
	}
	if !reflect.DeepEqual(got.MissingRoles, want.MissingRoles) {
		t.Errorf("MissingRoles = %#v, want %#v", got.MissingRoles, want.MissingRoles)
	}
}

// TestCheckErrorsDoNotLeakToken guards the promise that error messages are safe
// to put in status, events and logs: no raw token, no segment of it, and no
// decoded claim value that differs from the expectation.
func TestCheckErrorsDoNotLeakToken(t *testing.T) {
	failing := 0
	for _, tc := range checkCases(t) {
		if tc.err == nil {
			continue
		}
		failing++
		t.Run(tc.name, func(t *testing.T) {
			_, err := Check(tc.raw, tc.want, now)
			if err == nil {
				t.Fatal("Check() succeeded, want error")
			}
			msg := err.Error()
			if tc.raw != "" && strings.Contains(msg, tc.raw) {
				t.Errorf("error message contains the raw token: %q", msg)
			}
			parts := strings.Split(tc.raw, ".")
			if sig := parts[len(parts)-1]; len(parts) > 1 && sig != "" && strings.Contains(msg, sig) {
				t.Errorf("error message contains the signature segment: %q", msg)
			}
			for _, p := range parts {
				if len(p) >= 16 && strings.Contains(msg, p) {
					t.Errorf("error message contains a token segment: %q", msg)
				}
			}
			for _, foreign := range []string{otherTenant, otherClient, strings.ToUpper(otherTenant)} {
				if strings.Contains(msg, foreign) {
					t.Errorf("error message contains the token's claim value %q: %q", foreign, msg)
				}
			}
		})
	}
	if failing == 0 {
		t.Fatal("no failing cases in the table")
	}
}

func FuzzCheck(f *testing.F) {
	for _, tc := range checkCases(f) {
		f.Add(tc.raw)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := Check(raw, want, now)
		if !checkFuzzOutcome(t, v, err, raw, now) {
			return
		}
		for _, roles := range [][]string{v.GrantedRoles, v.MissingRoles} {
			if roles != nil && len(roles) == 0 {
				t.Fatalf("empty non-nil roles slice in %+v", v)
			}
			for i := 1; i < len(roles); i++ {
				if roles[i-1] >= roles[i] {
					t.Fatalf("roles not sorted and de-duplicated: %q", roles)
				}
			}
		}
	})
}

// FuzzClaims fuzzes the claim set rather than the whole token: mutations of a
// signed token almost always break its base64 first, so FuzzCheck rarely
// reaches claim decoding. Check never verifies signatures, so a fixed fake
// signature is enough to get the payload through parsing.
func FuzzClaims(f *testing.F) {
	base := `{"ver":"1.0","tid":"` + tenant + `","appid":"` + client + `","exp":` + jsonInt(exp.Unix())
	for _, rest := range []string{
		`}`, `,"roles":["Machine.Read.All","AdvancedQuery.Read.All"]}`, `,"roles":"Machine.Read.All"}`,
		`,"roles":[1,2]}`, `,"roles":null}`, `,"roles":[]}`, `,"iat":1.5e9,"azp":"x"}`, `,"tid":"dup"}`,
	} {
		f.Add(base + rest)
	}
	f.Add(`{"ver":"2.0","tid":"` + tenant + `","azp":"` + client + `","exp":1e300}`)
	f.Add(`[]`)
	header := b64(`{"alg":"RS256","typ":"JWT"}`)
	f.Fuzz(func(t *testing.T, payload string) {
		raw := header + "." + b64(payload) + "." + b64("not a real signature")
		v, err := Check(raw, want, now)
		checkFuzzOutcome(t, v, err, payload, now)
	})
}

// checkFuzzOutcome holds for every fuzz input: a rejection matches ErrInvalid and does
// not quote the input (the part of it named secret); an acceptance is unexpired and
// expires within MaxLifetime. It reports whether the token was accepted.
func checkFuzzOutcome(t *testing.T, v Verdict, err error, secret string, now time.Time) bool {
	t.Helper()
	if err != nil {
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("error %v does not match ErrInvalid", err)
		}
		// Short inputs can coincide with fixed message text ("token", a GUID
		// fragment), so only longer ones prove a leak. A longer input that is itself
		// a fragment of our fixed messages would be a false positive; the fuzzer has
		// no dictionary to find one.
		if len(secret) > 16 && strings.Contains(err.Error(), secret) {
			t.Fatalf("error message contains the input: %q", err.Error())
		}
		return false
	}
	if !v.ExpiresAt.After(now) || v.ExpiresAt.After(now.Add(MaxLifetime)) {
		t.Fatalf("accepted token with ExpiresAt %v outside (%v, %v]", v.ExpiresAt, now, now.Add(MaxLifetime))
	}
	return true
}
