package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	// bcrypt is imported only for its cost bounds, so --bcrypt-cost is checked before any work.
	"golang.org/x/crypto/bcrypt"

	"github.com/tributary-iot/tributary/devices"
)

// devicesRegistryFlags locate the registry file; every devices subcommand shares them.
type devicesRegistryFlags struct {
	dataDir     string
	registry    string
	lockTimeout time.Duration
}

func (f *devicesRegistryFlags) path() (string, error) {
	switch {
	case f.registry != "":
		return f.registry, nil
	case f.dataDir != "":
		return filepath.Join(f.dataDir, "devices.db"), nil
	default:
		return "", errors.New("no registry given: pass --data-dir DIR (the edge agent's data directory; the registry is DIR/devices.db) or --registry FILE")
	}
}

func (f *devicesRegistryFlags) open(cost int) (*devices.Registry, error) {
	path, err := f.path()
	if err != nil {
		return nil, err
	}
	return devices.NewRegistry(path, &devices.RegistryOptions{BcryptCost: cost, LockTimeout: f.lockTimeout}), nil
}

func newDevicesCmd() *cobra.Command {
	rf := &devicesRegistryFlags{}
	cmd := &cobra.Command{
		Use:   "devices",
		Short: "Manage the device registry: which devices may connect, and with which credentials",
		Long: `Manage the device registry: which devices may connect to the edge agent's MQTT listener, and
with which credentials. Passwords are stored only as bcrypt hashes.

The registry is a file in the edge agent's data directory (DIR/devices.db). It can be changed while
the agent runs: the agent reloads it when it changes, so a new device can connect within seconds,
without a restart.

A device publishes only under its own topics, devices/<id>/<stream>/... in the default scheme.`,
		Example: `  tributary devices add boiler-7 --data-dir edge-data
  tributary devices add cam-1 --cert-identity --no-password --data-dir edge-data
  tributary devices list --data-dir edge-data
  tributary devices passwd boiler-7 --password-stdin --data-dir edge-data < pw.txt`,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&rf.dataDir, "data-dir", "", "the edge agent's data directory; the registry is DIR/devices.db")
	pf.StringVar(&rf.registry, "registry", "", "registry file, instead of DIR/devices.db")
	pf.DurationVar(&rf.lockTimeout, "lock-timeout", 5*time.Second, "how long to wait while another command writes the registry")
	cmd.AddCommand(
		newDevicesAddCmd(rf),
		newDevicesListCmd(rf),
		newDevicesRemoveCmd(rf),
		newDevicesPasswdCmd(rf),
		newDevicesEnableCmd(rf, false),
		newDevicesEnableCmd(rf, true),
	)
	return cmd
}

// devicesPasswordFlags choose where a new password comes from; with neither flag one is generated.
type devicesPasswordFlags struct {
	password string
	stdin    bool
	cost     int
}

func (p *devicesPasswordFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&p.password, "password", "", "the password (visible in the process list and shell history; prefer --password-stdin)")
	cmd.Flags().BoolVar(&p.stdin, "password-stdin", false, "read the password from the first line of standard input")
	cmd.Flags().IntVar(&p.cost, "bcrypt-cost", bcrypt.DefaultCost,
		fmt.Sprintf("bcrypt cost of the hash (%d..%d); each step doubles the work of every password check at CONNECT", bcrypt.MinCost, bcrypt.MaxCost))
	cmd.MarkFlagsMutuallyExclusive("password", "password-stdin")
}

// read returns the password and whether it was generated, in which case the caller prints it.
func (p *devicesPasswordFlags) read(cmd *cobra.Command) (string, bool, error) {
	pw, generated, err := p.readAny(cmd)
	if err == nil && len(pw) > 72 {
		// bcrypt reads only the first 72 bytes: a longer password would let any string with the
		// same start log in.
		return "", false, fmt.Errorf("the password is %d bytes; bcrypt uses at most 72 (a character outside ASCII takes 2-4): choose a shorter one, or leave out --password and --password-stdin to have one generated", len(pw))
	}
	return pw, generated, err
}

