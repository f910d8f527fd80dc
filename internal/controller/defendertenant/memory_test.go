package defendertenant

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// TestOwnStatusWritesTheCacheHasNotShown: two status writes in a row, the cache
// showing neither. Whichever of the versions they replaced or the first produced
// the cache hands over, observe sees the second write; once the cache shows the
// second write's version, memory lets go.
func TestOwnStatusWritesTheCacheHasNotShown(t *testing.T) {
	key := types.NamespacedName{Namespace: "customer", Name: "contoso"}
	first := v1alpha1.DefenderTenantStatus{FailedAttempts: 1}
	second := v1alpha1.DefenderTenantStatus{FailedAttempts: 2, TokenSecretUID: "uid-2"}
	var r Reconciler
	w, had := r.written.get(key)
	r.written.set(key, writtenOver(w, had, "100", "101", first))
	w, had = r.written.get(key)
	r.written.set(key, writtenOver(w, had, "100", "102", second))

	cached := func(rv string) *v1alpha1.DefenderTenant {
		return &v1alpha1.DefenderTenant{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, ResourceVersion: rv}}
	}
	for _, rv := range []string{"100", "101"} {
		tenant := cached(rv)
		r.observeOwnStatusWrite(tenant)
		if tenant.Status.FailedAttempts != 2 || tenant.Status.TokenSecretUID != "uid-2" {
			t.Errorf("cache at %s: observed %+v, want the second write", rv, tenant.Status)
		}
	}

	r.forgetCaughtUpWrite(event.UpdateEvent{ObjectOld: cached("101"), ObjectNew: cached("102")})
	if _, held := r.written.get(key); held {
		t.Error("the written status is still held after the watch showed the version it produced")
	}
	tenant := cached("102")
	tenant.Status = v1alpha1.DefenderTenantStatus{FailedAttempts: 2}
	r.observeOwnStatusWrite(tenant)
	if tenant.Status.FailedAttempts != 2 {
		t.Errorf("observed %+v, want the cached status", tenant.Status)
	}
}
