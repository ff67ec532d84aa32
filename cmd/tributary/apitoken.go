package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tributary-iot/tributary/sync/central"
)

// apiTokenFlags are the ways a client command takes central's API token: a file or the
// environment keep it out of `ps`; --token stays for scripts and quick tries.
type apiTokenFlags struct{ token, file string }

func (a *apiTokenFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&a.token, "token", "", "central's API token (visible in ps: prefer --token-file or "+central.APITokenEnv+")")
	cmd.Flags().StringVar(&a.file, "token-file", "", "file holding central's API token")
}

// get returns the token: --token, else --token-file, else the environment, else "".
func (a *apiTokenFlags) get() (string, error) {
	switch {
	case a.token != "":
		return a.token, nil
	case a.file != "":
		b, err := os.ReadFile(a.file)
		if err != nil {
			return "", fmt.Errorf("read --token-file: %w", err)
		}
		t := strings.TrimSpace(string(b))
		if t == "" {
			return "", fmt.Errorf("token file %s is empty: put central's API token in it", a.file)
		}
		return t, nil
	}
	return strings.TrimSpace(os.Getenv(central.APITokenEnv)), nil
}