func (p *devicesPasswordFlags) readAny(cmd *cobra.Command) (string, bool, error) {
	if p.cost < bcrypt.MinCost || p.cost > bcrypt.MaxCost {
		return "", false, fmt.Errorf("--bcrypt-cost %d is out of range; use %d..%d", p.cost, bcrypt.MinCost, bcrypt.MaxCost)
	}
	switch {
	case cmd.Flags().Changed("password"):
		if p.password == "" {
			return "", false, errors.New("--password is empty; give a password, or leave the flag out to generate one")
		}
		return p.password, false, nil
	case p.stdin:
		line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", false, fmt.Errorf("read password from standard input: %w", err)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			return "", false, errors.New("--password-stdin read an empty password; pipe the password in, e.g. 'tributary devices add ID --password-stdin < pw.txt'")
		}
		return line, false, nil
	default:
		pw, err := devices.GeneratePassword()
		return pw, true, err
	}
}

func newDevicesAddCmd(rf *devicesRegistryFlags) *cobra.Command {
	var (
		pf           devicesPasswordFlags
		certIdentity bool
		noPassword   bool
		extraTopics  []string
	)
	cmd := &cobra.Command{
		Use:   "add ID",
		Short: "Register a device; without --password or --password-stdin a password is generated and printed once",
		Long: `Register a device. Without --password or --password-stdin a random password is generated and
printed once on standard output (and nothing else is), so it can be captured by a provisioning script:

  PW=$(tributary devices add boiler-7 --data-dir DIR)

Device ids are 1 to 128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit.`,
		Args: devicesExactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if err := devices.CheckDeviceID(id); err != nil {
				return err
			}
			if noPassword && !certIdentity {
				return errors.New("--no-password leaves the device no way to log in; add --cert-identity so it can use a client certificate with CN=" + id)
			}
			for _, f := range extraTopics {
				if err := devices.CheckFilter(f); err != nil {
					return fmt.Errorf("--allow-topic: %w", err)
				}
			}
			var password string
			var generated bool
			if !noPassword {
				var err error
				if password, generated, err = pf.read(cmd); err != nil {
					return err
				}
			}
			reg, err := rf.open(pf.cost)
			if err != nil {
				return err
			}
			err = reg.Add(devices.Device{ID: id, CertIdentity: certIdentity, ExtraTopics: extraTopics}, password)
			switch {
			case errors.Is(err, devices.ErrDeviceExists):
				return fmt.Errorf("device %q already exists in %s; use 'tributary devices passwd %s' to change its password, or 'tributary devices remove %s' first", id, reg.Path(), id, id)
			case err != nil:
				return explainDevicesRegistryError(err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "added device %q to %s; a running edge agent accepts it without a restart\n", id, reg.Path())
			if generated {
				fmt.Fprintf(cmd.ErrOrStderr(), "its generated password follows on standard output; store it now, it is not shown again\n")
				fmt.Fprintln(cmd.OutOrStdout(), password)
			}
			return nil
		},
	}
	pf.register(cmd)
	cmd.Flags().BoolVar(&certIdentity, "cert-identity", false, "also accept a client certificate whose CN is the device id")
	cmd.Flags().BoolVar(&noPassword, "no-password", false, "no password: the device logs in with a client certificate only (needs --cert-identity)")
	cmd.Flags().StringArrayVar(&extraTopics, "allow-topic", nil, "an MQTT topic filter the device may publish to besides its own topics, e.g. for a bridge (repeatable)")
	cmd.MarkFlagsMutuallyExclusive("no-password", "password")
	cmd.MarkFlagsMutuallyExclusive("no-password", "password-stdin")
	return cmd
}

// devicesListRow is the JSON form of a device in 'devices list --format json'; it never holds the hash.
type devicesListRow struct {
	ID           string    `json:"id"`
	Password     bool      `json:"password"`
	CertIdentity bool      `json:"cert_identity"`
	Disabled     bool      `json:"disabled"`
	Created      time.Time `json:"created"`
	ExtraTopics  []string  `json:"extra_topics,omitempty"`
}

