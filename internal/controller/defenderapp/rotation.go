package defenderapp

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/conditions"
	"github.com/tenantcreds/defender-tenant-operator/internal/credential"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

// Keys of the next certificate in the managed Secret while a rotation runs.
const (
	SecretKeyNextCertificate = "next.crt"
	SecretKeyNextKey         = "next.key"
)

// rotationContinueAfter is how soon the next step runs after one was persisted:
// at once, but through a new reconcile, so that the step's status is written
// first.
const rotationContinueAfter = time.Second

// clockSkewAllowance backdates a generated certificate's notBefore, for Entra
// ID replicas and clients whose clocks run a little behind.
const clockSkewAllowance = 5 * time.Minute

// rotationOutcome is what a reconcile's rotation step leaves for the status.
type rotationOutcome struct {
	// Status is the next status.rotation; nil until the first key is registered.
	Status *v1alpha1.RotationStatus
	// KeyID is status.certificate.keyID, when known.
	KeyID string
	// NotRegistered, when set, is the CertificateNotRegistered message.
	NotRegistered string
	// Failure is the RotationFailed problem of a step that failed, nil otherwise.
	Failure *conditions.Problem
	// Rotated: a promotion happened in this reconcile; FailedNow: a step failed
	// in it (not a failure shown again while its backoff runs).
	Rotated   bool
	FailedNow bool
	// RequeueAfter is when the rotation needs the app again; zero: on events.
	RequeueAfter time.Duration
}

// rotationMemory is what the process remembers of each app's rotation between
// reconciles, and forgets on restart: when the current certificate was last
// tried in the home tenant, the failures in a row with the backoff they set, and
// the last addKey. It is keyed by the app's name, so that an app deleted
// without this process seeing it (no finalizer holds it) is forgotten on the
// reconcile that finds it gone; an app created again under the same name starts
// afresh, but for when a key was last generated.
type rotationMemory struct {
	mu   sync.Mutex
	apps map[types.NamespacedName]*rotationState
}

type rotationState struct {
	// uid is the app the state is about.
	uid                   types.UID
	lastRegistrationCheck time.Time
	lastKeyGenerated      time.Time
	// added is the next certificate this process's addKey registered, and the
	// keyId Graph returned, until its promotion (see addOrRecord).
	added struct{ thumbprint, keyID string }
	// keyAddedAt is when that addKey answered; replicationChecks counts the
	// checks of the key since.
	keyAddedAt        time.Time
	replicationChecks int
	failures          int
	retryAt           time.Time
	// problem is the last failure, shown until the step is retried.
	problem *conditions.Problem
}

func (m *rotationMemory) get(app client.Object) rotationState {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.apps[client.ObjectKeyFromObject(app)]
	switch {
	case !ok:
		return rotationState{}
	case s.uid != app.GetUID():
		return rotationState{uid: app.GetUID(), lastKeyGenerated: s.lastKeyGenerated}
	}
	return *s
}

func (m *rotationMemory) update(app client.Object, f func(*rotationState)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.apps == nil {
		m.apps = map[types.NamespacedName]*rotationState{}
	}
	key := client.ObjectKeyFromObject(app)
	s, ok := m.apps[key]
	switch {
	case !ok:
		s = &rotationState{uid: app.GetUID()}
		m.apps[key] = s
	case s.uid != app.GetUID():
		*s = rotationState{uid: app.GetUID(), lastKeyGenerated: s.lastKeyGenerated}
	}
	f(s)
}

func (m *rotationMemory) forget(name types.NamespacedName) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.apps, name)
}

// parseTLS parses a certificate and key pair of the Secret, nil when either is
// absent or unusable.
func parseTLS(secret *corev1.Secret, certKey, keyKey string) *entra.Certificate {
	crt, key := secret.Data[certKey], secret.Data[keyKey]
	if len(crt) == 0 || len(key) == 0 {
		return nil
	}
	c, err := entra.ParseCertificate(crt, key)
	if err != nil {
		return nil
	}
	return c
}

