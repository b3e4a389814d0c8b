"""Shell completion of the ``pycatar`` command: verbs first, option names after a ``-``, file names
everywhere else.

``eval "$(_PYCATAR_COMPLETE=bash_source pycatar)"`` (zsh: ``zsh_source``) defines a completion
function that runs ``_PYCATAR_COMPLETE=complete COMP_CWORD=N pycatar WORD...`` with the words of the
line after the command; that prints one candidate a line, ``plain,WORD`` or ``file,PREFIX`` (the shell
completes file names itself).
"""

from __future__ import annotations

import os
import sys


BASH_SOURCE = r"""_pycatar_complete() {
    local line words
    COMPREPLY=()
    words=("${COMP_WORDS[@]:1}")
    while IFS= read -r line; do
        case "$line" in
            plain,*) COMPREPLY+=("${line#plain,}") ;;
            file,*) compopt -o filenames 2>/dev/null
                    while IFS= read -r f; do COMPREPLY+=("$f"); done < <(compgen -f -- "${line#file,}") ;;
        esac
    done < <(_PYCATAR_COMPLETE=complete COMP_CWORD="$COMP_CWORD" "$1" "${words[@]}")
}
complete -F _pycatar_complete pycatar
"""

ZSH_SOURCE = r"""#compdef pycatar
_pycatar() {
    local line
    local -a plain
    for line in "${(@f)$(_PYCATAR_COMPLETE=complete COMP_CWORD=$((CURRENT - 1)) pycatar "${(@)words[2,-1]}")}"; do
        case "$line" in
            plain,*) plain+=("${line#plain,}") ;;
            file,*) _files ;;
        esac
    done
    (( ${#plain} )) && compadd -- "${plain[@]}"
}
compdef _pycatar pycatar
"""


def candidates(words: list[str], cword: int, options: dict, verbs) -> list[str]:
    """What completes word ``cword`` (1: the first after the command) of ``words`` (the words after the
    command, as the shell split them: bash makes ``--store=x`` three words, ``--store``, ``=``, ``x``);
    ``options``: {name: whether it takes a value} of the command's options, ``verbs`` its verbs."""
    current = words[cword - 1] if 0 < cword <= len(words) else ""
    before = words[:max(cword - 1, 0)]
    if current == "=" or before[-1:] == ["="]:  # the value of --option=...
        return [f"file,{'' if current == '=' else current}"]
    if current.startswith("-"):
        return [f"plain,{name}" for name in options if name.startswith(current)]
    i = 0
    while i < len(before):
        word = before[i]
        if not word.startswith("-"):
            return [f"file,{current}"]  # the verb is given: its arguments are files
        if not options.get(word):  # a flag, --store=x in one word, or unknown
            i += 1
        elif i + 1 == len(before):
            return [f"file,{current}"]  # the value of --store ...
        else:
            i += 3 if before[i + 1] == "=" else 2  # --store x, or bash's --store = x
    return [f"plain,{verb}" for verb in verbs if verb.startswith(current)]


def complete(mode: str, words: list[str], options: dict, verbs) -> int:
    """``_PYCATAR_COMPLETE=mode pycatar ...``: print the shell's script (bash_source, zsh_source) or the
    candidates for the words given (complete, with $COMP_CWORD; ``options`` and ``verbs`` as
    :func:`candidates` takes them)."""
    if mode == "bash_source":
        sys.stdout.write(BASH_SOURCE)
    elif mode == "zsh_source":
        sys.stdout.write(ZSH_SOURCE)
    elif mode == "complete":
        cword = os.environ.get("COMP_CWORD", "")
        sys.stdout.write("".join(line + "\n" for line in candidates(words, int(cword) if cword.isdigit() else 0, options, verbs)))
    else:
        sys.stderr.write(f"_PYCATAR_COMPLETE: unknown mode {mode!r} (bash_source, zsh_source)\n")
        return 1
    return 0
