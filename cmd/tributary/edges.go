package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tributary-iot/tributary/sync/central"
	"github.com/tributary-iot/tributary/sync/protocol"
)

func newEdgesCmd() *cobra.Command {
	var centralURL string
	var tokens apiTokenFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "edges --central URL",
		Short: "List the edges forwarding to central, with per-partition lag and gaps",
		Long: `List the edges central knows, one line per edge partition (lane): the next offset central
expects, the end offset the edge last reported, how many records central is behind, when the edge
last called, and whether the lane is stalled (the edge keeps calling but nothing moves).
Ranges the edge reported lost (quota drops, damaged segments) are listed under GAPS. An edge
whose last call central refused (an old or revoked token) has STATE refused and is listed under
REFUSED with what to do.`,
		Example: `  tributary edges --central http://127.0.0.1:7443`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if centralURL == "" {
				return fmt.Errorf("no central: pass --central URL")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(centralURL, "/")+"/v1/edges", nil)
			if err != nil {
				return err
			}
			token, err := tokens.get()
			if err != nil {
				return err
			}
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment}}
			resp, err := client.Do(req)
			if err != nil {
				return fmt.Errorf("ask central: %w", err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				return fmt.Errorf("read central's answer: %w", err)
			}
			if resp.StatusCode != http.StatusOK {
				var e protocol.Error
				json.Unmarshal(body, &e)
				return fmt.Errorf("central answered %s: %s", resp.Status, e.Error)
			}
			if asJSON {
				_, err := cmd.OutOrStdout().Write(body)
				return err
			}
			var v central.EdgesView
			if err := json.Unmarshal(body, &v); err != nil {
				return fmt.Errorf("decode central's answer: %w", err)
			}
			return printEdges(cmd.OutOrStdout(), v)
		},
	}
	cmd.Flags().StringVar(&centralURL, "central", "", "central's URL, e.g. http://127.0.0.1:7443")
	tokens.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print central's answer as JSON")
	return cmd
}

func printEdges(w io.Writer, v central.EdgesView) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "EDGE\tSTATE\tSTREAM\tPARTITION\tNEXT\tEDGE-END\tBEHIND\tLAST-SEEN\tSTALLED\tGAP-RECORDS")
	state := map[string]string{}
	for _, e := range v.Edges {
		state[e.ID] = "active"
		if e.Revoked {
			state[e.ID] = "revoked"
		}
	}
	for _, r := range v.Refused {
		if r.Refusing && state[r.Edge] == "active" {
			state[r.Edge] = "refused"
		}
	}
	shown := map[string]bool{}
	now := time.Now()
	for _, l := range v.Lanes {
		shown[l.Edge] = true
		seen := "never"
		if !l.LastSeen.IsZero() {
			seen = now.Sub(l.LastSeen).Round(time.Second).String() + " ago"
		}
		st := state[l.Edge]
		if st == "" {
			st = "unknown"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%v\t%d\n", l.Edge, st, l.Stream, l.Partition, l.Next, l.EdgeEnd,
			l.Behind, seen, l.Stalled, l.GapsRecords)
	}
	for _, e := range v.Edges {
		if !shown[e.ID] {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\tnever\tfalse\t0\n", e.ID, state[e.ID])
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(v.Refused) > 0 {
		fmt.Fprintln(w, "\nREFUSED (calls central answered 401 since it started)")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "EDGE\tCALLS\tREASON\tLAST-REFUSED\tLAST-ACCEPTED\tNOW")
		for _, r := range v.Refused {
			accepted, now := "never", "accepted again"
			if !r.LastAccepted.IsZero() {
				accepted = time.Since(r.LastAccepted).Round(time.Second).String() + " ago"
			}
			if r.Refusing {
				now = "refused"
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s ago\t%s\t%s\n", r.Edge, r.Refused, r.Reason,
				time.Since(r.LastRefused).Round(time.Second), accepted, now)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(w, "An edge refused for wrong_token uses an old token: put its current token in the edge's token file (a running edge\n"+
			"reads it again within seconds). If the token is lost: `tributary central edges add ID --rotate`, then the same.")
	}
	if len(v.Gaps) > 0 {
		fmt.Fprintln(w, "\nGAPS")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "EDGE\tSTREAM\tPARTITION\tFROM\tTO\tRECORDS\tREASON\tRECEIVED")
		for _, g := range v.Gaps {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", g.Edge, g.Stream, g.Partition, g.From, g.To, g.To-g.From,
				g.Reason, g.Received.Format(time.RFC3339))
		}
		return tw.Flush()
	}
	return nil
}
