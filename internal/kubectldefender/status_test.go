package kubectldefender

import (
	"strings"
	"testing"
)

// TestStatus prints the fleet in each format and scope, and compares each with
// its golden file.
func TestStatus(t *testing.T) {
	f := createFleet(t, "status")
	kubeconfigEast := kubeconfig(t, f.east)
	for _, tt := range []struct {
		golden string
		args   []string
	}{
		{"status-namespace", []string{"status"}},
		{"status-other-namespace", []string{"status", "-n", f.west}},
		{"status-all", []string{"status", "-A"}},
		{"status-all-wide", []string{"status", "-A", "-o", "wide"}},
		{"status-app", []string{"status", "-A", "--app", "ClusterDefenderApp/kd-partner"}},
		{"status-app-namespaced", []string{"status", "-A", "--app", "west-app"}},
		{"status-name", []string{"status", "fabrikam"}},
		{"status-name-json", []string{"status", "contoso", "-o", "json"}},
		{"status-yaml", []string{"status", "-n", f.west, "-o", "yaml"}},
	} {
		t.Run(tt.golden, func(t *testing.T) {
			golden(t, tt.golden, mustRun(t, kubeconfigEast, tt.args...))
		})
	}
}

// TestStatusErrors: each mistake is one line naming what to change, and a
// non-zero exit.
func TestStatusErrors(t *testing.T) {
	f := createFleet(t, "status-errors")
	path := kubeconfig(t, f.east)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"status", "-o", "csv"}, `--output "csv" is not supported: use one of table, wide, json, yaml`},
		{[]string{"status", "--app", "Deployment/x"}, `--app "Deployment/x": the kind must be DefenderApp or ClusterDefenderApp`},
		{[]string{"status", "contoso", "-A"}, "cannot be combined with --all-namespaces"},
		{[]string{"status", "nobody"}, `DefenderTenant "nobody" not found in namespace "` + f.east + `"`},
		{[]string{"status", "-n", "empty-namespace-kd"}, ""},
	} {
		got := run(t, path, nil, tt.args...)
		if tt.want == "" {
			if got.err != nil || got.stderr != "No DefenderTenants found in namespace \"empty-namespace-kd\".\n" || got.stdout != "" {
				t.Errorf("%v: err %v, stdout %q, stderr %q; want no error, nothing found said on stderr", tt.args, got.err, got.stdout, got.stderr)
			}
			continue
		}
		if got.err == nil || !strings.Contains(got.err.Error(), tt.want) || strings.Contains(got.err.Error(), "\n") {
			t.Errorf("%v: error %v, want one line containing %q", tt.args, got.err, tt.want)
		}
	}
}
