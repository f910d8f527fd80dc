package credential

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	fakeclient "sigs.k8s.io/controller-runtime/pkg/client/fake"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func TestCredentialCache(t *testing.T) {
	secret := types.NamespacedName{Namespace: "ns", Name: "app"}
	usable := Credential{State: Usable, clientSecret: "v1"}
	var c Reader
	if _, ok := c.get(secret, "client-secret", "1"); ok {
		t.Fatal("empty cache returned a value")
	}
	c.put(secret, "client-secret", "1", usable)
	c.put(secret, "other", "1", Credential{State: KeyEmpty})
	if got, ok := c.get(secret, "client-secret", "1"); !ok || got != usable {
		t.Errorf("get at the version read = %+v, %v", got, ok)
	}
	if _, ok := c.get(secret, "client-secret", "2"); ok {
		t.Error("a value read at version 1 was returned for version 2")
	}
	c.put(secret, "client-secret", "2", Credential{State: Usable, clientSecret: "v2"})
	if _, ok := c.get(secret, "other", "1"); ok {
		t.Error("a key read at an older version survived a read of a newer one")
	}
	c.forget(secret)
	if c.Holds(secret) {
		t.Error("forget left the Secret's values in memory")
	}
}

// TestReaderTellsEachCallerItsOwnSource: an inline tenant and an app that read
// one Secret are each told where they name its key, whoever read it first.
func TestReaderTellsEachCallerItsOwnSource(t *testing.T) {
	secret := types.NamespacedName{Namespace: "ns", Name: "partner-app"}
	inline := ClientSecret{Secret: secret, Key: "client-secret", KeyField: "spec.clientSecretRef.key"}
	app := ClientSecret{Secret: secret, Key: "client-secret", KeyField: "credential.clientSecret.secretRef.key"}
	stored := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "partner-app", ResourceVersion: "7"}}
	live := fakeclient.NewClientBuilder().WithObjects(stored).Build()
	r := &Reader{APIReader: live, SecretMetadata: live}
	for _, source := range []ClientSecret{inline, app} {
		c, err := r.Read(t.Context(), source)
		if err != nil {
			t.Fatal(err)
		}
		if p := c.Problem("the app", time.Now()); p == nil || !strings.Contains(p.Message, source.KeyField) {
			t.Errorf("read through %s: problem %+v, want one naming %s", source.KeyField, p, source.KeyField)
		}
	}
}

// TestCredentialPrintsNoSecret: whatever formats a credential shows no secret.
func TestCredentialPrintsNoSecret(t *testing.T) {
	const value = "s3cr3t~value.for-tests_0123456789abcdef"
	c := Credential{State: Usable, Source: ClientSecret{Key: "client-secret"}, clientSecret: value}
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		if got := fmt.Sprintf(format, c); strings.Contains(got, value) {
			t.Errorf("%s prints the client secret: %s", format, got)
		}
	}
}

// TestReaderKeepsFewKeysPerSecret: specs that name ever other keys of one Secret
// do not grow memory without bound.
func TestReaderKeepsFewKeysPerSecret(t *testing.T) {
	var r Reader
	secret := types.NamespacedName{Namespace: "ns", Name: "app"}
	for i := range 100 {
		r.put(secret, fmt.Sprintf("key-%d", i), "1", Credential{State: KeyEmpty})
	}
	if n := len(r.entries[secret]); n > maxKeysPerSecret {
		t.Errorf("%d keys of one Secret held, want at most %d", n, maxKeysPerSecret)
	}
}

// TestCredentialNobodyFilledInIsNeverUsable: the zero Credential, or one without a
// Source, reports a problem rather than passing for usable.
func TestCredentialNobodyFilledInIsNeverUsable(t *testing.T) {
	for _, c := range []Credential{{}, {State: Usable}} {
		if p := c.Problem("the app", time.Now()); p == nil || p.Reason != v1alpha1.ReasonCredentialsNotFound {
			t.Errorf("%v: problem %+v, want CredentialsNotFound", c, p)
		}
	}
}
