#!/usr/bin/env bash
# Runs the README's first-screen commands as written, so they cannot drift:
# the first ```sh block of README.md must hold exactly two commands, the
# second being the test command (this script is part of it, so that one is
# only checked for existence); the first (the demo) is run verbatim and must
# exit 0 and print a result for every bundled model.
#
# Usage: scripts/check-readme.sh [--help-only]   (--help-only: run the first
#        command with `--help` appended instead of the whole demo)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-full}

mapfile -t cmds < <(awk '/^```sh$/ { inb = 1; next } inb && /^```$/ { exit } inb' README.md |
    sed -E 's/[[:space:]]+#.*$//; /^[[:space:]]*$/d')
if ((${#cmds[@]} != 2)); then
    echo "check-readme: the README's first sh block has ${#cmds[@]} commands, expected 2:" >&2
    printf '  %s\n' "${cmds[@]}" >&2
    exit 1
fi
demo=${cmds[0]} test_cmd=${cmds[1]}
[[ -x ${test_cmd%% *} ]] || { echo "check-readme: test command '$test_cmd' is not an executable file" >&2; exit 1; }
[[ $test_cmd == scripts/test.sh ]] || { echo "check-readme: test command '$test_cmd' is not scripts/test.sh" >&2; exit 1; }

if [[ $mode == --help-only ]]; then
    echo "check-readme: $demo --help"
    bash -c "$demo --help" >/dev/null
    exit 0
fi
echo "check-readme: $demo"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$SECONDS
if ! bash -c "$demo" >"$log" 2>&1; then
    tail -30 "$log" >&2
    echo "check-readme: FAILED: '$demo'" >&2
    exit 1
fi
# The demo names each model it ran; all four bundled ones must be there.
for m in FastestDet UltraFace VWW KWS; do
    grep -qi "$m" "$log" || { cat "$log" >&2; echo "check-readme: the demo printed nothing for $m" >&2; exit 1; }
done
echo "check-readme: the demo ran as written in $((SECONDS - start)) s"
