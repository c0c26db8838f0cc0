/**
 * mkctl completion bash|zsh: a completion script for the shell, made from the command table, so
 * it lists exactly the commands this mkctl has. Instance names are completed by asking
 * `mkctl list --json` when a command takes one.
 */
import { parseArgs } from 'node:util';
import { type CliIo, type Command, EXIT, UsageError } from '../command';

const HELP = `usage: mkctl completion bash|zsh

Prints a completion script for the shell: command names, their subcommands, the common options
and, after a command that takes an instance, the names of the instances (from mkctl list --json,
on the backend the command line selects).

  bash:  source <(mkctl completion bash)       (or save it in ~/.local/share/bash-completion/completions/mkctl)
  zsh:   source <(mkctl completion zsh)        (after compinit)
`;

/** Commands whose first argument is an instance name. */
const TAKES_NAME = ['show', 'dump', 'probe', 'console', 'exec', 'update', 'load', 'start', 'stop', 'restart', 'unload', 'delete'];
const COMMON = ['--help', '--json', '--simulate', '--state-dir', '--lock'];

function words(paths: readonly (readonly string[])[]): { top: string[]; sub: Record<string, string[]> } {
  const top = [...new Set(paths.map((p) => p[0]!))];
  const sub: Record<string, string[]> = {};
  for (const p of paths) if (p.length > 1) (sub[p[0]!] ??= []).push(p[1]!);
  return { top, sub };
}

export function bashScript(paths: readonly (readonly string[])[]): string {
  const { top, sub } = words(paths);
  const cases = Object.entries(sub)
    .map(([w, s]) => `    ${w}) COMPREPLY=($(compgen -W "${s.join(' ')}" -- "$cur")); return ;;`)
    .join('\n');
  return `# mkctl completion for bash (mkctl completion bash)
_mkctl() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" cmd="\${COMP_WORDS[1]}"
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "${top.join(' ')}" -- "$cur")); return
  fi
  if [ "$COMP_CWORD" -eq 2 ]; then
    case "$cmd" in
${cases}
    esac
  fi
  case "$cur" in
    -*) COMPREPLY=($(compgen -W "${COMMON.join(' ')}" -- "$cur")); return ;;
  esac
  case " ${TAKES_NAME.join(' ')} " in
    *" $cmd "*)
      if [ "$COMP_CWORD" -eq 2 ]; then
        local names
        names=$("\${COMP_WORDS[0]}" list --json 2>/dev/null | sed -n 's/^ *"name": "\\(.*\\)",\\{0,1\\}$/\\1/p')
        COMPREPLY=($(compgen -W "$names" -- "$cur"))
      fi ;;
  esac
}
complete -o default -F _mkctl mkctl
`;
}

export function zshScript(paths: readonly (readonly string[])[]): string {
  return `#compdef mkctl
# mkctl completion for zsh (mkctl completion zsh), through bash's
autoload -U +X bashcompinit && bashcompinit
${bashScript(paths)}`;
}

export const completion: Command = {
  path: ['completion'],
  summary: 'a completion script for bash or zsh',
  help: HELP,
  async run(args: string[], io: CliIo): Promise<number> {
    const { positionals } = parseArgs({ args, options: {}, allowPositionals: true, strict: true });
    const shell = positionals[0];
    if (positionals.length !== 1 || (shell !== 'bash' && shell !== 'zsh')) throw new UsageError('name the shell: mkctl completion bash, or mkctl completion zsh');
    const { COMMANDS } = await import('../mkctl');
    const paths = [...COMMANDS.map((c) => c.path), ['help']];
    io.stdout.write(shell === 'bash' ? bashScript(paths) : zshScript(paths));
    return EXIT.ok;
  },
};