// rotate observes the managed certificate, decides one step, acts on it and
// returns what the status must show. It may replace in.Credential: with the
// Secret it created, or the certificate it promoted.
func (r *Reconciler) rotate(ctx context.Context, app v1alpha1.App, in *appStatusInput, prev v1alpha1.AppStatus) (*rotationOutcome, error) {
	params := rotationParamsOf(*app.AppSpec())
	if params == nil {
		r.rotations.forget(client.ObjectKeyFromObject(app))
		return nil, nil
	}
	source, ok := in.Credential.Source.(credential.Certificate)
	if !ok {
		return nil, nil
	}
	if r.APIReader == nil || r.Entra == nil || r.Graph == nil {
		return nil, errors.New("the app controller was set up without what managed rotation needs (APIReader, Entra, Graph)")
	}
	secret := &corev1.Secret{}
	err := r.APIReader.Get(ctx, source.Secret, secret)
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("reading the certificate Secret %s: %w", source.Secret, err)
	}
	f := rotationFacts{Now: in.Now, Params: *params, SecretFound: err == nil, Prev: prev}
	if f.SecretFound {
		f.Current = parseTLS(secret, corev1.TLSCertKey, corev1.TLSPrivateKeyKey)
		f.Next = parseTLS(secret, SecretKeyNextCertificate, SecretKeyNextKey)
		// The operator never leaves the certificate in use in next.* (a promotion
		// removes next.* in the same update): a copy put there by hand is no next
		// certificate, and is never added, recorded or retired as one.
		if f.Next != nil && f.Current != nil && strings.EqualFold(f.Next.SHA1Thumbprint(), f.Current.SHA1Thumbprint()) {
			f.Next = nil
		}
	}
	mem := r.rotations.get(app)
	f.LastRegistrationCheck, f.RetryAt, f.LastKeyGenerated = mem.lastRegistrationCheck, mem.retryAt, mem.lastKeyGenerated
	if f.Next != nil && strings.EqualFold(mem.added.thumbprint, f.Next.SHA1Thumbprint()) {
		f.AddedKeyID = mem.added.keyID
	}
	f.KeyAddedAt = keyAddedAt(f, mem)

	out := &rotationOutcome{Status: prev.Rotation.DeepCopy()}
	if f.Current != nil && prev.Certificate != nil && strings.EqualFold(prev.Certificate.SHA1Thumbprint, f.Current.SHA1Thumbprint()) {
		out.KeyID = prev.Certificate.KeyID
	}
	a := rotationAct{r: r, ctx: ctx, app: app, params: *params, facts: f, secret: secret, source: source, in: in, out: out}
	d := decideRotation(f)
	switch d.Step {
	case stepWait:
		out.RequeueAfter = d.Wait
		if f.Current != nil && !registered(f) {
			out.NotRegistered = a.notRegisteredMessage(prevNotRegistered(prev))
		}
		if f.Now.Before(mem.retryAt) {
			out.Failure = mem.problem
		}
		return out, nil
	case stepCreateSecret:
		return out, a.createSecret()
	case stepCheckRegistration:
		return out, a.checkRegistration()
	case stepGenerateNext:
		return out, a.succeeded(a.generateNext())
	case stepAddKey:
		return out, a.succeeded(a.addKey())
	case stepRecordAddKey:
		a.recordAddKey(f.AddedKeyID)
		return out, nil
	case stepCheckNext:
		return out, a.succeeded(a.checkNextAndPromote())
	case stepRecordPromotion:
		a.recordPromotion(f.Current)
		return out, nil
	case stepRemoveKey:
		return out, a.succeeded(a.removeKey())
	case stepSettleIdle:
		out.Status.Phase, out.Status.PreviousKeyID = v1alpha1.RotationIdle, ""
		out.RequeueAfter = rotationStart(f).Sub(f.Now)
		return out, nil
	}
	return out, nil
}

// prevNotRegistered is the CertificateNotRegistered message the app showed, so
// that waiting for the next check keeps what the last one found.
func prevNotRegistered(prev v1alpha1.AppStatus) string {
	for _, c := range prev.Conditions {
		if c.Type == v1alpha1.ConditionReady && c.Reason == v1alpha1.ReasonCertificateNotRegistered {
			return c.Message
		}
	}
	return ""
}

// rotationAct is one reconcile's rotation step: I/O only, its decisions made.
type rotationAct struct {
	r      *Reconciler
	ctx    context.Context
	app    v1alpha1.App
	params rotationParams
	facts  rotationFacts
	secret *corev1.Secret
	source credential.Certificate
	in     *appStatusInput
	out    *rotationOutcome
}

