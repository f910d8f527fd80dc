package defendertenant

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/credential"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
	"github.com/tenantcreds/defender-tenant-operator/internal/tokencheck"
)

var decideNow = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

// healthyObservation is a tenant with a usable credential, an allowed resource and
// nothing published: the facts on which decide mints.
func healthyObservation() *observation {
	tenant := newTenant("partner", tenantName)
	tenant.UID, tenant.Generation = "0d6f2a1c-uid", 3
	return &observation{
		now:             decideNow,
		tenant:          tenant,
		resource:        defenderAPI,
		resourceAllowed: true,
		secretName:      "contoso-token",
		credential:      credential.Credential{State: credential.Usable, Source: inlineSecretSource, Version: "uid/1"},
		inputsHash:      "current-inputs",
		failureInputs:   "current-failure-inputs",
	}
}

// tokenMinted is a one-hour token, as Entra issues them, minted `ago` before now.
func tokenMinted(ago time.Duration, inputs string, missing ...string) *token {
	minted := decideNow.Add(-ago)
	return &token{raw: "header.payload.signature", mintedAt: minted, inputsHash: inputs,
		claims: tokencheck.Verdict{ExpiresAt: minted.Add(time.Hour), MissingRoles: missing}}
}

// publishedIntact puts t in the tenant's own token Secret, exactly as the operator writes it.
func publishedIntact(t *token) func(*observation) {
	return func(obs *observation) {
		obs.published = t
		obs.tokenSecret, obs.tokenSecretOwned = desiredTokenSecret(obs, t), true
	}
}

func freshToken(obs *observation) { publishedIntact(tokenMinted(5*time.Minute, "current-inputs"))(obs) }

func handEdited(obs *observation) {
	obs.tokenSecret = obs.tokenSecret.DeepCopy()
	obs.tokenSecret.Data[v1alpha1.TokenSecretKeyTokenType] = []byte("edited")
}

func foreignSecret(obs *observation) {
	t := tokenMinted(0, "x")
	obs.tokenSecret = desiredTokenSecret(obs, t)
	obs.tokenSecret.OwnerReferences = nil
	obs.tokenSecretOwned, obs.published = false, nil
}

// failedAgo records a failure `ago` before now, with the current inputs, after
// `attempts` consecutive failures.
func failedAgo(reason string, ago time.Duration, attempts int32) func(*observation) {
	return func(obs *observation) {
		obs.tenant.Status.FailedAttempts = attempts
		obs.tenant.Status.LastFailure = &v1alpha1.LastFailure{
			Time: metav1.NewTime(decideNow.Add(-ago)), Reason: reason, Message: "earlier failure", InputsHash: obs.failureInputs,
		}
	}
}

