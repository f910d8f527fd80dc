package credential

import (
	"testing"

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
