package defenderapp

import (
	"strings"
	"time"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

// Defaults of spec.credential.certificate.rotation (API.md).
const (
	defaultValidity    = 2160 * time.Hour
	defaultRetireAfter = 24 * time.Hour
)

// registrationCheckInterval: a certificate waiting for its upload is tried in the
// home tenant at most this often (API.md: at most once a minute), so that a
// forgotten upload costs Entra ID one failed sign-in a minute, not one a reconcile.
const registrationCheckInterval = time.Minute

// Backoff of the rotation steps that call Entra ID or Graph and failed, or of
// a new key that Entra ID does not accept yet: the slow backoff, since the
// current certificate stays valid for renewBefore and nothing is urgent.
const (
	rotationRetryFirst = time.Minute
	rotationRetryMax   = time.Hour
)

// Entra ID replicates a key addKey registered to its replicas with a delay
// (ENTRA.md: seconds to minutes; Microsoft states no bound, so the grace is
// this project's choice). Until replicationGrace (or a quarter of renewBefore,
// if shorter) has passed since addKey answered, AADSTS700027 for the new key is
// the rotation at work, not a failure: the key is tried again after
// replicationRetryFirst, doubling up to replicationRetryMax, with no Warning.
// Past the grace it is RotationFailed, retried with the slow backoff.
const (
	replicationRetryFirst = 10 * time.Second
	replicationRetryMax   = 5 * time.Minute
	replicationGrace      = 30 * time.Minute
)

// rotationParams is the app's rotation spec with its defaults applied.
type rotationParams struct {
	ObjectID     string
	HomeTenantID string
	Validity     time.Duration
	RenewBefore  time.Duration
	RetireAfter  time.Duration
}

// rotationParamsOf returns the rotation parameters of a certificate app, nil
// without rotation.
func rotationParamsOf(spec v1alpha1.AppSpec) *rotationParams {
	c := spec.Credential.Certificate
	if c == nil || c.Rotation == nil {
		return nil
	}
	r := c.Rotation
	p := &rotationParams{ObjectID: r.ApplicationObjectID, HomeTenantID: r.HomeTenantID, Validity: defaultValidity, RetireAfter: defaultRetireAfter}
	if r.Validity != nil {
		p.Validity = r.Validity.Duration
	}
	p.RenewBefore = p.Validity / 3
	if r.RenewBefore != nil {
		p.RenewBefore = r.RenewBefore.Duration
	}
	if r.RetireAfter != nil {
		p.RetireAfter = r.RetireAfter.Duration
	}
	return p
}

// rotationFacts is everything a rotation step is decided from: the spec, the
// Secret as read, the persisted status and what this process remembers.
type rotationFacts struct {
	Now    time.Time
	Params rotationParams
	// SecretFound: the certificate Secret exists.
	SecretFound bool
	// Current is tls.crt and tls.key, parsed; nil when absent or unusable.
	Current *entra.Certificate
	// Next is next.crt and next.key, parsed; nil when absent or unusable.
	Next *entra.Certificate
	// Prev is the status as persisted: status.rotation and status.certificate.
	Prev v1alpha1.AppStatus
	// LastRegistrationCheck is when this process last tried Current in the home
	// tenant while it was not known to be registered; zero when never.
	LastRegistrationCheck time.Time
	// RetryAt is when a failed step may be tried again; zero when none failed.
	RetryAt time.Time
	// LastKeyGenerated is when this process last generated a key pair for the
	// app; zero when never.
	LastKeyGenerated time.Time
	// AddedKeyID is the keyId Graph returned to this process's addKey of Next,
	// when the status write that would have recorded it failed; empty otherwise.
	AddedKeyID string
	// KeyAddedAt is when the pending key was added, as far as the process knows
	// (see keyAddedAt); zero unless phase KeyAdded with its certificate in Next.
	KeyAddedAt time.Time
}

// keyGenerationInterval: an app's key pairs are generated at most this often.
// RSA key generation costs the shared workers real CPU, and whoever edits the
// namespace could delete the Secret, or its next.* keys, in a loop.
const keyGenerationInterval = time.Minute

// generateOrWait is step, which generates a key pair, unless one was generated
// for the app within keyGenerationInterval.
func generateOrWait(f rotationFacts, step rotationStep) (rotationDecision, bool) {
	if due := f.LastKeyGenerated.Add(keyGenerationInterval); !f.LastKeyGenerated.IsZero() && f.Now.Before(due) {
		return rotationDecision{Step: stepWait, Wait: due.Sub(f.Now)}, true
	}
	return rotationDecision{Step: step}, true
}

// addOrRecord is step 2 for Next, unless this process already added it and only
// the status write recording that failed.
func addOrRecord(f rotationFacts) rotationDecision {
	if f.AddedKeyID != "" {
		return rotationDecision{Step: stepRecordAddKey}
	}
	return rotationDecision{Step: stepAddKey}
}

// rotationStep is what a reconcile does about the managed certificate.
type rotationStep string

const (
	// stepWait: nothing until Wait has passed (zero: until an event).
	stepWait rotationStep = "Wait"
	// stepCreateSecret: generate the first key and create the Secret.
	stepCreateSecret rotationStep = "CreateSecret"
	// stepCheckRegistration: a token request with the current certificate in the
	// home tenant, which tells whether a person registered it.
	stepCheckRegistration rotationStep = "CheckRegistration"
	// stepGenerateNext (1): the next key and certificate into next.crt, next.key.
	stepGenerateNext rotationStep = "GenerateNext"
	// stepAddKey (2): addKey with the next certificate, proved by the current key.
	stepAddKey rotationStep = "AddKey"
	// stepRecordAddKey: this process's addKey answered but its status write
	// failed: record the keyId it returned, without a second addKey.
	stepRecordAddKey rotationStep = "RecordAddKey"
	// stepCheckNext (3, then 4): a token request with the next certificate,
	// and once it succeeds, tls.* become next.* in one Secret update.
	stepCheckNext rotationStep = "CheckNext"
	// stepRecordPromotion: the Secret was promoted but the status not written
	// (a restart in between): write it, without any call.
	stepRecordPromotion rotationStep = "RecordPromotion"
	// stepRemoveKey (5): removeKey of the replaced key.
	stepRemoveKey rotationStep = "RemoveKey"
	// stepSettleIdle: the rotation is over; status only.
	stepSettleIdle rotationStep = "SettleIdle"
)

type rotationDecision struct {
	Step rotationStep
	// Wait is how long until the app must be looked at again, for stepWait.
	Wait time.Duration
}

// rotationChecks is the decision chain, in order: the first that decides wins.
// It is pure; rotation_decide_test.go tables it.
var rotationChecks = []struct {
	name   string
	decide func(f rotationFacts) (rotationDecision, bool)
}{
	{"SecretMissing", func(f rotationFacts) (rotationDecision, bool) {
		if f.SecretFound {
			return rotationDecision{}, false
		}
		return generateOrWait(f, stepCreateSecret)
	}},
	// An unusable Secret is the credential's problem (InvalidCertificate and
	// the like), reported as for any certificate; nothing is rotated from it.
	{"CurrentUnusable", func(f rotationFacts) (rotationDecision, bool) {
		return rotationDecision{Step: stepWait}, f.Current == nil
	}},
	// A restart between the promoting Secret update and the status write finds
	// the pending certificate in tls.*: record the promotion, call nobody.
	{"PromotedNotRecorded", func(f rotationFacts) (rotationDecision, bool) {
		r := f.Prev.Rotation
		return rotationDecision{Step: stepRecordPromotion}, r != nil && r.Phase == v1alpha1.RotationKeyAdded &&
			r.PendingThumbprint != "" && strings.EqualFold(r.PendingThumbprint, f.Current.SHA1Thumbprint())
	}},
	{"NotRegistered", func(f rotationFacts) (rotationDecision, bool) {
		if registered(f) {
			return rotationDecision{}, false
		}
		if due := f.LastRegistrationCheck.Add(registrationCheckInterval); !f.LastRegistrationCheck.IsZero() && f.Now.Before(due) {
			return rotationDecision{Step: stepWait, Wait: due.Sub(f.Now)}, true
		}
		return rotationDecision{Step: stepCheckRegistration}, true
	}},
	{"Backoff", func(f rotationFacts) (rotationDecision, bool) {
		return rotationDecision{Step: stepWait, Wait: f.RetryAt.Sub(f.Now)}, f.Now.Before(f.RetryAt)
	}},
	{"Idle", func(f rotationFacts) (rotationDecision, bool) {
		if f.Prev.Rotation.Phase != v1alpha1.RotationIdle {
			return rotationDecision{}, false
		}
		if start := rotationStart(f); f.Now.Before(start) {
			return rotationDecision{Step: stepWait, Wait: start.Sub(f.Now)}, true
		}
		if f.Next != nil {
			// Step 1 was persisted in the Secret before a restart lost the status
			// write: the key it made is the one to add, never a second.
			return addOrRecord(f), true
		}
		return generateOrWait(f, stepGenerateNext)
	}},
	{"KeyGenerated", func(f rotationFacts) (rotationDecision, bool) {
		if f.Prev.Rotation.Phase != v1alpha1.RotationKeyGenerated {
			return rotationDecision{}, false
		}
		if f.Next == nil {
			return generateOrWait(f, stepGenerateNext)
		}
		return addOrRecord(f), true
	}},
	{"KeyAdded", func(f rotationFacts) (rotationDecision, bool) {
		if f.Prev.Rotation.Phase != v1alpha1.RotationKeyAdded {
			return rotationDecision{}, false
		}
		// Without next.* the registered key's private half is gone; nothing is
		// promoted, and the failure says so (the check below fails).
		return rotationDecision{Step: stepCheckNext}, true
	}},
	{"Promoted", func(f rotationFacts) (rotationDecision, bool) {
		r := f.Prev.Rotation
		if r.Phase != v1alpha1.RotationPromoted {
			return rotationDecision{}, false
		}
		if r.PreviousKeyID == "" || f.Prev.Certificate != nil && strings.EqualFold(r.PreviousKeyID, f.Prev.Certificate.KeyID) {
			// The replaced key's keyId is unknown (a certificate a person
			// uploaded): it stays registered until it expires. And the key in
			// use is never removed, whatever the status says.
			return rotationDecision{Step: stepSettleIdle}, true
		}
		var promoted time.Time
		if r.LastRotationTime != nil {
			promoted = r.LastRotationTime.Time
		}
		if removeAt := promoted.Add(f.Params.RetireAfter); f.Now.Before(removeAt) {
			return rotationDecision{Step: stepWait, Wait: removeAt.Sub(f.Now)}, true
		}
		return rotationDecision{Step: stepRemoveKey}, true
	}},
}

// decideRotation runs rotationChecks.
func decideRotation(f rotationFacts) rotationDecision {
	for _, c := range rotationChecks {
		if d, ok := c.decide(f); ok {
			return d
		}
	}
	// A phase this version does not know: wait for an event rather than guess.
	return rotationDecision{Step: stepWait}
}

// registered: the status shows the current certificate accepted by Entra ID in
// the home tenant, by a check or by its own promotion.
func registered(f rotationFacts) bool {
	r, c := f.Prev.Rotation, f.Prev.Certificate
	return r != nil && r.Phase != "" && c != nil && strings.EqualFold(c.SHA1Thumbprint, f.Current.SHA1Thumbprint())
}

// rotationStart is when the current certificate's replacement begins.
func rotationStart(f rotationFacts) time.Time {
	return f.Current.NotAfter().Add(-f.Params.RenewBefore)
}

// rotationRetryAfter is the slow backoff after n failures in a row (n >= 1).
func rotationRetryAfter(n int) time.Duration {
	return doubling(rotationRetryFirst, rotationRetryMax, n)
}

// replicationGraceOf is how long a new key is waited for: replicationGrace, or
// a quarter of renewBefore if shorter, so that a short renewBefore still leaves
// time to act before the certificate in use expires.
func replicationGraceOf(p rotationParams) time.Duration {
	return min(replicationGrace, p.RenewBefore/4)
}

// replicationGraceOver: the pending key was added at least its grace ago.
func replicationGraceOver(f rotationFacts) bool {
	return !f.Now.Before(f.KeyAddedAt.Add(replicationGraceOf(f.Params)))
}

// replicationRetryAfter is the wait after the n-th check (n >= 1) of a new key
// Entra ID does not accept yet, within replicationGrace.
func replicationRetryAfter(n int) time.Duration {
	return doubling(replicationRetryFirst, replicationRetryMax, n)
}

// doubling is first doubled n-1 times, at most limit.
func doubling(first, limit time.Duration, n int) time.Duration {
	d := first
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}