func newDevicesListCmd(rf *devicesRegistryFlags) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List registered devices",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "table" && format != "json" {
				return fmt.Errorf("--format %q is not supported; use table or json", format)
			}
			reg, err := rf.open(0)
			if err != nil {
				return err
			}
			list, err := reg.List()
			if err != nil {
				return explainDevicesRegistryError(err)
			}
			out := cmd.OutOrStdout()
			if format == "json" {
				rows := make([]devicesListRow, 0, len(list))
				for _, d := range list {
					rows = append(rows, devicesListRow{d.ID, d.HasPassword(), d.CertIdentity, d.Disabled, d.Created, d.ExtraTopics})
				}
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(rows)
			}
			if len(list) == 0 {
				if _, err := os.Stat(reg.Path()); errors.Is(err, fs.ErrNotExist) {
					fmt.Fprintf(cmd.ErrOrStderr(), "no registry at %s yet (is that the edge agent's data directory?); 'tributary devices add ID' creates it\n", reg.Path())
					return nil
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "no devices in %s; add one with 'tributary devices add ID'\n", reg.Path())
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "DEVICE\tAUTH\tSTATUS\tCREATED\tEXTRA TOPICS")
			for _, d := range list {
				var auth []string
				if d.HasPassword() {
					auth = append(auth, "password")
				}
				if d.CertIdentity {
					auth = append(auth, "cert")
				}
				status := "enabled"
				if d.Disabled {
					status = "disabled"
				}
				extra := strings.Join(d.ExtraTopics, ",")
				if extra == "" {
					extra = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.ID, strings.Join(auth, "+"), status, d.Created.UTC().Format(time.RFC3339), extra)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&format, "format", "table", "output format: table or json")
	return cmd
}

func newDevicesRemoveCmd(rf *devicesRegistryFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a device; a running edge agent refuses it from its next CONNECT or PUBLISH",
		Args:  devicesExactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			reg, err := rf.open(0)
			if err != nil {
				return err
			}
			if err := reg.Remove(args[0]); err != nil {
				return explainDeviceError(err, args[0], reg.Path())
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "removed device %q from %s\n", args[0], reg.Path())
			return nil
		},
	}
}

func newDevicesPasswdCmd(rf *devicesRegistryFlags) *cobra.Command {
	var pf devicesPasswordFlags
	cmd := &cobra.Command{
		Use:   "passwd ID",
		Short: "Set a device's password; without --password or --password-stdin one is generated and printed once",
		Args:  devicesExactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			password, generated, err := pf.read(cmd)
			if err != nil {
				return err
			}
			reg, err := rf.open(pf.cost)
			if err != nil {
				return err
			}
			if err := reg.SetPassword(id, password); err != nil {
				return explainDeviceError(err, id, reg.Path())
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "changed the password of device %q; the old one stops working once the edge agent reloads the registry\n", id)
			if generated {
				fmt.Fprintf(cmd.ErrOrStderr(), "the generated password follows on standard output; store it now, it is not shown again\n")
				fmt.Fprintln(cmd.OutOrStdout(), password)
			}
			return nil
		},
	}
	pf.register(cmd)
	return cmd
}

func newDevicesEnableCmd(rf *devicesRegistryFlags, disable bool) *cobra.Command {
	use, short, done := "enable ID", "Allow a disabled device to connect again", "enabled"
	if disable {
		use, short, done = "disable ID", "Refuse a device without removing its credentials", "disabled"
	}
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  devicesExactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			reg, err := rf.open(0)
			if err != nil {
				return err
			}
			if err := reg.SetDisabled(args[0], disable); err != nil {
				return explainDeviceError(err, args[0], reg.Path())
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "%s device %q\n", done, args[0])
			return nil
		},
	}
}

func explainDeviceError(err error, id, path string) error {
	if errors.Is(err, devices.ErrUnknownDevice) {
		return fmt.Errorf("device %q is not in %s; 'tributary devices list' shows the registered devices", id, path)
	}
	return explainDevicesRegistryError(err)
}

func explainDevicesRegistryError(err error) error {
	if errors.Is(err, devices.ErrRegistryLocked) {
		return fmt.Errorf("%w; another 'tributary devices' command is probably writing it: retry in a moment, or raise --lock-timeout", err)
	}
	return err
}

// devicesExactArgs is cobra.ExactArgs(1) with an error that names the missing argument.
func devicesExactArgs(name string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != 1 {
			return fmt.Errorf("%s needs exactly one %s argument, got %d; see '%s --help'", cmd.Name(), name, len(args), cmd.CommandPath())
		}
		return nil
	}
}
