package kubectldefender

import (
	"encoding/csv"
	"slices"
	"strings"
	"testing"
)

// TestConsent lists the tenants that wait for a customer admin in each format,
// and compares each with its golden file.
func TestConsent(t *testing.T) {
	f := createFleet(t, "consent")
	path := kubeconfig(t, f.east)
	for _, tt := range []struct {
		golden string
		args   []string
	}{
		{"consent-namespace", []string{"consent"}},
		{"consent-all", []string{"consent", "-A"}},
		{"consent-app", []string{"consent", "-A", "--app", "ClusterDefenderApp/kd-partner"}},
		{"consent-csv", []string{"consent", "-A", "-o", "csv"}},
		{"consent-markdown", []string{"consent", "-A", "-o", "markdown"}},
		{"consent-json", []string{"consent", "-A", "-o", "json"}},
	} {
		t.Run(tt.golden, func(t *testing.T) {
			golden(t, tt.golden, mustRun(t, path, tt.args...))
		})
	}

	got := run(t, path, nil, "consent", "-n", f.west)
	if got.err != nil || got.stdout != "" || !strings.Contains(got.stderr, "No DefenderTenants wait for consent") {
		t.Errorf("consent in a namespace where nobody waits: err %v, stdout %q, stderr %q", got.err, got.stdout, got.stderr)
	}
}

// TestConsentCSVQuotes reads the CSV back with a CSV reader: a role with a quote
// and the comma-joined roles come back as the values the tenant has.
func TestConsentCSVQuotes(t *testing.T) {
	f := createFleet(t, "consent-csv")
	records, err := csv.NewReader(strings.NewReader(mustRun(t, kubeconfig(t, f.east), "consent", "-o", "csv"))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{f.east, "woodgrove", "ClusterDefenderApp/kd-partner", "44444444-4444-4444-8444-444444444444", "MissingRoles", `Custom"Quoted|Role,SecurityAlert.Read.All`,
		"https://login.microsoftonline.com/44444444-4444-4444-8444-444444444444/v2.0/adminconsent?client_id=" + partnerClientID + "&scope=https%3A%2F%2Fgraph.microsoft.com%2F.default"}
	if len(records) != 4 || !slices.Equal(records[3], want) {
		t.Errorf("CSV records %q, want 4 with the last %q", records, want)
	}
}

// Role names and messages are chosen by whoever edits a namespace: in a
// spreadsheet they must stay text, in Markdown plain text in their cell, and on a
// terminal they must not drive it.
func TestConsentOutputKeepsHostileTextInert(t *testing.T) {
	for in, want := range map[string]string{
		`=HYPERLINK("https://evil.example","Consent")`: `'=HYPERLINK("https://evil.example","Consent")`,
		"+1":                        "'+1",
		"-2":                        "'-2",
		"@SUM(A1)":                  "'@SUM(A1)",
		"\tx":                       "'\tx",
		"SecurityAlert.Read.All":    "SecurityAlert.Read.All",
		"https://login.example/x=1": "https://login.example/x=1",
		"":                          "",
	} {
		if got := inertInSpreadsheets(in); got != want {
			t.Errorf("inertInSpreadsheets(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{
		"[Consent](https://evil.example)": `\[Consent\]\(https://evil.example\)`,
		"<img src=x>":                     `\<img src=x\>`,
		"a|b\nc":                          `a\|b c`,
	} {
		if got := markdownCell(in); got != want {
			t.Errorf("markdownCell(%q) = %q, want %q", in, got, want)
		}
	}
	var out strings.Builder
	if _, err := (escapedWriter{&out}).Write([]byte("role\x1b]8;;https://evil.example\x1b\\x\rX")); err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(out.String(), "\x1b\r") {
		t.Errorf("escapedWriter wrote %q: an escape or carriage return reached the terminal", out.String())
	}
}
