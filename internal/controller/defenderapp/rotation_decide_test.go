package defenderapp

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

func TestDecideRotation(t *testing.T) {
	t0 := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	generate := func(notAfter time.Time) *entra.Certificate {
		c, _, _, err := entra.GenerateCertificate("decide", t0.Add(-time.Hour), notAfter)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	current := generate(t0.Add(90 * 24 * time.Hour))
	next := generate(t0.Add(120 * 24 * time.Hour))
	params := rotationParams{Validity: 2160 * time.Hour, RenewBefore: 720 * time.Hour, RetireAfter: 24 * time.Hour}
	start := current.NotAfter().Add(-720 * time.Hour)
	certificateStatus := &v1alpha1.CertificateStatus{SHA1Thumbprint: current.SHA1Thumbprint()}
	status := func(r *v1alpha1.RotationStatus) v1alpha1.AppStatus {
		return v1alpha1.AppStatus{Certificate: certificateStatus, Rotation: r}
	}
	promotedAt := metav1.NewTime(t0)

	tests := []struct {
		name  string
		facts rotationFacts
		want  rotationDecision
	}{
		{"no Secret: the first key", rotationFacts{Now: t0}, rotationDecision{Step: stepCreateSecret}},
		{"no Secret again 20s after a key was generated: wait the rest of the minute", rotationFacts{Now: t0, LastKeyGenerated: t0.Add(-20 * time.Second)},
			rotationDecision{Step: stepWait, Wait: 40 * time.Second}},
		{"no Secret a minute after a key was generated: the first key", rotationFacts{Now: t0, LastKeyGenerated: t0.Add(-time.Minute)},
			rotationDecision{Step: stepCreateSecret}},
		{"an unusable Secret: nothing", rotationFacts{Now: t0, SecretFound: true}, rotationDecision{Step: stepWait}},
		{"never checked: check", rotationFacts{Now: t0, SecretFound: true, Current: current}, rotationDecision{Step: stepCheckRegistration}},
		{"checked 30s ago: wait the rest of the minute", rotationFacts{Now: t0, SecretFound: true, Current: current, LastRegistrationCheck: t0.Add(-30 * time.Second)},
			rotationDecision{Step: stepWait, Wait: 30 * time.Second}},
		{"checked a minute ago: check", rotationFacts{Now: t0, SecretFound: true, Current: current, LastRegistrationCheck: t0.Add(-time.Minute)},
			rotationDecision{Step: stepCheckRegistration}},
		{"registered, another certificate in the Secret: check it", rotationFacts{Now: t0, SecretFound: true, Current: next,
			Prev: status(&v1alpha1.RotationStatus{Phase: v1alpha1.RotationIdle})}, rotationDecision{Step: stepCheckRegistration}},
		{"idle before the start: wait for it", rotationFacts{Now: t0, Params: params, SecretFound: true, Current: current,
			Prev: status(&v1alpha1.RotationStatus{Phase: v1alpha1.RotationIdle})}, rotationDecision{Step: stepWait, Wait: start.Sub(t0)}},
		{"idle at the start: generate", rotationFacts{Now: start, Params: params, SecretFound: true, Current: current,
			Prev: status(&v1alpha1.RotationStatus{Phase: v1alpha1.RotationIdle})}, rotationDecision{Step: stepGenerateNext}},
		{"idle at the start with next.* already stored: add that key", rotationFacts{Now: start, Params: params, SecretFound: true, Current: current, Next: next,
			Prev: status(&v1alpha1.RotationStatus{Phase: v1alpha1.RotationIdle})}, rotationDecision{Step: stepAddKey}},
		{"in backoff: wait", rotationFacts{Now: start, Params: params, SecretFound: true, Current: current, Next: next, RetryAt: start.Add(time.Minute),
			Prev: status(&v1alpha1.RotationStatus{Phase: v1alpha1.RotationKeyGenerated})}, rotationDecision{Step: stepWait, Wait: time.Minute}},
		{"key generated: add it", rotationFacts{Now: start, Params: params, SecretFound: true, Current: current, Next: next,
			Prev: status(&v1alpha1.RotationStatus{Phase: v1alpha1.RotationKeyGenerated})}, rotationDecision{Step: stepAddKey}},
		{"key generated and added by this process, its status write lost: record the keyId", rotationFacts{Now: start, Params: params, SecretFound: true, Current: current, Next: next,
			AddedKeyID: "k2", Prev: status(&v1alpha1.RotationStatus{Phase: v1alpha1.RotationKeyGenerated})}, rotationDecision{Step: stepRecordAddKey}},
		{"idle with next.* added by this process, both status writes lost: record the keyId", rotationFacts{Now: start, Params: params, SecretFound: true, Current: current, Next: next,
			AddedKeyID: "k2", Prev: status(&v1alpha1.RotationStatus{Phase: v1alpha1.RotationIdle})}, rotationDecision{Step: stepRecordAddKey}},
		{"key generated but next.* lost: generate again", rotationFacts{Now: start, Params: params, SecretFound: true, Current: current,
			Prev: status(&v1alpha1.RotationStatus{Phase: v1alpha1.RotationKeyGenerated})}, rotationDecision{Step: stepGenerateNext}},
		{"next.* lost again 10s after it was generated: wait the rest of the minute", rotationFacts{Now: start, Params: params, SecretFound: true, Current: current,
			LastKeyGenerated: start.Add(-10 * time.Second), Prev: status(&v1alpha1.RotationStatus{Phase: v1alpha1.RotationKeyGenerated})},
			rotationDecision{Step: stepWait, Wait: 50 * time.Second}},
		{"idle at the start 10s after a key was generated: wait the rest of the minute", rotationFacts{Now: start, Params: params, SecretFound: true, Current: current,
			LastKeyGenerated: start.Add(-10 * time.Second), Prev: status(&v1alpha1.RotationStatus{Phase: v1alpha1.RotationIdle})},
			rotationDecision{Step: stepWait, Wait: 50 * time.Second}},
		{"key added: check it", rotationFacts{Now: start, Params: params, SecretFound: true, Current: current, Next: next,
			Prev: status(&v1alpha1.RotationStatus{Phase: v1alpha1.RotationKeyAdded, PendingThumbprint: next.SHA1Thumbprint()})}, rotationDecision{Step: stepCheckNext}},
		{"key added and already in tls.*: record the promotion", rotationFacts{Now: start, Params: params, SecretFound: true, Current: next,
			Prev: status(&v1alpha1.RotationStatus{Phase: v1alpha1.RotationKeyAdded, PendingThumbprint: next.SHA1Thumbprint()})}, rotationDecision{Step: stepRecordPromotion}},
		{"promoted from a key of unknown keyId: idle", rotationFacts{Now: t0, Params: params, SecretFound: true, Current: current,
			Prev: status(&v1alpha1.RotationStatus{Phase: v1alpha1.RotationPromoted, LastRotationTime: &promotedAt})}, rotationDecision{Step: stepSettleIdle}},
		{"promoted with the key in use as the previous one: idle, nothing removed", rotationFacts{Now: t0.Add(48 * time.Hour), Params: params, SecretFound: true, Current: current,
			Prev: v1alpha1.AppStatus{Certificate: &v1alpha1.CertificateStatus{SHA1Thumbprint: current.SHA1Thumbprint(), KeyID: "k"},
				Rotation: &v1alpha1.RotationStatus{Phase: v1alpha1.RotationPromoted, PreviousKeyID: "K", LastRotationTime: &promotedAt}}},
			rotationDecision{Step: stepSettleIdle}},
		{"promoted, within retireAfter: wait", rotationFacts{Now: t0.Add(time.Hour), Params: params, SecretFound: true, Current: current,
			Prev: status(&v1alpha1.RotationStatus{Phase: v1alpha1.RotationPromoted, PreviousKeyID: "k", LastRotationTime: &promotedAt})},
			rotationDecision{Step: stepWait, Wait: 23 * time.Hour}},
		{"promoted, retireAfter passed: remove the previous key", rotationFacts{Now: t0.Add(24 * time.Hour), Params: params, SecretFound: true, Current: current,
			Prev: status(&v1alpha1.RotationStatus{Phase: v1alpha1.RotationPromoted, PreviousKeyID: "k", LastRotationTime: &promotedAt})},
			rotationDecision{Step: stepRemoveKey}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := decideRotation(tt.facts); got != tt.want {
				t.Errorf("decideRotation = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestRotationParamsDefaults(t *testing.T) {
	spec := v1alpha1.AppSpec{Credential: v1alpha1.AppCredential{Certificate: &v1alpha1.CertificateCredential{
		Rotation: &v1alpha1.CertificateRotation{ApplicationObjectID: "o", HomeTenantID: "h", Validity: &metav1.Duration{Duration: 48 * time.Hour}},
	}}}
	got := rotationParamsOf(spec)
	want := rotationParams{ObjectID: "o", HomeTenantID: "h", Validity: 48 * time.Hour, RenewBefore: 16 * time.Hour, RetireAfter: 24 * time.Hour}
	if got == nil || *got != want {
		t.Fatalf("rotationParamsOf = %+v, want %+v (renewBefore a third of validity)", got, want)
	}
	if rotationParamsOf(v1alpha1.AppSpec{Credential: v1alpha1.AppCredential{Certificate: &v1alpha1.CertificateCredential{}}}) != nil {
		t.Error("parameters without rotation")
	}
}

func TestRotationRetryAfterGrowsToAnHour(t *testing.T) {
	for n, want := range map[int]time.Duration{1: time.Minute, 2: 2 * time.Minute, 6: 32 * time.Minute, 7: time.Hour, 50: time.Hour} {
		if got := rotationRetryAfter(n); got != want {
			t.Errorf("rotationRetryAfter(%d) = %s, want %s", n, got, want)
		}
	}
}

func TestReplicationGraceOver(t *testing.T) {
	added := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	long := rotationParams{RenewBefore: 720 * time.Hour}
	short := rotationParams{RenewBefore: time.Hour}
	for _, tc := range []struct {
		name   string
		params rotationParams
		since  time.Duration
		want   bool
	}{
		{"just added", long, 0, false},
		{"29m59s after addKey", long, 29*time.Minute + 59*time.Second, false},
		{"30m after addKey", long, 30 * time.Minute, true},
		{"renewBefore 1h: 14m59s", short, 14*time.Minute + 59*time.Second, false},
		{"renewBefore 1h: a quarter of it", short, 15 * time.Minute, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := rotationFacts{Now: added.Add(tc.since), Params: tc.params, KeyAddedAt: added}
			if got := replicationGraceOver(f); got != tc.want {
				t.Errorf("replicationGraceOver = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestReplicationRetryAfterGrowsToFiveMinutes(t *testing.T) {
	for n, want := range map[int]time.Duration{1: 10 * time.Second, 2: 20 * time.Second, 5: 160 * time.Second, 6: 5 * time.Minute, 40: 5 * time.Minute} {
		if got := replicationRetryAfter(n); got != want {
			t.Errorf("replicationRetryAfter(%d) = %s, want %s", n, got, want)
		}
	}
}

// The rotation chain in docs/design.md is the one the controller runs, in order.
func TestDesignDocListsTheRotationChain(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "design.md"))
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^ *\\| R\\d+ \\| `(\\w+)` \\|")
	rows := row.FindAllStringSubmatch(string(doc), -1)
	documented := make([]string, 0, len(rows))
	for _, m := range rows {
		documented = append(documented, m[1])
	}
	code := make([]string, 0, len(rotationChecks))
	for _, c := range rotationChecks {
		code = append(code, c.name)
	}
	if !slices.Equal(documented, code) {
		t.Errorf("docs/design.md lists the rotation checks\n  %v\nthe chain runs\n  %v", documented, code)
	}
}
