package kubectldefender

import (
	"errors"

	"github.com/spf13/cobra"
)

func newMigrateCommand(_ *rootOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "migrate --to graph",
		Short: "Move the tenants on a retiring Defender API to Microsoft Graph",
		RunE: func(*cobra.Command, []string) error {
			return errors.New("migrate is not available yet")
		},
	}
}
