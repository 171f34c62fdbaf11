// Package config binds a service's command-line flags to their SWITCHBOARD_*
// environment twins: --grpc-addr is also SWITCHBOARD_GRPC_ADDR. A flag given
// on the command line wins over its environment variable, which wins over the
// flag's default.
package config

import (
	"flag"
	"fmt"
	"strings"
)

// Prefix starts every environment twin.
const Prefix = "SWITCHBOARD_"

// LookupFunc reads one environment variable, like os.LookupEnv.
type LookupFunc func(key string) (string, bool)

// NoEnv is a LookupFunc that finds nothing; use it to ignore the environment
// (several services in one process must not share SWITCHBOARD_GRPC_ADDR).
func NoEnv(string) (string, bool) { return "", false }

// EnvName returns the environment twin of a flag name.
func EnvName(flagName string) string {
	return Prefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Parse parses args into fs, then sets every flag that was not on the command
// line from its environment twin, when lookup finds one. An invalid
// environment value is an error naming the variable.
func Parse(fs *flag.FlagSet, args []string, lookup LookupFunc) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || set[f.Name] {
			return
		}
		name := EnvName(f.Name)
		v, ok := lookup(name)
		if !ok {
			return
		}
		if e := fs.Set(f.Name, v); e != nil {
			err = fmt.Errorf("%s=%q: %w", name, v, e)
		}
	})
	return err
}
