package defendertenant

import (
	"bufio"
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
)

var guidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// logBuffer collects the JSON log lines of the reconciles a test runs.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// entries returns the log entries whose message is msg.
func (b *logBuffer) entries(t *testing.T, msg string) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	for sc.Scan() {
		var e map[string]any
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("log line %q is not JSON: %v", sc.Text(), err)
		}
		if e["msg"] == msg {
			out = append(out, e)
		}
	}
	return out
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// captureLogs makes the harness's reconciles log at info level into the buffer
// returned.
func captureLogs(h *harness) *logBuffer {
	logs := &logBuffer{}
	h.ctx = ctrl.LoggerInto(h.ctx, zap.New(zap.WriteTo(logs)))
	return logs
}

// checkSupportIDs checks that lastFailure carries the IDs of the emulator's last
// answer and of the last request it received, that the condition message holds
// none of them, and that the failure was logged with them and without the secret.
func checkSupportIDs(t *testing.T, h *harness, logs *logBuffer, conditionType, reason, code string) *v1alpha1.LastFailure {
	t.Helper()
	got := h.tenant()
	expectCondition(t, got, conditionType, metav1.ConditionTrue, reason)
	last := got.Status.LastFailure
	if last == nil {
		t.Fatal("status.lastFailure absent after a failed request")
	}
	traceID, correlationID := h.entra.LastFailureIDs(testTenantID)
	clientRequestID := h.entra.LastRequest(testTenantID).Get("client-request-id")
	if !guidRE.MatchString(traceID) || !guidRE.MatchString(correlationID) || !guidRE.MatchString(clientRequestID) {
		t.Fatalf("the emulator's IDs %q, %q, %q are not all GUIDs", traceID, correlationID, clientRequestID)
	}
	if last.Code != code || last.TraceID != traceID || last.CorrelationID != correlationID || last.ClientRequestID != clientRequestID {
		t.Errorf("lastFailure code, traceID, correlationID, clientRequestID = %q, %q, %q, %q; want %q, %q, %q, %q",
			last.Code, last.TraceID, last.CorrelationID, last.ClientRequestID, code, traceID, correlationID, clientRequestID)
	}
	message := condition(got, conditionType).Message
	for _, id := range []string{traceID, correlationID, clientRequestID} {
		if strings.Contains(message, id) || strings.Contains(last.Message, id) {
			t.Errorf("the %s message %q (lastFailure.message %q) contains the ID %q", conditionType, message, last.Message, id)
		}
	}
	for _, s := range []string{"Trace ID", "Correlation ID", "Timestamp"} {
		if strings.Contains(message, s) {
			t.Errorf("the %s message %q contains %q", conditionType, message, s)
		}
	}

	entries := logs.entries(t, "Token request failed")
	if len(entries) == 0 {
		t.Fatalf("no \"Token request failed\" log entry in:\n%s", logs)
	}
	e := entries[len(entries)-1]
	want := map[string]string{"tenantID": testTenantID, "reason": reason, "code": code,
		"traceID": traceID, "correlationID": correlationID, "clientRequestID": clientRequestID}
	for k, v := range want {
		if e[k] != v {
			t.Errorf("log entry %s = %v, want %q (entry %v)", k, e[k], v, e)
		}
	}
	if e["level"] != "info" {
		t.Errorf("log entry level = %v, want info", e["level"])
	}
	if strings.Contains(logs.String(), testClientSecret) {
		t.Error("the logs contain the client secret")
	}
	return last
}

func TestLastFailureCarriesTheSupportIDs(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	logs := captureLogs(h)
	res := h.startFailing(entraemu.ServerError(), entraemu.ServerError())
	first := checkSupportIDs(t, h, logs, "Reconciling", v1alpha1.ReasonTokenEndpointUnavailable, "AADSTS50033")
	firstMessage := condition(h.tenant(), "Reconciling").Message

	// The next attempt has IDs of its own, and the same message.
	h.clock.Step(res.RequeueAfter)
	res = h.reconcile()
	second := checkSupportIDs(t, h, logs, "Reconciling", v1alpha1.ReasonTokenEndpointUnavailable, "AADSTS50033")
	if second.TraceID == first.TraceID || second.CorrelationID == first.CorrelationID || second.ClientRequestID == first.ClientRequestID {
		t.Errorf("the second attempt's IDs %+v repeat the first's %+v", second, first)
	}
	if got := condition(h.tenant(), "Reconciling").Message; got != firstMessage {
		t.Errorf("the Reconciling message changed between attempts:\n%q\n%q", firstMessage, got)
	}

	h.clock.Step(res.RequeueAfter)
	h.reconcile()
	got := h.tenant()
	expectCondition(t, got, "Ready", metav1.ConditionTrue, v1alpha1.ReasonTokenReady)
	if got.Status.LastFailure != nil {
		t.Errorf("after a success lastFailure = %+v, want none", got.Status.LastFailure)
	}
	if headers := h.entra.RequestHeaders(testTenantID); len(headers) != 3 || headers[2].Get("return-client-request-id") != "true" {
		t.Errorf("the emulator saw %d requests (%v), want 3 asking for the client-request-id back", len(headers), headers)
	}
}

func TestStalledLastFailureCarriesTheSupportIDs(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	logs := captureLogs(h)
	h.createCredential("not-the-secret-value")
	h.createTenant()
	h.reconcile()
	checkSupportIDs(t, h, logs, "Stalled", v1alpha1.ReasonInvalidClientSecret, "AADSTS7000215")
	if strings.Contains(logs.String(), "not-the-secret-value") {
		t.Error("the logs contain the credential")
	}
}
