#!/usr/bin/env bash
# Fails when `cargo build -p strix-tools` would build a third-party crate that
# `cargo test --workspace` builds with other features (or other dependencies):
# then the test command compiles tract and the proc-macros twice (about 7 of
# CI's minutes). The fix is in tools/Cargo.toml's build-time-only
# dependencies: ask there for the features this prints.
#
# Compares cargo's unit graphs (`--unit-graph`, unstable: RUSTC_BOOTSTRAP=1
# lets the stable cargo print it; nothing is built).
# Usage: scripts/check-features.sh
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
graph() { RUSTC_BOOTSTRAP=1 cargo "$@" --release --unit-graph -Z unstable-options >"$tmp/$1.json"; }
graph build -p strix-tools
graph test --workspace --no-run
python3 - "$tmp/build.json" "$tmp/test.json" <<'PY'
import hashlib, json, sys

def units(path):
    us = json.load(open(path))["units"]
    memo = {}

    def key(i):  # a unit and, recursively, everything it is built from
        if i not in memo:
            u = us[i]
            s = json.dumps([u["pkg_id"], u["target"]["name"], u["target"]["kind"], u["mode"],
                            u["features"], u["profile"], u.get("platform"),
                            sorted(key(d["index"]) for d in u["dependencies"])], sort_keys=True)
            memo[i] = hashlib.sha1(s.encode()).hexdigest()
        return memo[i]

    return us, [key(i) for i in range(len(us))]

tools, tk = units(sys.argv[1])
ws, wk = units(sys.argv[2])
shared = set(wk)
bad = []
for i, u in enumerate(tools):
    name = u["pkg_id"].split("#")[-1]
    if tk[i] in shared or name.startswith("strix-"):
        continue
    # Report the units that differ themselves, not those that only inherit it.
    if all(tk[d["index"]] in shared for d in u["dependencies"]):
        side = "host" if u["profile"]["opt_level"] == "0" else "target"
        other = sorted({tuple(w["features"]) for w in ws if w["pkg_id"] == u["pkg_id"]
                        and w["target"]["name"] == u["target"]["name"]})
        bad.append(f"  {name} ({side}, {u['mode']}): features {u['features']}; "
                   f"the workspace's test build has {[list(f) for f in other]}")
if bad:
    print("check-features: `cargo build -p strix-tools` resolves these crates unlike "
          "`cargo test --workspace`\n(so tract and everything above them would be built twice; "
          "see tools/Cargo.toml):", *bad, sep="\n")
    sys.exit(1)
print(f"check-features: the {len(tools)} units of `cargo build -p strix-tools` are all "
      "in `cargo test --workspace` (strix crates aside)")
PY