func TestDecisionChain(t *testing.T) {
	suspend := func(obs *observation) { obs.tenant.Spec.Suspend = true }
	disallowed := func(obs *observation) { obs.resourceAllowed = false }
	noCredential := func(obs *observation) {
		obs.credential, obs.inputsHash, obs.failureInputs = credential.Credential{State: credential.SecretMissing, Source: inlineSecretSource}, "", "no-credential"
	}
	emptyKey := func(obs *observation) {
		obs.credential, obs.inputsHash = credential.Credential{State: credential.KeyEmpty, Source: inlineSecretSource, Version: "uid/2"}, ""
	}
	implausible := func(obs *observation) {
		obs.credential, obs.inputsHash = credential.Credential{State: credential.Implausible, Source: inlineSecretSource, Version: "uid/3"}, ""
	}
	leftoverFrom := func(t *token, generation int64) func(*observation) {
		return func(obs *observation) { obs.leftover, obs.leftoverGeneration = t, generation }
	}
	leftoverInMemory := leftoverFrom(tokenMinted(time.Minute, "current-inputs"), 3)
	publish := publishedIntact
	clusterApp := &v1alpha1.ClusterDefenderApp{}
	ungranted := func(obs *observation) {
		obs.app = appFacts{kind: v1alpha1.AppKindClusterDefenderApp, name: "partner", object: clusterApp, clientID: testClientID}
	}
	mintedUnderFormerApp := func(obs *observation) { obs.otherAppTokens = []string{"ClusterDefenderApp/former"} }
	appMissing := func(obs *observation) {
		obs.app = appFacts{kind: v1alpha1.AppKindClusterDefenderApp, name: "partner"}
		obs.credential = credential.Credential{State: credential.NotRead}
	}
	expired := newTestCertificate(t, decideNow.AddDate(-1, 0, 0), decideNow.Add(-time.Second))
	expiredCert, err := entra.ParseCertificate(expired.certPEM, expired.keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	certificateExpired := func(obs *observation) {
		obs.credential = credential.Credential{State: credential.Usable, Source: certificateSource, Certificate: expiredCert, Version: "uid/4"}
	}
	certificateInvalid := func(obs *observation) {
		obs.credential, obs.inputsHash = credential.Credential{State: credential.CertificateInvalid, Source: certificateSource, Detail: "tls.key does not match", Version: "uid/5"}, ""
	}
	noServiceAccount := func(obs *observation) {
		obs.credential, obs.inputsHash = credential.Credential{State: credential.ServiceAccountMissing, Source: workloadIdentitySource}, ""
	}
	serviceAccountNotAllowed := func(obs *observation) {
		obs.credential, obs.inputsHash = credential.Credential{State: credential.ServiceAccountNotAllowed, Source: workloadIdentitySource, Detail: "lacks the label"}, ""
	}

	withTemplate := func(tmpl v1alpha1.SecretTemplate) func(*observation) {
		return func(obs *observation) {
			obs.tenant.Spec.SecretTemplate = &tmpl
			obs.secretTemplate, obs.secretTemplateRefused = checkSecretTemplate(&tmpl, DefaultSecretTemplateAnnotationPrefixes)
		}
	}
	templateUnparsable := withTemplate(v1alpha1.SecretTemplate{Data: map[string]v1alpha1.DataTemplate{"authorization": "Bearer {{ .AccessToken "}})
	templateUnknownField := withTemplate(v1alpha1.SecretTemplate{Data: map[string]v1alpha1.DataTemplate{"authorization": "Bearer {{ .Password }}"}})
	templateCallsAFunction := withTemplate(v1alpha1.SecretTemplate{Data: map[string]v1alpha1.DataTemplate{"authorization": `{{ $a := .AccessToken }}{{ print $a $a }}`}})
	templateChanged := withTemplate(v1alpha1.SecretTemplate{Data: map[string]v1alpha1.DataTemplate{"authorization": "Bearer {{ .AccessToken }}"}})
	annotationNotAllowed := withTemplate(v1alpha1.SecretTemplate{Annotations: map[string]string{"replicator.v1.mittwald.de/replicate-to": "*"}})
	annotationAllowed := withTemplate(v1alpha1.SecretTemplate{Annotations: map[string]string{"reloader.stakater.com/match": "true"}})

	tests := []struct {
		name   string
		facts  []func(*observation)
		check  string
		action action
		reason string // the problem reported; "" for none
	}{
		// Each check on its own, with the contract reason it reports.
		{"nothing published: mint", nil, "Mint", actionMint, ""},
		{"suspended", []func(*observation){suspend}, "Suspended", actionHold, ""},
		{"resource not allowed", []func(*observation){disallowed}, "ResourceNotAllowed", actionHold, v1alpha1.ReasonResourceNotAllowed},
		{"token Secret name taken", []func(*observation){foreignSecret}, "SecretConflict", actionHold, v1alpha1.ReasonSecretConflict},
		{"credential Secret missing", []func(*observation){noCredential}, "CredentialUnusable", actionHold, v1alpha1.ReasonCredentialsNotFound},
		{"credential key empty", []func(*observation){emptyKey}, "CredentialUnusable", actionHold, v1alpha1.ReasonCredentialsNotFound},
		{"credential cannot be a client secret", []func(*observation){implausible}, "CredentialUnusable", actionHold, v1alpha1.ReasonInvalidClientSecret},
		{"fresh token, intact Secret: keep", []func(*observation){freshToken}, "FreshAndCurrent", actionKeep, ""},
		{"fresh token, edited Secret: restore", []func(*observation){freshToken, handEdited}, "FreshAndCurrent", actionRestore, ""},
		{"token due for refresh", []func(*observation){publish(tokenMinted(50*time.Minute, "current-inputs"))}, "Mint", actionMint, ""},
		{"token minted from other inputs (rotation)", []func(*observation){publish(tokenMinted(5*time.Minute, "old-inputs"))}, "Mint", actionMint, ""},
		{"token expired", []func(*observation){publish(tokenMinted(2*time.Hour, "current-inputs"))}, "Mint", actionMint, ""},
		{"token lacks a role now required", []func(*observation){publish(tokenMinted(5*time.Minute, "current-inputs", "Incident.Read.All"))}, "Mint", actionMint, ""},
		{"needs-a-human failure within its backoff", []func(*observation){failedAgo(v1alpha1.ReasonInvalidClientSecret, 30*time.Second, 1)}, "BackingOff", actionHold, v1alpha1.ReasonInvalidClientSecret},
		{"transient failure within its backoff", []func(*observation){failedAgo(v1alpha1.ReasonTokenEndpointUnavailable, 2*time.Second, 1)}, "BackingOff", actionHold, v1alpha1.ReasonTokenEndpointUnavailable},
		{"transient failure after its backoff", []func(*observation){failedAgo(v1alpha1.ReasonTokenEndpointUnavailable, 6*time.Second, 1)}, "Mint", actionMint, ""},
		{"backoff doubles with attempts", []func(*observation){failedAgo(v1alpha1.ReasonTokenEndpointUnavailable, 30*time.Second, 4)}, "BackingOff", actionHold, v1alpha1.ReasonTokenEndpointUnavailable},
		{"failure with other inputs opens the gate", []func(*observation){failedAgo(v1alpha1.ReasonInvalidClientSecret, 30*time.Second, 1), func(obs *observation) { obs.failureInputs = "rotated" }}, "Mint", actionMint, ""},
		{"Retry-After longer than the backoff", []func(*observation){failedAgo(v1alpha1.ReasonThrottled, 20*time.Second, 1), func(obs *observation) {
			obs.tenant.Status.LastFailure.RetryAfter = &metav1.Duration{Duration: time.Minute}
		}}, "BackingOff", actionHold, v1alpha1.ReasonThrottled},
		{"usable token: a failed refresh waits at least a minute", []func(*observation){publish(tokenMinted(50*time.Minute, "current-inputs")), failedAgo(v1alpha1.ReasonTokenEndpointUnavailable, 30*time.Second, 1)}, "BackingOff", actionHold, v1alpha1.ReasonTokenEndpointUnavailable},
		{"leftover of a failed write", []func(*observation){leftoverInMemory}, "LeftoverToken", actionPublishLeftover, ""},
		{"refresh requested over a fresh token: mint", []func(*observation){freshToken, requested("2026-11-21T12:00:00Z")}, "RefreshRequested", actionMint, ""},
		{"refresh requested during a backoff: mint", []func(*observation){failedAgo(v1alpha1.ReasonConsentRequired, 2*time.Minute, 3), requested("now")}, "RefreshRequested", actionMint, ""},
		{"refresh requested within a minute of a failed request: held, the failure still reported", []func(*observation){failedAgo(v1alpha1.ReasonConsentRequired, 30*time.Second, 1), requested("now")}, "RefreshRequested", actionHold, v1alpha1.ReasonConsentRequired},
		{"a handled request asks nothing: the fresh token is kept", []func(*observation){freshToken, requested("")}, "FreshAndCurrent", actionKeep, ""},
		{"suspension beats a refresh request", []func(*observation){suspend, requested("now")}, "Suspended", actionHold, ""},
		{"a missing credential beats a refresh request", []func(*observation){noCredential, requested("now")}, "CredentialUnusable", actionHold, v1alpha1.ReasonCredentialsNotFound},
		{"a disallowed resource beats a refresh request", []func(*observation){disallowed, requested("now")}, "ResourceNotAllowed", actionHold, v1alpha1.ReasonResourceNotAllowed},
		{"a withdrawn grant beats a refresh request", []func(*observation){ungranted, requested("now")}, "AppNotAllowed", actionRevoke, v1alpha1.ReasonAppNotAllowed},
		{"a credential nothing was read of, for a granted app: held, never minted with", []func(*observation){func(obs *observation) { obs.credential = credential.Credential{} }}, "CredentialUnusable", actionHold, v1alpha1.ReasonCredentialsNotFound},
		{"leftover of a former generation: minted again", []func(*observation){leftoverFrom(tokenMinted(time.Minute, "current-inputs"), 2)}, mintCheck, actionMint, ""},
		{"leftover of former inputs: minted again", []func(*observation){leftoverFrom(tokenMinted(time.Minute, "former-inputs"), 3)}, mintCheck, actionMint, ""},
		{"leftover due for refresh: minted again", []func(*observation){leftoverFrom(tokenMinted(55*time.Minute, "current-inputs"), 3)}, mintCheck, actionMint, ""},
		{"leftover expired: minted again", []func(*observation){leftoverFrom(tokenMinted(2*time.Hour, "current-inputs"), 3)}, mintCheck, actionMint, ""},
		{"app grants nothing, nothing seen published: revoke, what the cache has not seen included", []func(*observation){ungranted}, "AppNotAllowed", actionRevoke, v1alpha1.ReasonAppNotAllowed},
		{"token of a former ClusterDefenderApp: revoke", []func(*observation){freshToken, mintedUnderFormerApp}, "MintedUnderAnotherApp", actionRevoke, ""},
		{"withdrawn grant beats a former app's token", []func(*observation){ungranted, mintedUnderFormerApp}, "AppNotAllowed", actionRevoke, v1alpha1.ReasonAppNotAllowed},
		{"a former app's token beats suspension", []func(*observation){mintedUnderFormerApp, suspend}, "MintedUnderAnotherApp", actionRevoke, ""},
		{"a former app's token beats a missing app", []func(*observation){mintedUnderFormerApp, appMissing}, "MintedUnderAnotherApp", actionRevoke, ""},
		{"grant limited to other resources", []func(*observation){ungranted, func(obs *observation) {
			obs.app.resourceRefused, obs.app.grantedResources = true, []string{"https://graph.microsoft.com"}
		}}, "AppNotAllowed", actionRevoke, v1alpha1.ReasonAppNotAllowed},
		{"app grants nothing, token published: revoke", []func(*observation){ungranted, freshToken}, "AppNotAllowed", actionRevoke, v1alpha1.ReasonAppNotAllowed},
		{"app missing", []func(*observation){appMissing}, "AppNotFound", actionHold, v1alpha1.ReasonAppNotFound},
		{"certificate expired", []func(*observation){certificateExpired}, "CredentialUnusable", actionHold, v1alpha1.ReasonCertificateExpired},
		{"certificate unusable", []func(*observation){certificateInvalid}, "CredentialUnusable", actionHold, v1alpha1.ReasonInvalidCertificate},
		{"ServiceAccount missing", []func(*observation){noServiceAccount}, "CredentialUnusable", actionHold, v1alpha1.ReasonServiceAccountNotFound},
		{"ServiceAccount not allowed", []func(*observation){serviceAccountNotAllowed}, "CredentialUnusable", actionHold, v1alpha1.ReasonServiceAccountNotAllowed},
		{"ServiceAccount not allowed, token published: kept, no token request", []func(*observation){freshToken, serviceAccountNotAllowed}, "CredentialUnusable", actionHold, v1alpha1.ReasonServiceAccountNotAllowed},

		{"secret template does not parse: no token request", []func(*observation){templateUnparsable}, "InvalidSecretTemplate", actionHold, v1alpha1.ReasonInvalidSecretTemplate},
		{"secret template names a field out of scope: no token request", []func(*observation){templateUnknownField}, "InvalidSecretTemplate", actionHold, v1alpha1.ReasonInvalidSecretTemplate},
		{"secret template changed, token fresh: restore, no token request", []func(*observation){freshToken, templateChanged}, "FreshAndCurrent", actionRestore, ""},
		{"secret template uses a variable and a function: no token request", []func(*observation){templateCallsAFunction}, "InvalidSecretTemplate", actionHold, v1alpha1.ReasonInvalidSecretTemplate},
		{"secret template annotation without an allowed prefix: no token request", []func(*observation){annotationNotAllowed}, "InvalidSecretTemplate", actionHold, v1alpha1.ReasonInvalidSecretTemplate},
		{"secret template annotation with an allowed prefix: mint", []func(*observation){annotationAllowed}, "Mint", actionMint, ""},

		// Pairs of checks that both match: the row says which wins, and so the order.
		{"suspended beats an invalid secret template", []func(*observation){templateUnparsable, suspend}, "Suspended", actionHold, ""},
		{"resource not allowed beats an invalid secret template", []func(*observation){templateUnparsable, disallowed}, "ResourceNotAllowed", actionHold, v1alpha1.ReasonResourceNotAllowed},
		{"invalid secret template beats app missing", []func(*observation){appMissing, templateUnparsable}, "InvalidSecretTemplate", actionHold, v1alpha1.ReasonInvalidSecretTemplate},
		{"invalid secret template beats keeping a fresh token", []func(*observation){freshToken, templateUnknownField}, "InvalidSecretTemplate", actionHold, v1alpha1.ReasonInvalidSecretTemplate},
		{"invalid secret template beats a leftover", []func(*observation){leftoverInMemory, templateUnparsable}, "InvalidSecretTemplate", actionHold, v1alpha1.ReasonInvalidSecretTemplate},
		{"withdrawn grant beats suspension: the token goes", []func(*observation){ungranted, freshToken, suspend}, "AppNotAllowed", actionRevoke, v1alpha1.ReasonAppNotAllowed},
		{"expired certificate beats keeping a fresh token", []func(*observation){freshToken, certificateExpired}, "CredentialUnusable", actionHold, v1alpha1.ReasonCertificateExpired},
		{"app missing beats Secret conflict", []func(*observation){appMissing, foreignSecret}, "AppNotFound", actionHold, v1alpha1.ReasonAppNotFound},
		{"suspended beats resource not allowed", []func(*observation){suspend, disallowed}, "Suspended", actionHold, ""},
		{"suspended beats restoring an edited Secret", []func(*observation){freshToken, handEdited, suspend}, "Suspended", actionHold, ""},
		{"resource not allowed beats Secret conflict", []func(*observation){disallowed, foreignSecret}, "ResourceNotAllowed", actionHold, v1alpha1.ReasonResourceNotAllowed},
		{"resource not allowed beats keeping a fresh token", []func(*observation){freshToken, disallowed}, "ResourceNotAllowed", actionHold, v1alpha1.ReasonResourceNotAllowed},
		{"resource not allowed beats backing off", []func(*observation){failedAgo(v1alpha1.ReasonInvalidClientSecret, 30*time.Second, 1), disallowed}, "ResourceNotAllowed", actionHold, v1alpha1.ReasonResourceNotAllowed},
		{"Secret conflict beats missing credential", []func(*observation){foreignSecret, noCredential}, "SecretConflict", actionHold, v1alpha1.ReasonSecretConflict},
		{"Secret conflict beats backing off", []func(*observation){failedAgo(v1alpha1.ReasonInvalidClientSecret, 30*time.Second, 1), foreignSecret}, "SecretConflict", actionHold, v1alpha1.ReasonSecretConflict},
		{"missing credential beats a leftover", []func(*observation){leftoverInMemory, noCredential}, "CredentialUnusable", actionHold, v1alpha1.ReasonCredentialsNotFound},
		{"fresh token beats an old backoff", []func(*observation){freshToken, failedAgo(v1alpha1.ReasonInvalidClientSecret, 30*time.Second, 1)}, "FreshAndCurrent", actionKeep, ""},
		{"backing off beats publishing a leftover", []func(*observation){leftoverInMemory, failedAgo(v1alpha1.ReasonSecretWriteFailed, 30*time.Second, 1)}, "BackingOff", actionHold, v1alpha1.ReasonSecretWriteFailed},
	}
	// A withdrawn grant beats every check of what the cluster can fix, and every
	// state of the published token: the token goes whatever else is wrong.
	for name, fact := range map[string]func(*observation){
		"suspension":                 suspend,
		"a disallowed resource":      disallowed,
		"an invalid template":        templateUnparsable,
		"a disallowed annotation":    annotationNotAllowed,
		"a Secret of another owner":  foreignSecret,
		"a missing credential":       noCredential,
		"an implausible secret":      implausible,
		"an expired certificate":     certificateExpired,
		"an invalid certificate":     certificateInvalid,
		"a missing ServiceAccount":   noServiceAccount,
		"a refused ServiceAccount":   serviceAccountNotAllowed,
		"a backoff":                  failedAgo(v1alpha1.ReasonTokenEndpointUnavailable, 30*time.Second, 1),
		"a leftover":                 leftoverInMemory,
		"a fresh, hand-edited token": func(obs *observation) { freshToken(obs); handEdited(obs) },
	} {
		tests = append(tests, struct {
			name   string
			facts  []func(*observation)
			check  string
			action action
			reason string
		}{"withdrawn grant beats " + name, []func(*observation){ungranted, fact}, "AppNotAllowed", actionRevoke, v1alpha1.ReasonAppNotAllowed})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obs := healthyObservation()
			for _, f := range tt.facts {
				f(obs)
			}
			p := decide(obs)
			if p.check != tt.check || p.action != tt.action {
				t.Errorf("decide = %s/%s, want %s/%s", p.check, p.action, tt.check, tt.action)
			}
			switch {
			case tt.reason == "" && p.problem != nil:
				t.Errorf("problem = %s (%s), want none", p.problem.Reason, p.problem.Message)
			case tt.reason != "" && (p.problem == nil || p.problem.Reason != tt.reason):
				t.Errorf("problem = %+v, want reason %s", p.problem, tt.reason)
			case p.problem != nil && p.problem.Stalled != v1alpha1.Stalls(tt.reason):
				t.Errorf("problem %s stalled = %v, want %v from the reasons table", tt.reason, p.problem.Stalled, v1alpha1.Stalls(tt.reason))
			}
		})
	}
}

