#!/usr/bin/env bash
# Tests the C API (libstrix_runtime) end to end:
#  1. the committed header runtime/include/strix.h is current (Rust test);
#  2. release cdylib + staticlib, the `strix` tool, and two models converted
#     from the bundled ONNX files (FastestDet int8 detector, KWS f32);
#  3. examples/c/detect.c built with gcc against both libraries (via the
#     generated pkg-config file) on models/images/fastestdet_0.jpg: its
#     detections must equal `strix run` on the same pixels;
#  4. tests/c/test_capi.c against both libraries, then under valgrind;
#  5. libstrix cross-built for aarch64 and ARMv7, the example linked statically
#     against it and run under qemu user emulation (same detections within
#     1e-3; static because of scripts/lib/arm.sh);
#  6. the stripped .so sizes for x86_64, aarch64 and ARMv7 (the ARM ones are
#     the shipped libstrix.so.0 from $STRIX_BOARD_LIBS/<triple>/dist when set,
#     as scripts/test.sh does after scripts/test-dist.sh; otherwise a plain
#     cross build of the cdylib in target/cross-dylib).
#
# Same pixels for both sides: `strix run` decodes JPEGs with the `image`
# crate, the C example gets raw RGB from ffmpeg, and the two JPEG decoders
# may differ by a grey level. So the script decodes the JPEG once with ffmpeg
# to raw RGB, re-encodes that raw RGB losslessly as PNG, and gives the PNG to
# `strix run` and the raw RGB to the C example: both see identical pixels and
# must agree to 1e-3. (The difference against `strix run` on the JPEG itself
# is printed for information only.)
#
# Usage: scripts/test-c.sh [--no-cross] [--no-valgrind] [--no-header]
# Host and static cross builds use target/ (CARGO_TARGET_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
start=$SECONDS
cross=1 grind=1 header=1
for a in "$@"; do
    case $a in
    --no-cross) cross=0 ;;
    --no-valgrind) grind=0 ;;
    --no-header) header=0 ;;
    *) echo "usage: $0 [--no-cross] [--no-valgrind] [--no-header]" >&2; exit 2 ;;
    esac
done
step() { echo "== [$((SECONDS - start))s] $*"; }

