package entraemu

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

// newGUID returns a random GUID, for trace and correlation IDs.
func newGUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails, see crypto/rand.Read
	return formatGUID(b)
}

// stableGUID derives a GUID from parts, so that an object Entra would create once,
// such as an app's service principal in a tenant, keeps its ID across tokens.
func stableGUID(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return formatGUID([16]byte(sum[:16]))
}

// formatGUID formats b as a version 4 GUID, like the object IDs Entra assigns.
func formatGUID(b [16]byte) string {
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// randomString returns n random bytes in base64url, for opaque claims (aio, rh, uti).
func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails, see crypto/rand.Read
	return base64.RawURLEncoding.EncodeToString(b)
}

// isGUID reports whether s is a GUID, as the operator checks one.
func isGUID(s string) bool { return entra.IsGUID(s) }

// isDomainName reports whether s is a DNS name, such as contoso.onmicrosoft.com,
// which Entra accepts in place of a tenant ID; letter case does not matter.
func isDomainName(s string) bool { return entra.IsDomainName(strings.ToLower(s)) }