func TestDecisionChainNamesEveryCheckOnce(t *testing.T) {
	seen := map[string]bool{mintCheck: true}
	for _, c := range decisionChain {
		if seen[c.name] {
			t.Errorf("check %q appears twice, or is named like the fall-through", c.name)
		}
		seen[c.name] = true
	}
}

// The backoff's end is a function of the persisted failure alone, so the next
// request is due at the same instant whether or not the operator restarted.
func TestBackoffEndsWhereThePersistedFailureSays(t *testing.T) {
	tests := []struct {
		name     string
		reason   string
		attempts int32
		// published: a usable token is still published.
		published  bool
		retryAfter time.Duration
		want       time.Duration // after the failure, before the tenant's jitter
	}{
		{"first transient failure", v1alpha1.ReasonTokenEndpointUnavailable, 1, false, 0, 5 * time.Second},
		{"third transient failure", v1alpha1.ReasonTokenEndpointUnavailable, 3, false, 0, 20 * time.Second},
		{"transient failure, capped", v1alpha1.ReasonThrottled, 12, false, 0, 5 * time.Minute},
		{"Retry-After is a floor", v1alpha1.ReasonThrottled, 1, false, 90 * time.Second, 90 * time.Second},
		{"first needs-a-human failure", v1alpha1.ReasonConsentRequired, 1, false, 0, time.Minute},
		{"needs-a-human failure, capped", v1alpha1.ReasonConsentRequired, 9, false, 0, 15 * time.Minute},
		{"Secret write refused: slow backoff", v1alpha1.ReasonSecretWriteFailed, 1, false, 0, time.Minute},
		{"usable token published: at least a minute", v1alpha1.ReasonTokenEndpointUnavailable, 1, true, 0, time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obs := healthyObservation()
			if tt.published {
				publishedIntact(tokenMinted(50*time.Minute, "current-inputs"))(obs)
			}
			failed := decideNow.Add(-time.Second)
			last := &v1alpha1.LastFailure{Time: metav1.NewTime(failed), Reason: tt.reason}
			if tt.retryAfter > 0 {
				last.RetryAfter = &metav1.Duration{Duration: tt.retryAfter}
			}
			got := retryAt(obs, last, tt.attempts).Sub(failed)
			if !withinBackoff(got, tt.want) {
				t.Errorf("backoff = %s, want %s plus up to a tenth of jitter", got, tt.want)
			}
		})
	}
}