// replicationPending: Entra ID does not accept the key addKey registered yet,
// within replicationGrace; the rotation waits, and nothing failed.
type replicationPending struct{}

func (replicationPending) Error() string {
	return "the new key has not reached every Entra ID replica yet"
}

// stepFailure is a failed step: what failed, and whether a person must act.
type stepFailure struct {
	step        string
	err         error
	needsPerson bool
}

func (e *stepFailure) Error() string { return e.step + ": " + e.err.Error() }

// succeeded records the step's outcome in the memory: a failure sets the slow
// backoff and the RotationFailed problem; a success clears both. The step's
// error is not returned to controller-runtime, whose fast backoff would defeat
// the slow one; API errors other than refusals are.
func (a *rotationAct) succeeded(err error) error {
	if errors.Is(err, replicationPending{}) {
		a.r.rotations.update(a.app, func(s *rotationState) {
			s.replicationChecks++
			a.out.RequeueAfter = replicationRetryAfter(s.replicationChecks)
			s.retryAt, s.problem = a.facts.Now.Add(a.out.RequeueAfter), nil
		})
		return nil
	}
	var failed *stepFailure
	if !errors.As(err, &failed) {
		if err == nil {
			a.r.rotations.update(a.app, func(s *rotationState) {
				s.failures, s.retryAt, s.problem, s.replicationChecks = 0, time.Time{}, nil, 0
			})
		}
		return err
	}
	var wait time.Duration
	problem := &conditions.Problem{Reason: v1alpha1.ReasonRotationFailed, Stalled: failed.needsPerson}
	a.r.rotations.update(a.app, func(s *rotationState) {
		s.failures++
		wait = rotationRetryAfter(s.failures)
		s.retryAt = a.facts.Now.Add(wait)
		problem.Message = fmt.Sprintf("Rotating the certificate (SHA-1 thumbprint %s) failed at %s: %s The current certificate stays in use; the step is retried in %s.",
			a.facts.Current.SHA1Thumbprint(), failed.step, sentence(failed.err.Error()), wait)
		s.problem = problem
	})
	a.out.Failure, a.out.FailedNow = problem, true
	a.out.RequeueAfter = wait
	return nil
}

// sentence ends text with a full stop.
func sentence(text string) string {
	text = strings.TrimSpace(text)
	if strings.HasSuffix(text, ".") {
		return text
	}
	return text + "."
}

// keyGenerated records that a key pair is being generated for the app, whether
// or not the step then succeeds: the next one waits keyGenerationInterval.
func (a *rotationAct) keyGenerated() {
	now := a.facts.Now
	a.r.rotations.update(a.app, func(s *rotationState) { s.lastKeyGenerated = now })
}

// createSecret generates the first key and creates the managed Secret. The
// certificate cannot be registered yet, so no token request is made for it now.
func (a *rotationAct) createSecret() error {
	now := a.facts.Now
	a.keyGenerated()
	cert, certPEM, keyPEM, err := entra.GenerateCertificate(a.commonName(), now.Add(-clockSkewAllowance), now.Add(a.params.Validity))
	if err != nil {
		return err
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: a.source.Secret.Name, Namespace: a.source.Secret.Namespace,
			Labels: map[string]string{v1alpha1.LabelManagedBy: v1alpha1.ManagedByValue, v1alpha1.LabelManagedCertificate: "true"},
		},
		Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM},
	}
	if err := a.r.Create(a.ctx, secret); err != nil {
		// Someone created it meanwhile (AlreadyExists): the next reconcile adopts it.
		return fmt.Errorf("creating the certificate Secret %s: %w", a.source.Secret, err)
	}
	a.in.Credential = credential.Credential{State: credential.Usable, Source: a.source, Certificate: cert, Version: string(secret.UID) + "/" + secret.ResourceVersion}
	a.facts.Current = cert
	a.r.rotations.update(a.app, func(s *rotationState) { s.lastRegistrationCheck = now })
	a.out.NotRegistered = a.notRegisteredMessage("")
	a.out.RequeueAfter = registrationCheckInterval
	return nil
}

// commonName names the generated certificates after the app, so that a person
// looking at the app registration's certificates knows where each comes from.
func (a *rotationAct) commonName() string {
	name := a.app.GetName()
	if ns := a.app.GetNamespace(); ns != "" {
		name = ns + "/" + name
	}
	return "defender-tenant-operator " + name
}

