package cli

import (
	"context"
	"fmt"
	"strings"
)

const completionScript = `# bash completion for faasvm: source <(faasvm completion bash)
_faasvm() {
  local cur=${COMP_WORDS[COMP_CWORD]}
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "%s" -- "$cur"))
    return
  fi
  case "${COMP_WORDS[1]}" in
    status|invoke|logs)
      if [[ "$cur" != -* ]]; then
        COMPREPLY=($(compgen -W "$(faasvm ls --json 2>/dev/null | tr ',' '\n' | sed -n 's/.*"name":"\([^"]*\)".*/\1/p')" -- "$cur"))
      fi ;;
    new)
      case "${COMP_WORDS[COMP_CWORD-1]}" in
        --runtime|-r) COMPREPLY=($(compgen -W "python3 node bash" -- "$cur")) ;;
      esac ;;
  esac
}
complete -o default -F _faasvm faasvm
`

func runCompletion(_ context.Context, env *Env, args []string) error {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help") {
		fmt.Fprintln(env.Stdout, "Usage:\n  faasvm completion bash\n\nPrints a bash completion script: source <(faasvm completion bash)")
		return errHelp
	}
	if len(args) != 1 || args[0] != "bash" {
		return usagef("want: faasvm completion bash")
	}
	var names []string
	for _, c := range commands() {
		names = append(names, c.name)
	}
	_, err := fmt.Fprintf(env.Stdout, completionScript, strings.Join(names, " "))
	return err
}
