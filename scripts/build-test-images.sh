#!/usr/bin/env bash
# Builds the images shoal's tests and docs use, with no registry: nothing is
# pulled, every image starts FROM scratch.
#
#   scripts/build-test-images.sh            # shoal-test/busybox:latest and
#       # shoal-test/no-entrypoint:latest (an image whose entrypoint does
#       # not exist: its containers are created but fail to start)
#   scripts/build-test-images.sh --agent BIN
#       # also shoal-test/agent:latest: BIN (a shoal binary) with the shared
#       # libraries it links, plus busybox, for multi-host tests
#
# shoal-test/busybox has a static busybox as /bin/* (sh, sleep, echo, …);
# Debian's busybox-static package provides it (installed when missing and
# we are root).
set -euo pipefail

agent_bin=""
while [ $# -gt 0 ]; do
  case "$1" in
    --agent) agent_bin="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

busybox=/bin/busybox
if ! file_static="$(file -L "$busybox" 2>/dev/null)" || ! grep -q "statically linked" <<<"$file_static"; then
  if [ -x /usr/bin/busybox ] && file -L /usr/bin/busybox | grep -q "statically linked"; then
    busybox=/usr/bin/busybox
  elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static file >/dev/null
    busybox=/bin/busybox
  else
    echo "error: no static busybox; install Debian's busybox-static" >&2
    exit 1
  fi
fi

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT

mkdir -p "$ctx/busybox"
cp "$busybox" "$ctx/busybox/busybox"
cat >"$ctx/busybox/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/bin
CMD ["sh"]
DOCKERFILE
docker build -q -t shoal-test/busybox:latest "$ctx/busybox" >/dev/null
echo "built shoal-test/busybox:latest"

mkdir -p "$ctx/no-entrypoint"
cat >"$ctx/no-entrypoint/Dockerfile" <<'DOCKERFILE'
FROM scratch
ENTRYPOINT ["/bin/not-here"]
DOCKERFILE
docker build -q -t shoal-test/no-entrypoint:latest "$ctx/no-entrypoint" >/dev/null
echo "built shoal-test/no-entrypoint:latest"

if [ -n "$agent_bin" ]; then
  a="$ctx/agent"
  mkdir -p "$a/root/bin" "$a/root/tmp" "$a/root/var/lib/shoal"
  cp "$busybox" "$a/root/bin/busybox"
  cp "$agent_bin" "$a/root/bin/shoal"
  # The binary's shared libraries and loader, at the paths it expects.
  ldd "$agent_bin" | grep -o '/[^ ]*' | sort -u | while read -r lib; do
    mkdir -p "$a/root$(dirname "$lib")"
    cp -L "$lib" "$a/root$lib"
  done
  cat >"$a/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY root/ /
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/bin
ENTRYPOINT ["/bin/shoal"]
DOCKERFILE
  docker build -q -t shoal-test/agent:latest "$a" >/dev/null
  echo "built shoal-test/agent:latest"
fi
