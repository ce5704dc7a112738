# shellcheck shell=bash
# Cross builds of strixd and libstrix for boards (sourced by build-board.sh
# and test-dist.sh). Run from the repository root.
#
# Why cargo-zigbuild: zig links against glibc stubs of a version we choose
# (BOARD_GLIBC), so the binaries run on Debian 11 / Raspberry Pi OS bullseye
# (glibc 2.31) and everything newer. Debian's cross gcc links against the
# build machine's glibc (2.36 on bookworm): the same strixd then needs
# GLIBC_2.34 and does not start on bullseye. Zig and cargo-zigbuild come
# from PyPI (pinned below) into a venv in the target dir; the only
# target-side C library strixd links, libasound, is taken from Debian's
# arm64/armhf packages, unpacked into a private sysroot (nothing foreign is
# installed on the build machine).
#
# Why --allow-shlib-undefined: Debian bookworm's libasound.so itself needs
# GLIBC_2.34 symbols, which zig's 2.31 stubs rightly lack. strixd uses only
# old ALSA symbols (ALSA_0.9*), and at run time the board's own libasound,
# built for the board's glibc, is loaded: the link-time copy only supplies
# symbol names. (Checked by test-dist.sh: max GLIBC_ version <= 2.31.)
#
# --static (crt-static) builds use Debian's cross gcc like scripts/lib/arm.sh,
# for running under qemu-user only (a dynamically linked ARM guest that
# starts threads hangs under this machine's qemu). Debian ships no static
# libasound (libasound.a), so static strixd is built without the `alsa`
# feature. Static glibc binaries cannot reliably dlopen (needed for
# librknnrt.so), one more reason the packages ship the dynamic build.

BOARD_GLIBC=${BOARD_GLIBC:-2.31}
BOARD_ZIGLANG_VERSION=0.17.1
BOARD_ZIGBUILD_VERSION=0.24.1
BOARD_TD=${CARGO_TARGET_DIR:-target}

die() {
    echo "build-board: error: $*" >&2
    exit 2
}

# board_triple TARGET|BOARD: prints the Rust target triple. BOARD is the name
# of a boards/*.toml (its [cpu] target is used) or a path to such a file.
board_triple() {
    local arg=$1 file=""
    case $arg in
    aarch64-unknown-linux-gnu | armv7-unknown-linux-gnueabihf | arm-unknown-linux-gnueabihf)
        echo "$arg"
        return
        ;;
    *.toml) file=$arg ;;
    *) file=boards/$arg.toml ;;
    esac
    if [[ ! -f $file ]]; then
        local names
        names=$(find boards -maxdepth 1 -name '*.toml' -printf '%f\n' | sed 's/\.toml$//' | sort | tr '\n' ' ')
        die "'$arg' is neither a supported target (aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf, arm-unknown-linux-gnueabihf) nor a board file ($file not found; boards: $names)"
    fi
    # The first `target = "..."` inside the [cpu] table.
    local t
    t=$(awk '/^\[/{in_cpu = ($0 ~ /^\[cpu\][[:space:]]*$/)} in_cpu && /^[[:space:]]*target[[:space:]]*=/{
            sub(/^[^=]*=[[:space:]]*"/, ""); sub(/".*/, ""); print; exit}' "$file")
    [[ -n $t ]] || die "$file: key cpu.target: expected a target triple string, found none"
    case $t in
    aarch64-unknown-linux-gnu | armv7-unknown-linux-gnueabihf | arm-unknown-linux-gnueabihf) echo "$t" ;;
    *) die "$file: key cpu.target: '$t' is not a target this script builds" ;;
    esac
}

# board_debarch TRIPLE / board_multiarch TRIPLE: Debian architecture and
# multiarch directory. (ARMv6 Raspberry Pi OS also calls itself armhf.)
board_debarch() {
    case $1 in
    aarch64-*) echo arm64 ;;
    arm*) echo armhf ;;
    esac
}
board_multiarch() {
    case $1 in
    aarch64-*) echo aarch64-linux-gnu ;;
    arm*) echo arm-linux-gnueabihf ;;
    esac
}

board_sudo() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# board_apt PKG...: installs the packages that are missing.
board_apt() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        echo "build-board: apt-get install ${missing[*]}" >&2
        board_sudo apt-get update -qq >/dev/null
        board_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# board_rust_target TRIPLE: the Rust standard library for TRIPLE.
board_rust_target() {
    rustup target list --installed | grep -qx "$1" && return
    rustup target add "$1" >/dev/null ||
        die "rustup could not install the Rust standard library for $1 (rustup's own download server must be reachable)"
}

