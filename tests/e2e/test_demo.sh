#!/usr/bin/env bash
# versync demo: runs to the end (it checks itself that each slave equals the master row for
# row, by a digest of every row and type) and removes its temporary files.
source "$(dirname "$0")/lib.sh" "$1"

output=$(timeout 120 "$VERSYNC" demo 2>&1)
status=$?
echo "$output"
check "the demo exits 0" test "$status" == 0
check "every step converged" test "$(grep -c 'slave matches master row for row' <<<"$output")" == 7
folder=$(sed -n 's/^versync demo in //p' <<<"$output")
check "the demo removed its temporary folder" test -n "$folder" -a ! -e "$folder"
finish