// The credential sources of the observations above: where a message sends the
// reader to fix them.
var (
	inlineSecretSource     = credential.ClientSecret{Secret: types.NamespacedName{Namespace: "customer", Name: credentialName}, Key: v1alpha1.DefaultClientSecretKey, KeyField: "spec.clientSecretRef.key"}
	certificateSource      = credential.Certificate{Secret: types.NamespacedName{Namespace: "ops", Name: "partner-cert"}}
	workloadIdentitySource = credential.WorkloadIdentity{ServiceAccount: types.NamespacedName{Namespace: "ops", Name: "partner-app"}, Audience: v1alpha1.DefaultWorkloadIdentityAudience}
)

// TestDesignDocListsTheDecisionChain keeps docs/design.md's table of checks in
// the order decide runs them, so that the table answers "why did this tenant do
// that?" for the code as it is.
func TestDesignDocListsTheDecisionChain(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "design.md"))
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^ *\\| (\\d+|–) \\| `(\\w+)` \\|")
	rows := row.FindAllStringSubmatch(string(doc), -1)
	documented := make([]string, 0, len(rows))
	for _, m := range rows {
		documented = append(documented, m[2])
	}
	code := make([]string, 0, len(decisionChain)+1)
	for _, c := range decisionChain {
		code = append(code, c.name)
	}
	code = append(code, mintCheck)
	if !slices.Equal(documented, code) {
		t.Errorf("docs/design.md lists the checks\n  %v\nthe decision chain runs\n  %v", documented, code)
	}
}

