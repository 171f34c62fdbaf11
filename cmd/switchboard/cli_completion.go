package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
)

// topCommands are the commands outside the client table, for completion.
var topCommands = []string{"dev", "connect", "demo", "health", "tls", "bootstrap", "version", "help"}

// commonFlagList is every common flag as completion offers it.
func commonFlagList() []string {
	var fs flag.FlagSet
	var c clientConfig
	c.register(&fs)
	var out []string
	fs.VisitAll(func(f *flag.Flag) {
		if len(f.Name) == 1 {
			out = append(out, "-"+f.Name)
		} else {
			out = append(out, "--"+f.Name)
		}
	})
	sort.Strings(out)
	return out
}

func runCompletion(_ context.Context, args []string, stdout, stderr io.Writer) error {
	sh, rest, err := subcommand("completion", args, "bash", "zsh")
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", rest[0])}
	}
	var cmds []string
	subs := map[string][]string{}
	for _, c := range cliCommands {
		cmds = append(cmds, c.name)
		if len(c.subs) > 0 {
			subs[c.name] = c.subs
		}
	}
	cmds = append(cmds, topCommands...)
	sort.Strings(cmds)
	subs["tls"] = []string{"ca", "cert"}
	names := make([]string, 0, len(subs))
	for k := range subs {
		names = append(names, k)
	}
	sort.Strings(names)
	flags := strings.Join(commonFlagList(), " ")

	if sh == "zsh" {
		// zsh runs the bash function through bashcompinit.
		fmt.Fprintln(stdout, "#compdef switchboard")
		fmt.Fprintln(stdout, "autoload -U +X bashcompinit && bashcompinit")
	}
	fmt.Fprintf(stdout, "# switchboard completion (%s); load with: source <(switchboard completion %s)\n", sh, sh)
	fmt.Fprintln(stdout, "_switchboard() {")
	fmt.Fprintln(stdout, `  local cur="${COMP_WORDS[COMP_CWORD]}"`)
	fmt.Fprintln(stdout, `  if [[ $COMP_CWORD -eq 1 ]]; then`)
	fmt.Fprintf(stdout, "    COMPREPLY=($(compgen -W %q -- \"$cur\")); return\n", strings.Join(cmds, " "))
	fmt.Fprintln(stdout, "  fi")
	fmt.Fprintln(stdout, `  if [[ $cur == -* ]]; then`)
	fmt.Fprintf(stdout, "    COMPREPLY=($(compgen -W %q -- \"$cur\")); return\n", flags)
	fmt.Fprintln(stdout, "  fi")
	fmt.Fprintln(stdout, `  if [[ $COMP_CWORD -eq 2 ]]; then`)
	fmt.Fprintln(stdout, `    case "${COMP_WORDS[1]}" in`)
	for _, n := range names {
		fmt.Fprintf(stdout, "      %s) COMPREPLY=($(compgen -W %q -- \"$cur\")); return;;\n", n, strings.Join(subs[n], " "))
	}
	fmt.Fprintln(stdout, "    esac")
	fmt.Fprintln(stdout, "  fi")
	// Service names come from the registry itself, when it answers.
	fmt.Fprintln(stdout, `  case "${COMP_WORDS[1]}" in`)
	fmt.Fprintln(stdout, `    instances|pick|watch|deregister|register|policy|health)`)
	fmt.Fprintln(stdout, `      COMPREPLY=($(compgen -W "$(switchboard services --timeout 1s 2>/dev/null | awk 'NR>1{print $1}')" -- "$cur"));;`)
	fmt.Fprintln(stdout, "  esac")
	fmt.Fprintln(stdout, "}")
	fmt.Fprintln(stdout, "complete -F _switchboard switchboard")
	return nil
}
