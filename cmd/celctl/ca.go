package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/celluster/celluster/core/identity"
)

// caCmd manages a trust domain's CA on local files: no node is involved.
func caCmd(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Create a trust domain's CA, issue node certificates and join tokens (local files)",
	}
	cmd.AddCommand(caInitCmd(o), caIssueCmd(o), caTokenCmd(o))
	return cmd
}

func caInitCmd(o *options) *cobra.Command {
	var td, out string
	c := &cobra.Command{
		Use:   "init --trust-domain TD --out DIR",
		Short: "Create a CA for a trust domain: DIR/ca.crt and DIR/ca.key (0600)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := spiffeid.TrustDomainFromString(td)
			if err != nil {
				return fmt.Errorf("--trust-domain %q: %w", td, err)
			}
			ca, err := identity.InitCA(out, d, identity.CAOptions{})
			if err != nil {
				return err
			}
			fmt.Fprintf(o.out, "CA for spiffe://%s in %s (valid until %s)\n", ca.TrustDomain(), out, ca.Certificate().NotAfter.Format(time.RFC3339))
			return nil
		},
	}
	c.Flags().StringVar(&td, "trust-domain", "", "the trust domain, e.g. example.org")
	c.Flags().StringVar(&out, "out", "", "directory for ca.crt and ca.key (created 0700)")
	_ = c.MarkFlagRequired("trust-domain")
	_ = c.MarkFlagRequired("out")
	return c
}

func caIssueCmd(o *options) *cobra.Command {
	var caDir, out string
	var ttl time.Duration
	c := &cobra.Command{
		Use:   "issue node NAME --ca DIR --out DIR",
		Short: "Issue a node certificate (only URI SAN spiffe://TD/node/NAME) and key: DIR/NAME.crt, DIR/NAME.key (0600)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] != "node" {
				return fmt.Errorf("can issue node certificates only, not %q", args[0])
			}
			name := args[1]
			ca, err := identity.LoadCA(caDir, identity.CAOptions{})
			if err != nil {
				return err
			}
			key, err := identity.NewKey()
			if err != nil {
				return err
			}
			chain, err := ca.IssueNode(name, key.Public(), ttl)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(out, 0o700); err != nil {
				return err
			}
			if err := identity.WriteKey(filepath.Join(out, name+".key"), key); err != nil {
				return err
			}
			if err := identity.WriteChain(filepath.Join(out, name+".crt"), chain); err != nil {
				return err
			}
			fmt.Fprintf(o.out, "issued spiffe://%s/node/%s: %s (valid until %s), key %s\n", ca.TrustDomain(), name,
				filepath.Join(out, name+".crt"), chain[0].NotAfter.Format(time.RFC3339), filepath.Join(out, name+".key"))
			return nil
		},
	}
	c.Flags().StringVar(&caDir, "ca", "", "the CA directory (from ca init)")
	c.Flags().StringVar(&out, "out", ".", "directory for NAME.crt and NAME.key")
	c.Flags().DurationVar(&ttl, "ttl", identity.DefaultNodeTTL, "certificate lifetime (nodes renew before expiry)")
	_ = c.MarkFlagRequired("ca")
	return c
}

func caTokenCmd(o *options) *cobra.Command {
	var caDir string
	var ttl time.Duration
	c := &cobra.Command{
		Use:   "token NODE --ca DIR",
		Short: "Issue a short-lived, single-use join token for a new node (celcore --join ADDR --token T)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ca, err := identity.LoadCA(caDir, identity.CAOptions{})
			if err != nil {
				return err
			}
			tok, err := ca.NewJoinToken(args[0], ttl)
			if err != nil {
				return err
			}
			fmt.Fprintln(o.out, tok)
			return nil
		},
	}
	c.Flags().StringVar(&caDir, "ca", "", "the CA directory (from ca init)")
	c.Flags().DurationVar(&ttl, "ttl", identity.DefaultJoinTokenTTL, "how long the token may be used")
	_ = c.MarkFlagRequired("ca")
	return c
}