// TestDecisionChainSchedules: when each plan looks again, and when the next token
// request is due, from the contract's rules rather than from the code's helpers:
// needs-a-human problems are looked at again within 15 minutes; a revocation of a
// former app's token looks again at once; a fresh one-hour token is refreshed a
// third of its lifetime before it expires, up to a fifth of that earlier; a
// backoff ends after the failure and within 15 minutes of it.
func TestDecisionChainSchedules(t *testing.T) {
	minted := decideNow.Add(-5 * time.Minute)
	failed := decideNow.Add(-30 * time.Second)
	for _, tt := range []struct {
		name  string
		facts []func(*observation)
		check string
		// recheck and nextRefresh must lie in [from, to]; zero bounds: must be zero.
		recheckFrom, recheckTo time.Time
		refreshFrom, refreshTo time.Time
	}{
		{name: "stalled on the cluster", facts: []func(*observation){func(obs *observation) { obs.resourceAllowed = false }}, check: "ResourceNotAllowed",
			recheckFrom: decideNow.Add(15 * time.Minute), recheckTo: decideNow.Add(15 * time.Minute)},
		{name: "suspended: on events only", facts: []func(*observation){func(obs *observation) { obs.tenant.Spec.Suspend = true }}, check: "Suspended"},
		{name: "a former app's token: at once", facts: []func(*observation){func(obs *observation) { obs.otherAppTokens = []string{"ClusterDefenderApp/former"} }},
			check: "MintedUnderAnotherApp", recheckFrom: decideNow, recheckTo: decideNow},
		{name: "fresh token: refreshed 20 to 24 minutes before expiry", facts: []func(*observation){publishedIntact(tokenMinted(5*time.Minute, "current-inputs"))}, check: "FreshAndCurrent",
			recheckFrom: minted.Add(36 * time.Minute), recheckTo: minted.Add(40 * time.Minute),
			refreshFrom: minted.Add(36 * time.Minute), refreshTo: minted.Add(40 * time.Minute)},
		{name: "backing off", facts: []func(*observation){failedAgo(v1alpha1.ReasonInvalidClientSecret, 30*time.Second, 1)}, check: "BackingOff",
			recheckFrom: decideNow.Add(time.Nanosecond), recheckTo: failed.Add(15 * time.Minute),
			refreshFrom: decideNow.Add(time.Nanosecond), refreshTo: failed.Add(15 * time.Minute)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			obs := healthyObservation()
			for _, f := range tt.facts {
				f(obs)
			}
			p := decide(obs)
			if p.check != tt.check {
				t.Fatalf("check %s, want %s", p.check, tt.check)
			}
			within := func(what string, got, from, to time.Time) {
				if from.IsZero() && !got.IsZero() || !from.IsZero() && (got.Before(from) || got.After(to)) {
					t.Errorf("%s = %s, want within [%s, %s]", what, got, from, to)
				}
			}
			within("recheck", p.recheck, tt.recheckFrom, tt.recheckTo)
			within("nextRefresh", p.nextRefresh, tt.refreshFrom, tt.refreshTo)
		})
	}
}

// requested is a pending AnnotationRequestedAt, as observe records it.
func requested(value string) func(*observation) {
	return func(obs *observation) { obs.refreshRequest = value }
}
