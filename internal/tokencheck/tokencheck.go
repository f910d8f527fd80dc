// Package tokencheck decides whether an access token minted by Microsoft Entra ID
// may be published in a token Secret.
//
// Microsoft documents access tokens as opaque to clients. This package decodes
// the claims anyway, only to catch configuration mistakes before a workload
// does (a token for the wrong tenant or app, an expired token, or consent that
// granted no application roles, which Entra reports by silently omitting the
// roles claim rather than by failing the request).
//
// It does NOT verify signatures and must never be used to authenticate or
// authorize anything: a token that passes Check is merely well-formed and
// self-consistent with the expectation, not genuine.
package tokencheck

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/json"
	"github.com/go-jose/go-jose/v4/jwt"
)

// MaxTokenBytes is the largest raw token Check will parse. Entra tokens are a
// few KiB; anything far larger is a mistake or hostile, and is rejected before
// any decoding work is done.
const MaxTokenBytes = 64 << 10

// ErrInvalid is matched (errors.Is) by every error Check returns.
var ErrInvalid = errors.New("invalid token")

// Token versions as found in the ver claim.
const (
	versionV1 = "1.0"
	versionV2 = "2.0"
)

// algorithms are the signature algorithms accepted in the header. Entra signs
// with RS256; the others are accepted so a change on Microsoft's side does not
// stop publishing. "none" and HMAC are deliberately absent.
var algorithms = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.ES256}

// Expectation is what the token must match.
type Expectation struct {
	// TenantID must equal the tid claim (GUIDs compare case-insensitively).
	TenantID string
	// ClientID must equal appid (v1 tokens, ver "1.0") or azp (v2 tokens,
	// ver "2.0"). If ver is missing, every one of appid/azp that is present
	// must equal it, and at least one must be present.
	ClientID string
	// RequiredRoles must all be in the roles claim (exact, case-sensitive).
	// A token without a roles claim has no roles.
	RequiredRoles []string
}

// Verdict is what a structurally valid token says about itself.
type Verdict struct {
	// Version is the ver claim, "1.0" or "2.0" (empty if absent).
	Version string
	// IssuedAt is the iat claim in UTC (zero if absent).
	IssuedAt time.Time
	// ExpiresAt is the exp claim in UTC (always present in a valid token).
	ExpiresAt time.Time
	// GrantedRoles is the roles claim, sorted and de-duplicated; nil when none.
	GrantedRoles []string
	// MissingRoles are the required roles not granted, sorted and
	// de-duplicated; nil when none.
	MissingRoles []string
}

// claims are the only claims Check looks at. go-jose's json package matches
// member names case-sensitively and rejects duplicate members, so a token
// cannot smuggle a second "tid" or a "TID" past the checks. A claim of the
// wrong JSON type (e.g. a numeric tid) fails decoding and makes the token
// invalid.
type claims struct {
	TenantID string           `json:"tid"`
	AppID    string           `json:"appid"`
	AZP      string           `json:"azp"`
	Version  string           `json:"ver"`
	Expiry   *jwt.NumericDate `json:"exp"`
	IssuedAt *jwt.NumericDate `json:"iat"`
	Roles    roles            `json:"roles"`
}

// roles decodes the roles claim without failing the whole claim set on an odd
// shape, so Check can say precisely that roles was malformed.
type roles struct {
	names     []string
	malformed bool // present but not an array of strings (null included)
}

// UnmarshalJSON implements json.Unmarshaler.
func (r *roles) UnmarshalJSON(b []byte) error {
	var names []string
	err := json.Unmarshal(b, &names)
	// A JSON null decodes without error into a nil slice; an empty array
	// decodes into a non-nil one. Only the latter is an array.
	*r = roles{names: names, malformed: err != nil || names == nil}
	return nil
}

// MaxLifetime bounds how far ahead a token's exp may be. Entra ID issues app-only
// tokens for 60 to 90 minutes. Signatures are not verified, so without a bound a
// token with a far-future exp would be kept, and never refreshed, for as long as it
// claims to be valid.
const MaxLifetime = 24 * time.Hour