// homeTenantToken requests a Graph token in the home tenant with cert: the
// check that Entra ID accepts cert, and the bearer token of addKey and removeKey.
func (a *rotationAct) homeTenantToken(cert *entra.Certificate) (entra.Token, error) {
	cloud := a.app.AppSpec().CloudOrDefault()
	return a.r.Entra.RequestToken(a.ctx, entra.Request{
		AuthorityHost: a.r.Authorities.Host(cloud),
		TenantID:      a.params.HomeTenantID,
		ClientID:      a.app.AppSpec().ClientID,
		Credential:    cert,
		Resource:      entra.GraphResource(cloud),
	})
}

// checkRegistration tries the current certificate in the home tenant: accepted,
// it is registered and its rotation is scheduled; refused, the app shows how to
// upload it.
func (a *rotationAct) checkRegistration() error {
	now := a.facts.Now
	a.r.rotations.update(a.app, func(s *rotationState) { s.lastRegistrationCheck = now })
	_, err := a.homeTenantToken(a.facts.Current)
	if err != nil {
		var failure *entra.Failure
		if !errors.As(err, &failure) {
			return err
		}
		a.out.NotRegistered = a.notRegisteredMessage(failure.Message)
		a.out.RequeueAfter = registrationCheckInterval
		return nil
	}
	a.out.Status = &v1alpha1.RotationStatus{Phase: v1alpha1.RotationIdle, NextRotationTime: conditions.TimeOrNil(rotationStart(a.facts))}
	a.out.RequeueAfter = rotationStart(a.facts).Sub(now)
	return nil
}

// notRegisteredMessage says which certificate to upload and how; entraSaid is
// Entra ID's answer to the last check (built from its error code and
// description, which never echo a credential), or an earlier message to keep.
func (a *rotationAct) notRegisteredMessage(entraSaid string) string {
	if strings.HasPrefix(entraSaid, "The certificate the operator") {
		return entraSaid
	}
	kind := "defenderapp"
	where := " -n " + a.app.GetNamespace()
	if a.app.GetNamespace() == "" {
		kind, where = "clusterdefenderapp", ""
	}
	msg := fmt.Sprintf("The certificate the operator holds for this app (SHA-1 thumbprint %s, in status.certificate.pem) is not accepted by Entra ID in home tenant %s yet",
		a.facts.Current.SHA1Thumbprint(), a.params.HomeTenantID)
	if entraSaid != "" {
		msg += " (" + strings.TrimSuffix(entraSaid, ".") + ")"
	}
	return msg + fmt.Sprintf(". Register it once on the app registration: kubectl get %s %s%s -o jsonpath='{.status.certificate.pem}' > cert.pem && az ad app credential reset --id %s --cert @cert.pem --append. It is checked again at most once a minute.",
		kind, a.app.GetName(), where, a.app.AppSpec().ClientID)
}

// generateNext is step 1: the next key and certificate, persisted in the Secret
// before anything is registered, so that a restart adds this key and no other.
func (a *rotationAct) generateNext() error {
	now := a.facts.Now
	a.keyGenerated()
	next, certPEM, keyPEM, err := entra.GenerateCertificate(a.commonName(), now.Add(-clockSkewAllowance), now.Add(a.params.Validity))
	if err != nil {
		return err
	}
	updated := a.secret.DeepCopy()
	updated.Data[SecretKeyNextCertificate], updated.Data[SecretKeyNextKey] = certPEM, keyPEM
	if err := a.r.Update(a.ctx, updated); err != nil {
		return secretWriteFailure("storing the next certificate in the Secret", err)
	}
	a.out.Status.Phase = v1alpha1.RotationKeyGenerated
	a.out.Status.PendingThumbprint = next.SHA1Thumbprint()
	a.out.Status.PendingKeyID = ""
	a.out.RequeueAfter = rotationContinueAfter
	return nil
}

// secretWriteFailure: a refused write (RBAC, the admission policy, an
// unlabelled Secret the policy keeps the operator from) needs a person; any
// other API error is returned for controller-runtime to retry.
func secretWriteFailure(step string, err error) error {
	if apierrors.IsForbidden(err) || apierrors.IsInvalid(err) {
		return &stepFailure{step: step, err: fmt.Errorf("the API server refused the write (%s); a Secret created by hand needs the labels %s=%s and %s=true",
			apierrors.ReasonForError(err), v1alpha1.LabelManagedBy, v1alpha1.ManagedByValue, v1alpha1.LabelManagedCertificate), needsPerson: true}
	}
	return err
}

