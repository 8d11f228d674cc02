#!/usr/bin/env bash
# Lists what shoal's tests may leave behind, one item a line:
#   process PID CMD      a process that names a test dir (shoal-test-*, or
#                        shoal-dev-*) in its command line, environment or
#                        working dir: agents, tasks, log shippers
#   container ID NAME    a container labelled shoal.node (made by an agent),
#                        or one of the multi-host test's (shoal-mh*)
#   network NAME         a Docker network of the multi-host test (shoal-mh*)
#   tempdir PATH         a test's temporary dir ($TMPDIR/shoal-test-*, or
#                        shoal-dev-*)
#   netns NAME           a network namespace named shoal* (tests that make
#                        namespaces name them so)
#
#   scripts/leftovers.sh > before            # what is there now
#   scripts/leftovers.sh --since before      # fails listing what is new
#
# .ci/run records the list before the tests and checks it after them, so
# that only what the tests left counts (not what an earlier run on the same
# machine did).
set -euo pipefail

since=""
while [ $# -gt 0 ]; do
  case "$1" in
    --since) since="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

tmp="${TMPDIR:-/tmp}"
tmp="${tmp%/}"

list() {
  local self=$$ pid dir cwd text cmd
  for dir in /proc/[0-9]*; do
    pid="${dir#/proc/}"
    [ "$pid" = "$self" ] && continue
    # Zombies hold nothing; they go with their parent.
    if grep -q '^[^)]*) Z' "$dir/stat" 2>/dev/null; then continue; fi
    cwd="$(readlink "$dir/cwd" 2>/dev/null || true)"
    # A process may end while it is read: errors are not news.
    text="$(
      tr '\0' '\n' 2>/dev/null <"$dir/cmdline"
      tr '\0' '\n' 2>/dev/null <"$dir/environ"
      echo "$cwd"
    )" || true
    if grep -q -e "$tmp/shoal-test-" -e "$tmp/shoal-dev-" <<<"$text"; then
      cmd="$(tr '\0' ' ' 2>/dev/null <"$dir/cmdline" || true)"
      echo "process $pid ${cmd:0:160}"
    fi
  done
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    docker ps -a --filter label=shoal.node --format 'container {{.ID}} {{.Names}}'
    docker ps -a --filter name=shoal-mh --format 'container {{.ID}} {{.Names}}'
    docker network ls --filter name=shoal-mh --format 'network {{.Name}}'
  fi
  for d in "$tmp"/shoal-test-* "$tmp"/shoal-dev-*; do
    [ -e "$d" ] && echo "tempdir $d"
  done
  if command -v ip >/dev/null; then
    ip netns list 2>/dev/null | awk '$1 ~ /^shoal/ {print "netns " $1}'
  fi
  return 0
}

now="$(list | sort -u)"
if [ -z "$since" ]; then
  [ -n "$now" ] && printf '%s\n' "$now"
  exit 0
fi
if [ ! -r "$since" ]; then
  echo "error: cannot read $since (make it with: scripts/leftovers.sh > FILE)" >&2
  exit 2
fi
new="$(comm -13 <(sort -u "$since") <(printf '%s\n' "$now" | sed '/^$/d'))"
if [ -n "$new" ]; then
  echo "error: the tests left these behind (kill or remove them; a test must clean up even when it fails):" >&2
  printf '%s\n' "$new" | sed 's/^/  /' >&2
  exit 1
fi
echo "nothing left behind"
