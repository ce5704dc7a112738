# shellcheck shell=bash
# Shared set-up for everything that cross-builds for ARM and runs the result
# under qemu user emulation (sourced by cross-test.sh, test-c.sh, icount.sh).
#
# Why static: under qemu-user on some host kernels (seen with qemu 7.2 and
# 10.0), a *dynamically* linked guest hangs (aarch64) or segfaults (armv7) at
# its first pthread_create. Statically linked guests do not, so every ARM
# binary that runs under qemu is linked with `+crt-static` (Rust) or `-static`
# (gcc). Real boards are unaffected either way.
#
# Why a time limit: a hang under emulation must fail in minutes with the run's
# name, never stall CI. `arm_timed` wraps one command; the cargo runners below
# carry the same limit (QEMU_TIMEOUT seconds, default 900).

ARM_TARGETS=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
QEMU_TIMEOUT=${QEMU_TIMEOUT:-900}

# arm_tools [extra apt packages...]: installs the cross toolchains, qemu-user
# and the rustup targets when missing (idempotent, quiet).
arm_tools() {
    local pkgs=(gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross
        binutils-aarch64-linux-gnu binutils-arm-linux-gnueabihf qemu-user coreutils "$@")
    local missing=() p
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        echo "arm: apt-get install ${missing[*]}" >&2
        local SUDO=""
        [[ $(id -u) -eq 0 ]] || SUDO=sudo
        $SUDO apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    local installed t
    installed=$(rustup target list --installed)
    for t in "${ARM_TARGETS[@]}"; do
        grep -qx "$t" <<<"$installed" || rustup target add "$t" >/dev/null
    done
}

# Linkers, static linking and time-limited runners for cargo's ARM targets.
# (These RUSTFLAGS apply to target crates only, not to host build scripts or
# proc macros; they replace, not add to, a global RUSTFLAGS for the target.)
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=arm-linux-gnueabihf-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static"
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUSTFLAGS="-C target-feature=+crt-static"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="timeout -k 10 $QEMU_TIMEOUT qemu-aarch64"
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUNNER="timeout -k 10 $QEMU_TIMEOUT qemu-arm"

# arm_timed LABEL SECONDS CMD...: runs CMD with a time limit; on expiry prints
# "TIMED OUT" with LABEL to stderr and returns 124 (the command's status otherwise).
arm_timed() {
    local label=$1 secs=$2 rc=0
    shift 2
    timeout -k 10 "$secs" "$@" || rc=$?
    if ((rc == 124 || rc == 137)); then
        echo "arm: TIMED OUT after ${secs} s: $label" >&2
        return 124
    fi
    return "$rc"
}

# arm_cargo LABEL CARGO-ARGS...: one cargo command whose guest runs go through
# the time-limited runners above. Cargo reports a runner's time-out as a failed
# process ("exit status: 124", or "signal: 9" after timeout's -k); that is
# named as a time-out with LABEL. Output passes through (minus blank lines).
arm_cargo() {
    local label=$1 log rc=0
    shift
    log=$(mktemp)
    cargo "$@" 2>&1 | tee "$log" | sed -E '/^\s*$/d; /^test .* \.\.\. ok$/d; /^running [0-9]+ tests?$/d' || rc=$?
    if grep -qE 'exit status: 124|signal: 9' "$log"; then
        echo "arm: TIMED OUT after ${QEMU_TIMEOUT} s: $label" >&2
        rc=124
    fi
    rm -f "$log"
    return "$rc"
}