// Check decodes raw and compares it with want at time now.
//
// A token that is not a signed JWT, or whose tid, appid/azp or exp is wrong,
// yields an error matching ErrInvalid, and a zero Verdict. The message says
// which check failed and what was expected; it never contains the token or
// any part of it (including decoded claim values and errors from the decoder,
// which may quote input), so it is safe for logs, events and status.
//
// Missing roles are not an error: they are reported in Verdict.MissingRoles so
// the caller can name them.
func Check(raw string, want Expectation, now time.Time) (Verdict, error) {
	// Cheap bound before any base64 or JSON work.
	if len(raw) > MaxTokenBytes {
		return Verdict{}, invalid("token is %d bytes, more than the %d allowed", len(raw), MaxTokenBytes)
	}

	// Go's base64 decoder silently skips \r and \n, so go-jose would accept a
	// token with a stray newline, which then cannot be sent in an HTTP
	// Authorization header. A compact JWS is only base64url and dots.
	if strings.ContainsFunc(raw, notCompactJWS) {
		return Verdict{}, invalid("contains characters other than base64url and '.'")
	}

	// Decoder errors are dropped on purpose: they can quote fragments of the
	// input, which would leak token material into status and logs.
	tok, err := jwt.ParseSigned(raw, algorithms)
	if err != nil {
		return Verdict{}, invalid("not a signed JWT in compact serialization (expected alg RS256, RS384, RS512, PS256 or ES256)")
	}
	var c claims
	if err := tok.UnsafeClaimsWithoutVerification(&c); err != nil {
		return Verdict{}, invalid("claims are not a JSON object with string tid/appid/azp/ver and numeric exp/iat")
	}
	if c.Roles.malformed {
		return Verdict{}, invalid("roles claim is not an array of strings")
	}

	if c.TenantID == "" {
		return Verdict{}, invalid("no tid claim (expected tenant %q)", want.TenantID)
	}
	if !strings.EqualFold(c.TenantID, want.TenantID) {
		return Verdict{}, invalid("tid claim does not match expected tenant %q", want.TenantID)
	}
	if err := checkClient(c, want.ClientID); err != nil {
		return Verdict{}, err
	}

	if c.Expiry == nil {
		return Verdict{}, invalid("no exp claim")
	}
	exp := c.Expiry.Time().UTC()
	if !exp.After(now) {
		return Verdict{}, invalid("exp is not after %s", now.UTC().Format(time.RFC3339))
	}
	if !now.IsZero() && exp.After(now.Add(MaxLifetime)) {
		return Verdict{}, invalid("exp is more than %s after %s", MaxLifetime, now.UTC().Format(time.RFC3339))
	}

	v := Verdict{
		Version:      c.Version,
		ExpiresAt:    exp,
		GrantedRoles: sortedSet(c.Roles.names),
	}
	if c.IssuedAt != nil {
		v.IssuedAt = c.IssuedAt.Time().UTC()
	}
	var missing []string
	for _, r := range want.RequiredRoles {
		if _, found := slices.BinarySearch(v.GrantedRoles, r); !found {
			missing = append(missing, r)
		}
	}
	v.MissingRoles = sortedSet(missing)
	return v, nil
}

// checkClient compares the client ID claim that the token version defines with
// want. Entra puts the client in appid for v1 tokens and in azp for v2 tokens;
// Defender API tokens are v1 even from the v2 endpoint.
func checkClient(c claims, want string) error {
	var candidates []string // claim names that must equal want
	switch c.Version {
	case versionV1:
		candidates = []string{"appid"}
	case versionV2:
		candidates = []string{"azp"}
	case "":
		if c.AppID != "" {
			candidates = append(candidates, "appid")
		}
		if c.AZP != "" {
			candidates = append(candidates, "azp")
		}
		if len(candidates) == 0 {
			return invalid("neither appid nor azp claim (expected client %q)", want)
		}
	default:
		// Do not guess which claim an unknown version carries the client in.
		return invalid("unsupported ver claim (expected %q or %q)", versionV1, versionV2)
	}
	for _, name := range candidates {
		got := c.AppID
		if name == "azp" {
			got = c.AZP
		}
		if got == "" {
			return invalid("no %s claim (expected client %q)", name, want)
		}
		if !strings.EqualFold(got, want) {
			return invalid("%s claim does not match expected client %q", name, want)
		}
	}
	return nil
}

// invalid builds an ErrInvalid error. Callers pass only expectations and
// fixed text, never token content.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// notCompactJWS reports whether r cannot appear in a JWS compact serialization.
func notCompactJWS(r rune) bool {
	switch {
	case 'A' <= r && r <= 'Z', 'a' <= r && r <= 'z', '0' <= r && r <= '9', r == '-', r == '_', r == '.':
		return false
	}
	return true
}

// sortedSet returns s sorted and de-duplicated, or nil if s is empty.
func sortedSet(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}