// graphRequest is a key call about the app, with a Graph token from proving.
func (a *rotationAct) graphRequest(step string, proving *entra.Certificate) (entra.KeyRequest, error) {
	token, err := a.homeTenantToken(proving)
	if err != nil {
		var failure *entra.Failure
		if errors.As(err, &failure) {
			return entra.KeyRequest{}, &stepFailure{step: step, err: fmt.Errorf("no Graph token in the home tenant: %s", failure.Message), needsPerson: v1alpha1.Stalls(failure.Reason)}
		}
		return entra.KeyRequest{}, err
	}
	return entra.KeyRequest{
		GraphHost:   a.r.GraphHosts.Host(a.app.AppSpec().CloudOrDefault()),
		ObjectID:    a.params.ObjectID,
		AccessToken: token.AccessToken,
		Proving:     proving,
	}, nil
}

func graphFailure(step string, err error) error {
	var gerr *entra.GraphError
	if errors.As(err, &gerr) {
		return &stepFailure{step: step, err: gerr, needsPerson: gerr.NeedsPerson()}
	}
	return &stepFailure{step: step, err: err}
}

// addKey is step 2: the next certificate registered through Graph, proved by
// the current key.
func (a *rotationAct) addKey() error {
	const step = "addKey"
	req, err := a.graphRequest(step, a.facts.Current)
	if err != nil {
		return err
	}
	keyID, err := a.r.Graph.AddKey(a.ctx, req, a.facts.Next)
	if err != nil {
		return graphFailure(step, err)
	}
	// Remembered before the status write, which may fail: a retry then records
	// this keyId rather than adding the same certificate a second time.
	now, thumbprint := a.facts.Now, a.facts.Next.SHA1Thumbprint()
	a.r.rotations.update(a.app, func(s *rotationState) {
		s.added.thumbprint, s.added.keyID, s.keyAddedAt, s.replicationChecks = thumbprint, keyID, now, 0
	})
	a.recordAddKey(keyID)
	return nil
}

// recordAddKey is the status of a next certificate registered with keyID.
func (a *rotationAct) recordAddKey(keyID string) {
	a.out.Status.Phase = v1alpha1.RotationKeyAdded
	a.out.Status.PendingThumbprint = a.facts.Next.SHA1Thumbprint()
	a.out.Status.PendingKeyID = keyID
	a.out.RequeueAfter = rotationContinueAfter
}

// aadstsKeyNotFound is Entra ID's answer to an assertion signed by a key the app
// registration does not (yet, on the replica asked) list.
const aadstsKeyNotFound = 700027

// checkNextAndPromote is steps 3 and 4: once Entra ID accepts the next
// certificate in the home tenant, it replaces the current one in a single
// Secret update, which every tenant of the app sees as a credential change.
func (a *rotationAct) checkNextAndPromote() error {
	const step = "the check of the new certificate"
	next := a.facts.Next
	if next == nil {
		return &stepFailure{step: step, err: fmt.Errorf("the Secret lost %s or %s after the key was added", SecretKeyNextCertificate, SecretKeyNextKey), needsPerson: true}
	}
	if pending := a.facts.Prev.Rotation.PendingThumbprint; !strings.EqualFold(next.SHA1Thumbprint(), pending) {
		return &stepFailure{step: step, err: fmt.Errorf("%s no longer holds the certificate that was added (SHA-1 thumbprint %s); it was changed by hand: put that certificate and its key back, or remove %s and %s to start the rotation again",
			SecretKeyNextCertificate, pending, SecretKeyNextCertificate, SecretKeyNextKey), needsPerson: true}
	}
	if _, err := a.homeTenantToken(next); err != nil {
		var failure *entra.Failure
		if errors.As(err, &failure) {
			// Entra ID replicates new keys with a delay: until then this is
			// AADSTS700027, waited for within replicationGrace and a failure
			// after it. Its usual message asks a person to upload the
			// certificate, which addKey has done, so it is not repeated here.
			if slices.Contains(failure.AADSTS, aadstsKeyNotFound) {
				if !replicationGraceOver(a.facts) {
					return replicationPending{}
				}
				return &stepFailure{step: step, err: fmt.Errorf("the new certificate is still not accepted by Entra ID (AADSTS700027) %s after it was added: a key added to the app registration reaches every Entra ID replica after a delay, usually minutes. "+
					"If this lasts for hours, check on the app registration that the new certificate is listed", replicationGraceOf(a.params))}
			}
			return &stepFailure{step: step, err: fmt.Errorf("the new certificate is not accepted by Entra ID yet: %s", failure.Message)}
		}
		return err
	}
	promoted := a.secret.DeepCopy()
	promoted.Data[corev1.TLSCertKey] = promoted.Data[SecretKeyNextCertificate]
	promoted.Data[corev1.TLSPrivateKeyKey] = promoted.Data[SecretKeyNextKey]
	delete(promoted.Data, SecretKeyNextCertificate)
	delete(promoted.Data, SecretKeyNextKey)
	if err := a.r.Update(a.ctx, promoted); err != nil {
		return secretWriteFailure("promoting the new certificate", err)
	}
	a.in.Credential = credential.Credential{State: credential.Usable, Source: a.source, Certificate: next, Version: string(promoted.UID) + "/" + promoted.ResourceVersion}
	a.out.Rotated = true
	a.recordPromotion(next)
	return nil
}

