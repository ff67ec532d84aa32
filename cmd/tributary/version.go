package main

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Set at link time by release builds (see .ci/build):
//
//	go build -ldflags "-s -w \
//	  -X main.version=v0.3.0 \
//	  -X main.commit=$(git rev-parse HEAD) \
//	  -X main.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)" ./cmd/tributary
//
// They stay variables (not constants) because -X can only set package-level string variables.
// When unset, [buildInfo] falls back to what the Go toolchain embeds (module version, vcs.revision,
// vcs.time), so a plain `go build` inside a git checkout still says which commit it is.
var (
	version   = ""
	commit    = ""
	buildDate = ""
)

// BuildInfo is what `tributary version` reports.
type BuildInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	BuildDate string `json:"build_date"`
	Modified  bool   `json:"modified,omitempty"` // built from a checkout with uncommitted changes
	GoVersion string `json:"go_version"`
	Platform  string `json:"platform"` // GOOS/GOARCH, plus GOARM for 32-bit ARM
}

// buildInfo combines the link-time values with the toolchain's embedded build info. Link-time
// values win: a release build stamps them on purpose.
func buildInfo(linkVersion, linkCommit, linkDate string, embedded *debug.BuildInfo, haveEmbedded bool) BuildInfo {
	bi := BuildInfo{
		Version:   linkVersion,
		Commit:    linkCommit,
		BuildDate: linkDate,
		GoVersion: runtime.Version(),
		Platform:  runtime.GOOS + "/" + runtime.GOARCH,
	}
	if haveEmbedded {
		if embedded.GoVersion != "" {
			bi.GoVersion = embedded.GoVersion
		}
		var goarm string
		for _, s := range embedded.Settings {
			switch s.Key {
			case "vcs.revision":
				if bi.Commit == "" {
					bi.Commit = s.Value
				}
			case "vcs.time":
				if bi.BuildDate == "" {
					bi.BuildDate = s.Value
				}
			case "vcs.modified":
				bi.Modified = s.Value == "true" && linkCommit == ""
			case "GOARM":
				goarm = s.Value
			}
		}
		if goarm != "" && runtime.GOARCH == "arm" {
			bi.Platform += "/v" + goarm
		}
		// "(devel)" is what a build from a checkout says; a module version means `go install
		// ...@vX.Y.Z`, which is worth reporting.
		if bi.Version == "" && embedded.Main.Version != "" && embedded.Main.Version != "(devel)" {
			bi.Version = embedded.Main.Version
		}
	}
	if bi.Version == "" {
		bi.Version = "devel"
	}
	if bi.Commit == "" {
		bi.Commit = "unknown"
	}
	if bi.BuildDate == "" {
		bi.BuildDate = "unknown"
	}
	return bi
}

func currentBuildInfo() BuildInfo {
	embedded, ok := debug.ReadBuildInfo()
	return buildInfo(version, commit, buildDate, embedded, ok)
}

func (bi BuildInfo) write(w io.Writer) {
	commit := bi.Commit
	if bi.Modified {
		commit += " (modified)"
	}
	fmt.Fprintf(w, "tributary %s\n", bi.Version)
	fmt.Fprintf(w, "  commit:     %s\n", commit)
	fmt.Fprintf(w, "  built:      %s\n", bi.BuildDate)
	fmt.Fprintf(w, "  go:         %s\n", bi.GoVersion)
	fmt.Fprintf(w, "  platform:   %s\n", bi.Platform)
}

// newVersionCmd is "tributary version".
func newVersionCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit, build date, Go version and platform of this binary",
		Long: `Print the version, commit and build date stamped into this binary at release time, the Go
version it was built with and the platform it was built for. Binaries built without release stamps
report the git commit and commit time the Go toolchain recorded, or "unknown".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bi := currentBuildInfo()
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(bi)
			}
			bi.write(cmd.OutOrStdout())
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as a JSON object")
	return cmd
}
