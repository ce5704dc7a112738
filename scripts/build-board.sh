#!/usr/bin/env bash
# Builds strixd (features alsa, v4l2, gpio-cdev; rknpu on aarch64) and libstrix
# (the C library; rknpu on aarch64)
# for a board, and the Debian packages strixd, libstrix0 and libstrix-dev.
#
# Usage: scripts/build-board.sh TARGET|BOARD [--static]
#   TARGET  aarch64-unknown-linux-gnu | armv7-unknown-linux-gnueabihf
#           | arm-unknown-linux-gnueabihf (ARMv6: Pi 1, Zero W; see boards/README.md)
#   BOARD   a boards/*.toml name (e.g. rpi4) or path: its [cpu] target is built
#   --static  only a statically linked strixd (glibc crt-static, without the
#           `alsa` feature) for running under qemu-user; no library, no packages
#
# Outputs (T = $CARGO_TARGET_DIR, default target):
#   T/<triple>/dist/strixd, libstrix.so.0, libstrix.a   (dynamic, glibc >= 2.31)
#   T/dist/strixd_<ver>_<arch>.deb, libstrix0_..., libstrix-dev_...
#     (T/dist/armv6/ for arm-unknown-linux-gnueabihf)
#   T/<triple>/dist-static/strixd                       (--static)
# Env: BOARD_PROFILE (cargo profile, default dist), BOARD_GLIBC (default 2.31).
# Installs what it needs (apt packages, rustup target, zig from PyPI): see
# scripts/lib/board.sh for why zig and what --static leaves out.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/board.sh
source scripts/lib/board.sh
# shellcheck source=lib/deb.sh
source scripts/lib/deb.sh

usage() {
    sed -n '5,12p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
static=0
what=""
for a in "$@"; do
    case $a in
    --static) static=1 ;;
    -h | --help) usage ;;
    -*) die "unknown option $a" ;;
    *) [[ -z $what ]] || die "one TARGET or BOARD only (got '$what' and '$a')"; what=$a ;;
    esac
done
[[ -n $what ]] || usage
t=$(board_triple "$what")
ma=$(board_multiarch "$t")
profile=${BOARD_PROFILE:-dist}
start=$SECONDS
board_tools "$t" "$static"

if ((static)); then
    board_env_static "$t"
    out=$BOARD_TD/$t/dist-static
    # The same target dir as the dynamic build and the other statically
    # linked ARM builds (cross-test, test-c, test-npu; scripts/lib/arm.sh has
    # the same RUSTFLAGS and linker): cargo keeps units built with other
    # RUSTFLAGS under other file names, so nothing is rebuilt back and forth,
    # and the host's build scripts and proc-macros are built once.
    cargo build --release --target "$t" \
        -p strix-firmware --bin strixd --no-default-features --features gpio-cdev,v4l2
    mkdir -p "$out"
    "$ma-strip" -o "$out/strixd" "$BOARD_TD/$t/release/strixd"
    echo "build-board: $out/strixd (static, features gpio-cdev v4l2; no alsa) in $((SECONDS - start)) s"
    exit 0
fi

sysroot=$(board_sysroot "$t")
board_env_dynamic "$t" "$sysroot"
ztarget=$t.$BOARD_GLIBC
# The Rockchip NPU backend (dlopen of librknnrt.so at run time, CPU fallback
# without it) on 64-bit ARM: rknpu-sys has no 32-bit bindings.
npu=()
[[ $t != aarch64-* ]] || npu=(--features rknpu)
cargo zigbuild --profile "$profile" --target "$ztarget" -p strix-firmware --bin strixd "${npu[@]}"
# The C library, without strixd's `image` feature of strix-runtime, in the
# same target dir: its dependencies are strixd's. Only this build writes the
# unhashed libstrix_runtime.so/.a (strixd links strix-runtime as an rlib of
# its own feature hash), so the two builds never rebuild each other.
libtd=$BOARD_TD
cargo zigbuild --profile "$profile" --target "$ztarget" -p strix-runtime --lib "${npu[@]}"
# With the default profile `dist`, cargo's output directory is the dist
# directory itself (it keeps strixd there; its other files are cargo's).
built=$BOARD_TD/$t/$profile
out=$BOARD_TD/$t/dist
mkdir -p "$out"
[[ $built/strixd -ef $out/strixd ]] || cp "$built/strixd" "$out/strixd"
"$ma-strip" "$out/strixd"
"$ma-strip" -o "$out/libstrix.so.0" "$libtd/$t/$profile/libstrix_runtime.so"
# The profile's LTO leaves each object's LLVM bitcode (.llvmbc) beside its
# machine code: useless to a C linker, two thirds of the archive (23 -> 8 MB).
"$ma-objcopy" --strip-debug --remove-section=.llvmbc --remove-section=.llvmcmd \
    "$libtd/$t/$profile/libstrix_runtime.a" "$out/libstrix.a"

soname=$(readelf -d "$out/libstrix.so.0" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[[ $soname == libstrix.so.0 ]] || die "$out/libstrix.so.0: SONAME is '${soname:-none}', expected libstrix.so.0 (runtime/build.rs)"
for f in strixd libstrix.so.0; do
    g=$(board_glibc_max "$out/$f" "$t")
    board_version_le "$g" "$BOARD_GLIBC" || die "$out/$f needs GLIBC_$g, more than the $BOARD_GLIBC aimed at"
done

# ARMv6 packages are armhf too: kept apart so they never replace the armv7 ones.
debs=$BOARD_TD/dist
[[ $t != arm-* ]] || debs=$BOARD_TD/dist/armv6
deb_build_all "$t" "$out" "$debs"
echo "build-board: $t in $((SECONDS - start)) s:"
for f in strixd libstrix.so.0 libstrix.a; do
    printf '  %-40s %9d bytes\n' "$out/$f" "$(stat -c %s "$out/$f")"
done
