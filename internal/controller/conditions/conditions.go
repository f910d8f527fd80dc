// Package conditions holds what the DefenderTenant and app controllers write into
// status alike: problems as kstatus conditions, and the Events of transitions.
package conditions

import (
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// Problem is whatever keeps an object from being Ready, as conditions show it.
type Problem struct {
	Reason  string
	Message string
	// Stalled: a human must act (Stalled=True); otherwise it is retried (Reconciling=True).
	Stalled bool
}

// NewProblem takes whether the reason stalls from the reasons table.
func NewProblem(reason, message string) *Problem {
	return &Problem{Reason: reason, Message: message, Stalled: v1alpha1.Stalls(reason)}
}

// Progress maps a problem onto kstatus: needs-a-human problems stall, transient
// ones keep the object reconciling.
func Progress(p *Problem) (stalled, reconciling *metav1.Condition) {
	if p == nil {
		return nil, nil
	}
	c := metav1.Condition{Status: metav1.ConditionTrue, Reason: p.Reason, Message: p.Message}
	if p.Stalled {
		c.Type = v1alpha1.ConditionStalled
		return &c, nil
	}
	c.Type = v1alpha1.ConditionReconciling
	return nil, &c
}

// Reported is the problem a status reports on Stalled or Reconciling, for
// telling which transitions deserve an Event.
func Reported(conditions []metav1.Condition) *Problem {
	for _, t := range []string{v1alpha1.ConditionStalled, v1alpha1.ConditionReconciling} {
		if c := meta.FindStatusCondition(conditions, t); c != nil && c.Status == metav1.ConditionTrue {
			return &Problem{Reason: c.Reason, Message: c.Message, Stalled: t == v1alpha1.ConditionStalled}
		}
	}
	return nil
}

// NotReady is a Ready=False condition.
func NotReady(reason, message string) metav1.Condition {
	return metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: reason, Message: message}
}

// Set sets c, stamped with generation; meta.SetStatusCondition keeps the
// transition time when the status did not change.
func Set(conditions *[]metav1.Condition, c metav1.Condition, generation int64, now metav1.Time) {
	c.ObservedGeneration = generation
	c.LastTransitionTime = now
	meta.SetStatusCondition(conditions, c)
}

// TimeOrNil drops sub-second precision, which the API server does not store: keeping
// it would make every computed status differ from the stored one and cause a write.
func TimeOrNil(t time.Time) *metav1.Time {
	if t.IsZero() {
		return nil
	}
	mt := metav1.NewTime(t.UTC().Truncate(time.Second))
	return &mt
}

// RFC3339 is how messages show times: UTC, to the second.
func RFC3339(t time.Time) string {
	return t.UTC().Format(time.RFC3339)
}

// Event is an Event a status change deserves.
type Event struct {
	Type, Reason, Action, Note string
}