# --- tools (idempotent) ---------------------------------------------------------
pkgs=(gcc make pkg-config binutils valgrind ffmpeg)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
command -v python3 >/dev/null || missing+=(python3)
if ((${#missing[@]})); then
    step "apt-get install ${missing[*]}"
    SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO=sudo
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
targets=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
if ((cross)); then
    # shellcheck source=lib/arm.sh
    (source scripts/lib/arm.sh && arm_tools)
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/strix-test-c.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
host_dir=${CARGO_TARGET_DIR:-target}
[[ $host_dir = /* ]] || host_dir=$root/$host_dir
lib=$host_dir/release

# --- 1. header ----------------------------------------------------------------------
# The test command skips it (--no-header): its workspace tests ran the same
# test, and building the runtime's tests here again costs minutes (the test
# profile rebuilds every dependency; a release build with other features
# overwrites the cdylib the next step needs).
if ((header)); then
    step "header is current (cargo test -p strix-runtime --lib capi)"
    cargo test -q -p strix-runtime --lib capi:: 2>&1 | sed -E '/^\s*$/d; /^running [0-9]+ tests?$/d'
fi

# --- 2. builds and models ---------------------------------------------------------------
step "cargo build --release -p strix-runtime -p strix-tools"
cargo build -q --release -p strix-runtime -p strix-tools
# The cdylib's SONAME is libstrix.so.0 (runtime/build.rs): programs linked here look for that name.
ln -sf libstrix_runtime.so "$lib/libstrix.so.0"
step "convert the models"
"$lib/strix" convert models/fastestdet/FastestDet.onnx --calib models/images/*.jpg models/images/*.png \
    -o "$tmp/fastestdet.strix" 2>&1 | sed 's/^/   /'
"$lib/strix" convert models/kws/kws_dscnn_f32.onnx --calib models/kws/*.wav --fp32 \
    -o "$tmp/kws32.strix" 2>&1 | sed 's/^/   /'

img=models/images/fastestdet_0.jpg
size=$(ffprobe -v error -select_streams v:0 -show_entries stream=width,height -of csv=p=0:s=x "$img")
W=${size%x*} H=${size#*x}
[[ $W =~ ^[0-9]+$ && $H =~ ^[0-9]+$ ]] || { echo "ffprobe: cannot read the size of $img ($size)" >&2; exit 1; }
ffmpeg -v error -y -i "$img" -f rawvideo -pix_fmt rgb24 "$tmp/frame.rgb"
ffmpeg -v error -y -f rawvideo -pix_fmt rgb24 -s "${W}x${H}" -i "$tmp/frame.rgb" "$tmp/frame.png"
"$lib/strix" run "$tmp/fastestdet.strix" "$tmp/frame.png" >"$tmp/run_png.json"
"$lib/strix" run "$tmp/fastestdet.strix" "$img" >"$tmp/run_jpg.json"

# compare EXPECTED.json|det-file ACTUAL-det-file TOLERANCE [info]
compare() {
    python3 - "$@" <<'EOF'
import json, sys
exp_path, act_path, tol = sys.argv[1], sys.argv[2], float(sys.argv[3])
info = len(sys.argv) > 4
def dets(path):
    if path.endswith(".json"):
        return [(d["class"], d["label"], d["score"], *d["box"]) for d in json.load(open(path))["detections"]]
    out = []
    for line in open(path):
        f = line.split()
        if f and f[0] == "det":
            out.append((int(f[1]), " ".join(f[11:]), *map(float, f[2:7])))
    return out
e, a = dets(exp_path), dets(act_path)
if info:  # different pixels may reorder near-equal scores: pair by class and position
    e, a = sorted(e, key=lambda d: (d[0], d[3], d[4])), sorted(a, key=lambda d: (d[0], d[3], d[4]))
worst = 0.0
ok = len(e) == len(a) and len(e) > 0
same_labels = [x[:2] for x in e] == [y[:2] for y in a]
for x, y in zip(e, a):
    worst = max([worst] + [abs(p - q) for p, q in zip(x[2:], y[2:])])
ok = ok and same_labels and worst <= tol
what = (f"{len(a)} detections vs {len(e)} from strix run, labels {'equal' if same_labels else 'DIFFER'}, "
        f"max |score/box diff| {worst:.2e}")
if info:
    print(f"   (info) {what}")
    sys.exit(0)
print(f"   {'ok' if ok else 'FAIL'}: {what} (tolerance {tol})")
sys.exit(0 if ok else 1)
EOF
}

# --- 3. the example, shared and static, via pkg-config ------------------------------------
step "build examples/c against the shared and static library (pkg-config)"
mkdir -p "$tmp/pkgconfig"
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -1)
sed -e "s|@PREFIX@|$root|; s|@LIBDIR@|$lib|; s|@INCLUDEDIR@|$root/runtime/include|; s|@VERSION@|$version|" \
    runtime/strix.pc.in >"$tmp/pkgconfig/strix.pc"
export PKG_CONFIG_PATH=$tmp/pkgconfig
pkg-config --exists strix
make -s -C examples/c OUT="$tmp" CC=gcc LDFLAGS="-Wl,-rpath,$lib"
for exe in detect detect-static; do
    "$tmp/$exe" "$tmp/fastestdet.strix" "$tmp/frame.rgb" "$W" "$H" rgb >"$tmp/$exe.txt"
    echo "   $exe:"; sed 's/^/     /' "$tmp/$exe.txt"
    compare "$tmp/run_png.json" "$tmp/$exe.txt" 1e-3
done
compare "$tmp/run_jpg.json" "$tmp/detect.txt" 1e-3 info

# --- 4. C tests ---------------------------------------------------------------------------------
step "C tests (shared and static)"
cflags=(-std=c99 -O2 -g -Wall -Wextra -Werror -pthread -I runtime/include)
static_deps=$(pkg-config --variable=static_deps strix)
gcc "${cflags[@]}" tests/c/test_capi.c -o "$tmp/test_capi" -L"$lib" -lstrix_runtime -Wl,-rpath,"$lib"
# shellcheck disable=SC2086
gcc "${cflags[@]}" tests/c/test_capi.c -o "$tmp/test_capi_static" "$lib/libstrix_runtime.a" $static_deps
mkdir -p "$tmp/scratch"
targs=("$tmp/fastestdet.strix" "$tmp/kws32.strix" "$tmp/frame.rgb" "$W" "$H" "$tmp/scratch")
for exe in test_capi test_capi_static; do
    echo "   $exe: $("$tmp/$exe" "${targs[@]}")"
done
if ((grind)); then
    step "C tests under valgrind --leak-check=full --error-exitcode=1"
    valgrind -q --leak-check=full --error-exitcode=1 "$tmp/test_capi" "${targs[@]}"
fi

# --- 5. cross builds ------------------------------------------------------------------------------
strip_size() { # STRIP FILE
    "$1" -o "$tmp/stripped.so" "$2"
    stat -c %s "$tmp/stripped.so"
}
declare -A sizes
sizes[x86_64]=$(strip_size strip "$lib/libstrix_runtime.so")
if ((cross)); then
    # Static guests (scripts/lib/arm.sh says why): the example is linked with
    # -static against libstrix_runtime.a and run under qemu; the cdylib is
    # built separately without +crt-static (rustc drops cdylib with it) and
    # only checked for its machine type and size.
    # shellcheck source=lib/arm.sh
    source scripts/lib/arm.sh
    for t in "${targets[@]}"; do
        case $t in
        aarch64-*) arch=aarch64 cc=aarch64-linux-gnu-gcc qemu=qemu-aarch64 ;;
        armv7-*) arch=armv7 cc=arm-linux-gnueabihf-gcc qemu=qemu-arm ;;
        esac
        step "cross-build libstrix for $t, run the statically linked example under $qemu"
        CARGO_TARGET_DIR=$host_dir cargo build -q --release -p strix-runtime --target "$t" 2>&1 |
            { grep -v "dropping unsupported crate type .cdylib." || true; }
        xlib=$host_dir/$t/release
        if [[ -n ${STRIX_BOARD_LIBS:-} && -f $STRIX_BOARD_LIBS/$t/dist/libstrix.so.0 ]]; then
            # The shipped library scripts/test-dist.sh built in this run.
            xdylib=$STRIX_BOARD_LIBS/$t/dist/libstrix.so.0
        else
            env -u "CARGO_TARGET_$(tr 'a-z-' 'A-Z_' <<<"$t")_RUSTFLAGS" CARGO_TARGET_DIR=target/cross-dylib \
                cargo build -q --release -p strix-runtime --target "$t"
            xdylib=$root/target/cross-dylib/$t/release/libstrix_runtime.so
        fi
        mkdir -p "$tmp/$arch"
        make -s -C examples/c OUT="$tmp/$arch" CC="$cc" STRIX_LIBDIR="$xlib" LDFLAGS="-static" \
            STRIX_STATIC_DEPS="-lutil -lrt -lpthread -lm -ldl -lc" "$tmp/$arch/detect-static" >/dev/null \
            2>"$tmp/ld.log" || { cat "$tmp/ld.log" >&2; exit 1; }
        # (ld's warnings about getaddrinfo/getpwuid_r in static glibc are expected: std links them, the example never calls them.)
        echo "   example: $(readelf -h "$tmp/$arch/detect-static" | sed -n 's/^ *Machine: *//p'), library: $(readelf -h \
            "$xdylib" | sed -n 's/^ *Machine: *//p')"
        arm_timed "examples/c detect-static under $qemu" 300 \
            "$qemu" "$tmp/$arch/detect-static" "$tmp/fastestdet.strix" "$tmp/frame.rgb" "$W" "$H" rgb \
            >"$tmp/detect-$arch.txt"
        compare "$tmp/run_png.json" "$tmp/detect-$arch.txt" 1e-3
        sizes[$arch]=$(strip_size "${cc%gcc}strip" "$xdylib")
    done
fi

step "stripped libstrix_runtime.so sizes"
for arch in x86_64 aarch64 armv7; do
    if [[ -n ${sizes[$arch]:-} ]]; then
        printf '   %-8s %9d bytes (%d KiB)\n' "$arch" "${sizes[$arch]}" "$(((sizes[$arch] + 512) / 1024))"
    fi
done
echo "== test-c: all passed in $((SECONDS - start))s"
