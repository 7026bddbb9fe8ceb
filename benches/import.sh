# shellcheck shell=bash
# shellcheck disable=SC2154 # set by compare.sh, which sources this
# Sourced by benches/compare.sh (uses its daemon, `cli`, `now`/`since`, $image,
# $size_mib, $work). Issue 16's row: import (glance-direct: stage, then import)
# against a direct PUT of the same file to the same Glance (the bed's import
# Glance, clouds bench-import and bench-direct: charm-import with
# image_upload_method import and direct), alternating, BENCH_IMPORT_RUNS (default
# 3) each: medians and their ratio.

import_runs=${BENCH_IMPORT_RUNS:-3}
echo "== import (glance-direct) against a direct PUT of $size_mib MiB, same Glance, $import_runs runs each"
: >"$work/import-times"
for _ in $(seq "$import_runs"); do
  for how in direct import; do
    t=$(now)
    cli upload --base jammy --app-name "bench-$how" --arch x64 --num-revisions 1 \
      --src-path "$image" --cloud "bench-$how" >/dev/null
    echo "$how $(since "$t")" >>"$work/import-times"
  done
done
import_median() { awk -v h="$1" '$1 == h {print $2}' "$work/import-times" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
awk -v d="$(import_median direct)" -v i="$(import_median import)" 'BEGIN {
  printf "%-44s%7.2f s\n", "direct PUT (median):", d
  printf "%-44s%7.2f s\n", "import, glance-direct (median):", i
  printf "%-44s%7.2f\n", "  import / direct:", i / d }'
