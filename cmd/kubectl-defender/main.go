// Command kubectl-defender is the kubectl plugin of defender-tenant-operator:
// `kubectl defender onboard|status|consent|refresh|migrate` over many DefenderTenants at
// once. Installed on the PATH (go install, make kubectl-defender, or krew), kubectl
// finds it as `kubectl defender`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/tenantcreds/defender-tenant-operator/internal/kubectldefender"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := kubectldefender.NewCommand(genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
