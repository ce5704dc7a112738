#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time, built in release
# mode with debug assertions (overflow checks) and AddressSanitizer. Fails
# (exit 1) naming the target and the saved input on any crash, timeout or
# out-of-memory. Prints a visible "SKIP fuzz: <reason>" and exits 0 when the
# nightly toolchain or cargo-fuzz cannot be installed (e.g. offline).
#
# Usage: scripts/fuzz.sh [--runtime-only] [SECONDS_PER_TARGET]   (default 45)
#        --runtime-only: only the runtime's targets (strix_load_run,
#          strix_load_run_sealed, capi, wav), built without the compiler and
#          strixd (fuzz/Cargo.toml features): a fraction of the sanitizer
#          build; the test command uses it
#        STRIX_FUZZ_TARGETS="capi wav" scripts/fuzz.sh 600
#        STRIX_FUZZ_RUNS=3000 STRIX_FUZZ_SEED=1 scripts/fuzz.sh 60
#          (the test command's form: a fixed seed and at most N inputs per
#          target, the seconds only a cap, so a run on the committed seeds is
#          repeatable: what passes here passes in CI)
#        STRIX_FUZZ_SANITIZER=none scripts/fuzz.sh 3600
#          (no ASan: overflow checks and debug assertions only, 2-4x the
#          executions per second; the form of the long campaign runs)
# Long runs and reproducing a crash: fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

features=()
san=${STRIX_FUZZ_SANITIZER:-address}
case "$san" in address | none) ;; *) echo "STRIX_FUZZ_SANITIZER must be address or none, not '$san'" >&2; exit 2 ;; esac
features+=(-s "$san")
runtime_only=
if [ "${1:-}" = --runtime-only ]; then
  runtime_only=1
  features+=(--no-default-features)
  shift
fi
secs=${1:-45}
case "$secs" in '' | *[!0-9]*) echo "usage: $0 [SECONDS_PER_TARGET]" >&2; exit 2 ;; esac

skip() {
  echo "SKIP fuzz: $*"
  exit 0
}

command -v rustup >/dev/null 2>&1 || skip "rustup not found (the nightly toolchain cannot be installed)"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "== installing the nightly toolchain (minimal profile)"
  rustup toolchain install nightly --profile minimal >/dev/null 2>&1 ||
    skip "cannot install the nightly toolchain (offline?)"
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install --locked cargo-fuzz >/dev/null 2>&1 || skip "cannot install cargo-fuzz (offline?)"
fi

cd fuzz
echo "== cargo +nightly fuzz build -O --debug-assertions (sanitizer: $san)"
cargo +nightly fuzz build -O --debug-assertions "${features[@]}"

if [ -n "${STRIX_FUZZ_TARGETS:-}" ]; then
  targets=$STRIX_FUZZ_TARGETS
elif [ -n "$runtime_only" ]; then
  targets="strix_load_run strix_load_run_sealed capi wav"
else
  targets=$(cargo +nightly fuzz list)
fi

# Targets whose readers take paths write one scratch file per process here.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export TMPDIR=$scratch

failed=()
for t in $targets; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log="artifacts/$t/last-run.log"
  echo "== fuzz $t for ${secs}s"
  # One process; the committed seeds (corpus/$t/seed-*) start the corpus,
  # what libFuzzer adds stays there (ignored by git) for the next run.
  dict=()
  case "$t" in strix_load_run* | capi) dict=(-dict=strix.dict) ;; esac
  if cargo +nightly fuzz run -O --debug-assertions "${features[@]}" "$t" "corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 "${dict[@]}" \
    ${STRIX_FUZZ_RUNS:+-runs=$STRIX_FUZZ_RUNS} ${STRIX_FUZZ_SEED:+-seed=$STRIX_FUZZ_SEED} \
    -print_final_stats=1 >"$log" 2>&1; then
    status=ok
  else
    status=FAILED
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  echo "   $t: ${execs:-?} executions, $status"
  if [ "$status" != ok ]; then
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    kind=$(grep -m1 -oE 'ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer): [a-z -]+|panicked at [^ ]+' "$log" || true)
    echo "   $t: ${kind:-see $PWD/$log}"
    echo "   reproducer: ${artifact:+$PWD/}${artifact:-none saved (see $PWD/$log)}"
    grep -m3 -A2 'panicked at' "$log" | sed 's/^/   | /' || true
    failed+=("$t")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (logs: fuzz/artifacts/<target>/last-run.log;"
  echo "      reproduce: cd fuzz && cargo +nightly fuzz run -O --debug-assertions <target> <reproducer>)"
  exit 1
fi
echo "== fuzz: every target ran (${STRIX_FUZZ_RUNS:+at most $STRIX_FUZZ_RUNS inputs, }at most ${secs}s) with no crash, timeout or OOM"
