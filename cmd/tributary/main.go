// Command tributary is the one binary of Tributary: the edge agent, the central node, the consumer,
// the device registry, the log inspector and the demo, each a subcommand.
//
// This file only wires subcommands together: each lives in its own file, and newRootCmd lists them.
package main

import (
	"errors"
	"fmt"
	"os"

	// cobra gives every subcommand --help, flag parsing and usage errors the way users expect
	// from tools such as kubectl and etcdctl.
	"github.com/spf13/cobra"
)

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "tributary",
		Short: "Collect device readings at the edge and deliver them, in order and exactly once, to a central node",
		Long: `Tributary collects sensor readings from devices over MQTT at an edge gateway, keeps them in a
durable, device-keyed, partitioned log, and forwards them in order, through outages, to a central node
where teams consume one merged stream.

Start with "tributary demo" to see the whole flow in one process.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newEdgeCmd(),    // edge.go: the edge node
		newCentralCmd(), // central.go: the central node, and its edges admin
		newConsumeCmd(), // consume.go: read central's merged stream
		newDevicesCmd(), // devices.go: the edge's device registry
		newEdgesCmd(),   // edges.go: the edges view at central
		newInspectCmd(), // inspect.go: a log directory, offline or live
		newDemoCmd(),    // demo.go: everything in one process
		newVersionCmd(), // version.go
	)
	return root
}

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "tributary: %v\n", err)
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}