// keyAddedAt is when the pending key was added, as far as the process knows:
// its own addKey's answer, or, after a restart, when the pending certificate
// was generated (its notBefore, which generation backdates), which came before
// addKey. A restart therefore never lengthens the replication grace.
func keyAddedAt(f rotationFacts, mem rotationState) time.Time {
	r := f.Prev.Rotation
	if r == nil || r.Phase != v1alpha1.RotationKeyAdded || f.Next == nil || !strings.EqualFold(f.Next.SHA1Thumbprint(), r.PendingThumbprint) {
		return time.Time{}
	}
	if strings.EqualFold(mem.added.thumbprint, r.PendingThumbprint) && !mem.keyAddedAt.IsZero() {
		return mem.keyAddedAt
	}
	return f.Next.NotBefore().Add(clockSkewAllowance)
}

// recordPromotion is the status of a promoted certificate: the pending keyId
// becomes the current one, the replaced one waits for removal.
func (a *rotationAct) recordPromotion(current *entra.Certificate) {
	s := a.out.Status
	previous := ""
	if c := a.facts.Prev.Certificate; c != nil {
		previous = c.KeyID
	}
	// Never the key being promoted, whatever Graph answered addKey with.
	if strings.EqualFold(previous, s.PendingKeyID) {
		previous = ""
	}
	a.r.rotations.update(a.app, func(m *rotationState) { m.added.thumbprint, m.added.keyID, m.keyAddedAt = "", "", time.Time{} })
	a.out.KeyID = s.PendingKeyID
	s.Phase = v1alpha1.RotationPromoted
	s.PreviousKeyID = previous
	s.PendingKeyID, s.PendingThumbprint = "", ""
	s.LastRotationTime = conditions.TimeOrNil(a.facts.Now.Truncate(time.Second))
	start := current.NotAfter().Add(-a.params.RenewBefore)
	s.NextRotationTime = conditions.TimeOrNil(start)
	a.out.RequeueAfter = a.params.RetireAfter
}

// removeKey is step 5: the replaced key leaves the app registration, proved by
// the current key. A key already gone (404) is as good as removed.
func (a *rotationAct) removeKey() error {
	const step = "removeKey"
	req, err := a.graphRequest(step, a.facts.Current)
	if err != nil {
		return err
	}
	keyID := a.facts.Prev.Rotation.PreviousKeyID
	if err := a.r.Graph.RemoveKey(a.ctx, req, keyID); err != nil {
		var gerr *entra.GraphError
		if !errors.As(err, &gerr) || gerr.Status != 404 || gerr.Code == "Request_ResourceNotFound" && strings.Contains(gerr.Message, a.params.ObjectID) {
			return graphFailure(step, err)
		}
	}
	a.out.Status.Phase, a.out.Status.PreviousKeyID = v1alpha1.RotationIdle, ""
	a.out.RequeueAfter = rotationStart(a.facts).Sub(a.facts.Now)
	return nil
}
