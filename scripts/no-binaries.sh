#!/usr/bin/env bash
# Fails when a tracked file is a build output: an executable or object file
# (ELF, Mach-O, PE), a Go archive, or a coverage profile. CI runs it first.
set -euo pipefail
cd "$(dirname "$0")/.."
bad=0
while IFS= read -r -d '' f; do
	[ -f "$f" ] || continue
	case "$f" in
	*.out | *.test | *.prof | *.exe)
		echo "tracked build output: $f"
		bad=1
		continue
		;;
	esac
	magic=$(head -c 4 "$f" | od -An -tx1 | tr -d ' \n')
	case "$magic" in
	7f454c46 | cffaedfe | cefaedfe | feedface | feedfacf | 4d5a*)
		echo "tracked binary: $f ($(file -b "$f" 2>/dev/null || echo "magic $magic"))"
		bad=1
		;;
	esac
done < <(git ls-files -z)
exit "$bad"
