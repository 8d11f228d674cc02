#!/usr/bin/env bash
# Seeds the fuzz corpora (fuzz/corpus/TARGET, not in git) from the repo:
# the library's expected job files for job_spec, its job templates (with
# empty options) for package_render, the trigger files of docs/triggers.md
# for trigger_spec. gossip_datagram and rpc_frame start empty.
#   scripts/fuzz-seeds.sh && cd fuzz && cargo +nightly fuzz run -O job_spec corpus/job_spec
set -euo pipefail
cd "$(dirname "$0")/.."
c=fuzz/corpus
mkdir -p "$c"/{gossip_datagram,rpc_frame,job_spec,trigger_spec,package_render}
i=0
for f in package/library/*/tests/*/*.toml; do
  i=$((i + 1)); cp "$f" "$c/job_spec/seed$i"
done
i=0
for f in package/library/*/jobs/*; do
  i=$((i + 1)); { cat "$f"; printf '\0{}'; } > "$c/package_render/seed$i"
done
python3 - "$c/trigger_spec" <<'PY'
import re, sys
text = open("docs/triggers.md").read()
for i, block in enumerate(re.findall(r"```toml trigger\n(.*?)```", text, re.S)):
    open(f"{sys.argv[1]}/seed{i}", "w").write(block)
PY
echo "seeded: $(ls "$c/job_spec" | wc -l) job_spec, $(ls "$c/package_render" | wc -l) package_render, $(ls "$c/trigger_spec" | wc -l) trigger_spec (with what was there)"
