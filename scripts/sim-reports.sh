#!/usr/bin/env bash
# The simulator's reports for a fixed set of seeds and scenarios, to show
# that a change to the code the simulator drives changes no behaviour.
#
#   scripts/sim-reports.sh record [DIR]    write one JSON report per run into DIR
#   scripts/sim-reports.sh compare [DIR]   run again and compare with DIR
#
# DIR defaults to sim/reports (the reports made before the node core was
# introduced). The first run is also compared in CI by
# sim/tests/reports.rs. A report is compared whole, but for `wall_s` and
# `peak_rss_mb` (they measure the machine, not the run). SHOAL_SIM names the
# binary to run (default: target/release/shoal-sim, built first); RUNS
# keeps only the runs whose name matches that regular expression.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-}
dir=${2:-sim/reports}
case "$mode" in
  record|compare) ;;
  *) echo "usage: $0 record|compare [DIR]" >&2; exit 2 ;;
esac

# name|arguments
runs=(
  "100-default-s2-short|--nodes 100 --seed 2 --duration 30 --settle 20"
  "300-default-s1|--nodes 300 --seed 1"
  "300-default-s2|--nodes 300 --seed 2"
  "300-default-s3|--nodes 300 --seed 3"
  "300-loss-s1|--nodes 300 --seed 1 --scenario loss"
  "300-churn-s1|--nodes 300 --seed 1 --scenario churn"
  "300-churn-s2|--nodes 300 --seed 2 --scenario churn"
  "300-partition-s1|--nodes 300 --seed 1 --scenario partition"
  "300-partition-s2|--nodes 300 --seed 2 --scenario partition"
  "300-mass-failure-s1|--nodes 300 --seed 1 --scenario mass-failure"
  "300-jobs-s1|--nodes 300 --seed 1 --scenario jobs"
  "300-join-storm-s1|--nodes 300 --seed 1 --scenario join-storm"
  "300-dc-loss-s1|--nodes 300 --seed 1 --scenario dc-loss"
  "300-warm-s1|--nodes 300 --seed 1 --warm"
  # Recorded with the scenario, not before the node core.
  "300-rolling-deploy-s1|--nodes 300 --seed 1 --scenario rolling-deploy"
  "1000-default-s1|--nodes 1000 --seed 1"
  "1000-default-s2|--nodes 1000 --seed 2"
  "1000-partition-s1|--nodes 1000 --seed 1 --scenario partition"
  "1000-churn-s1|--nodes 1000 --seed 1 --scenario churn"
  "1000-jobs-s1|--nodes 1000 --seed 1 --scenario jobs"
  "1000-warm-s1|--nodes 1000 --seed 1 --warm"
  "10000-scale-jobs-s1|--mode scale --nodes 10000 --seed 1 --scenario jobs"
  "10000-scale-default-s1|--mode scale --nodes 10000 --seed 1"
)

sim=${SHOAL_SIM:-}
if [ -z "$sim" ]; then
  cargo build --release -q -p shoal-sim
  sim=target/release/shoal-sim
fi
filter=${RUNS:-.}

# The report without what measures the machine, keys sorted, one per line.
normalize() {
  python3 -c '
import json, sys
r = json.load(sys.stdin)
for k in ("wall_s", "peak_rss_mb"):
    r.pop(k, None)
print(json.dumps(r, indent=1, sort_keys=True))
'
}

mkdir -p "$dir"
diffs=$(mktemp -d "${TMPDIR:-/tmp}/sim-reports.XXXXXX")
failed=0
for run in "${runs[@]}"; do
  name=${run%%|*}
  args=${run#*|}
  [[ "$name" =~ $filter ]] || continue
  start=$(date +%s)
  # A run whose checks fail exits 1 and still prints its report.
  # shellcheck disable=SC2086
  out=$("$sim" $args --json | normalize) || true
  took=$(( $(date +%s) - start ))
  if [ "$mode" = record ]; then
    printf '%s\n' "$out" > "$dir/$name.json"
    echo "$name: recorded (${took}s)"
  elif [ ! -f "$dir/$name.json" ]; then
    echo "$name: no recorded report in $dir" >&2
    failed=1
  elif diff -u "$dir/$name.json" <(printf '%s\n' "$out") > "$diffs/$name.diff"; then
    echo "$name: same report (${took}s)"
  else
    echo "$name: DIFFERS (${took}s); see $diffs/$name.diff" >&2
    failed=1
  fi
done
exit $failed