# board_zig: zig and cargo-zigbuild (pinned, from PyPI) in a venv; puts it on PATH.
board_zig() {
    local venv=$BOARD_TD/zig-venv
    if ! "$venv/bin/python" -m pip show -q "ziglang==$BOARD_ZIGLANG_VERSION" >/dev/null 2>&1 ||
        [[ ! -x $venv/bin/cargo-zigbuild ]] ||
        [[ $("$venv/bin/cargo-zigbuild" --version 2>/dev/null) != *" $BOARD_ZIGBUILD_VERSION" ]]; then
        python3 -m venv "$venv" 2>/dev/null || {
            board_apt python3-venv
            python3 -m venv "$venv"
        }
        "$venv/bin/python" -m pip install -q --disable-pip-version-check \
            "ziglang==$BOARD_ZIGLANG_VERSION" "cargo-zigbuild==$BOARD_ZIGBUILD_VERSION" ||
            die "pip could not install ziglang $BOARD_ZIGLANG_VERSION / cargo-zigbuild $BOARD_ZIGBUILD_VERSION"
    fi
    PATH=$(cd "$venv/bin" && pwd):$PATH
    export PATH
}

# board_sysroot TRIPLE: prints a directory holding the target's libasound
# (Debian's libasound2 + libasound2-dev for its architecture, unpacked).
board_sysroot() {
    local arch dir debs
    arch=$(board_debarch "$1")
    dir=$BOARD_TD/sysroot/$arch
    if [[ ! -e $dir/usr/lib/$(board_multiarch "$1")/pkgconfig/alsa.pc ]]; then
        if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
            echo "build-board: dpkg --add-architecture $arch (to download its libasound packages)" >&2
            board_sudo dpkg --add-architecture "$arch"
            board_sudo apt-get update -qq >/dev/null
        fi
        debs=$BOARD_TD/sysroot/debs-$arch
        rm -rf "$debs" "$dir"
        mkdir -p "$debs" "$dir"
        (cd "$debs" && apt-get download -qq "libasound2:$arch" "libasound2-dev:$arch" 2>/dev/null) || {
            board_sudo apt-get update -qq >/dev/null
            (cd "$debs" && apt-get download -qq "libasound2:$arch" "libasound2-dev:$arch")
        } || die "apt-get download libasound2:$arch libasound2-dev:$arch failed"
        local d
        for d in "$debs"/*.deb; do dpkg-deb -x "$d" "$dir"; done
    fi
    (cd "$dir" && pwd)
}

# board_tools TRIPLE STATIC(0|1): everything one build needs.
board_tools() {
    local t=$1 static=$2 ma
    ma=$(board_multiarch "$t")
    # clang: bindgen (v4l2); binutils: readelf/objdump/strip for the target.
    board_apt pkg-config libclang-dev linux-libc-dev "binutils-$ma" dpkg-dev
    local arch
    arch=$(board_debarch "$t")
    # The target's C and kernel uAPI headers: bindgen (v4l2) parses
    # linux/videodev2.h for the target in both builds; the static one also
    # links with Debian's cross gcc.
    board_apt "libc6-dev-$arch-cross" "linux-libc-dev-$arch-cross"
    if ((static)); then board_apt "gcc-$ma"; fi
    board_rust_target "$t"
    ((static)) || board_zig
}

# board_env_dynamic TRIPLE SYSROOT: cargo/pkg-config variables for the zig build.
board_env_dynamic() {
    local t=$1 sysroot=$2 v ma
    v=${t//-/_}
    ma=$(board_multiarch "$t")
    export "PKG_CONFIG_ALLOW_CROSS_$v=1"
    export "PKG_CONFIG_LIBDIR_$v=$sysroot/usr/lib/$ma/pkgconfig"
    export "PKG_CONFIG_SYSROOT_DIR_$v=$sysroot"
    # Replaces any RUSTFLAGS for this target (e.g. arm.sh's +crt-static).
    export "CARGO_TARGET_${v^^}_RUSTFLAGS=-C link-arg=-Wl,--allow-shlib-undefined"
    # bindgen (v4l2) parses the target's uAPI headers (only their layouts;
    # nothing links against them). cargo-zigbuild sets the per-target
    # variable itself, from zig's include dirs (no linux/videodev2.h), and
    # appends to the plain one: so the plain one, for this one-target build.
    export "BINDGEN_EXTRA_CLANG_ARGS=-I/usr/$ma/include"
}

# board_env_static TRIPLE: Debian cross gcc, +crt-static (as scripts/lib/arm.sh).
board_env_static() {
    local t=$1 v ma
    v=${t//-/_}
    ma=$(board_multiarch "$t")
    export "CARGO_TARGET_${v^^}_LINKER=$ma-gcc"
    export "CARGO_TARGET_${v^^}_RUSTFLAGS=-C target-feature=+crt-static"
    export "CC_$v=$ma-gcc"
    # bindgen (v4l2) parses the target's uAPI headers.
    export "BINDGEN_EXTRA_CLANG_ARGS_$v=--sysroot=/usr/$ma"
}

# board_glibc_max FILE TRIPLE: the highest GLIBC_x.y symbol version FILE needs.
board_glibc_max() {
    "$(board_multiarch "$2")-objdump" -T "$1" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1
}

# board_version_le A B: true when version A <= B.
board_version_le() {
    [[ $(printf '%s\n%s\n' "$1" "$2" | sort -V | head -1) == "$1" ]]
}
