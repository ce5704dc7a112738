#!/usr/bin/env bash
# shellcheck disable=SC2015 # `cond && ok ... || bad ...`: ok only echoes
# Builds the board packages for aarch64 and armv7 from the checkout
# (scripts/build-board.sh) and checks what ships, then builds the --static
# aarch64 strixd and runs it under qemu-user. Fails on the first wrong thing.
#
# Checks, per target: SONAME libstrix.so.0; the highest GLIBC_ symbol version
# of strixd and libstrix.so.0 <= 2.31 (Debian 11 / Raspberry Pi OS bullseye);
# the ELF machine; strixd built with alsa and v4l2 (asked to open a missing
# camera and ALSA device, it must fail at the device, not for a missing
# feature: run under qemu with Debian's cross glibc as its prefix, which works
# for --check because it starts no thread); the packages' fields and contents
# (unit, conffile, board files, the user creation in postinst, libstrix.so
# link, strix.pc) and the unit through systemd-analyze verify.
# Then: the static aarch64 strixd: --help and --check on a tiny config under
# `timeout 60 qemu-aarch64`.
#
# Usage: scripts/test-dist.sh     Env: CARGO_TARGET_DIR (default target)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/board.sh
source scripts/lib/board.sh
# Absolute: the guests run from a scratch directory.
BOARD_TD=$(realpath -m "$BOARD_TD")
export CARGO_TARGET_DIR=$BOARD_TD
start=$SECONDS
fails=0
ok() { echo "   ok: $*"; }
bad() {
    echo "   FAIL: $*" >&2
    fails=$((fails + 1))
}
check() { # DESCRIPTION CMD...: ok when CMD succeeds
    local what=$1
    shift
    if "$@" >/dev/null 2>&1; then ok "$what"; else bad "$what"; fi
}
step() { echo "== $*"; }

version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -1)
board_apt qemu-user binutils-aarch64-linux-gnu binutils-arm-linux-gnueabihf libc6-arm64-cross libc6-armhf-cross
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# A tiny config's models: the committed fuzz seeds (a KWS and a FastestDet model).
seeds=fuzz/corpus
cp "$seeds/strix_load_run/seed-kws.strix" "$tmp/kws.strix"
cp "$seeds/strix_load_run_sealed/seed-fastestdet.strix" "$tmp/det.strix"
cp models/kws/yes_1000ms.wav "$tmp/yes.wav"
cat >"$tmp/tiny.toml" <<'EOF'
device = "dist-test"
[speech]
source = "yes.wav"
model = "kws.strix"
keywords = ["yes"]
[outbox]
path = "outbox.redb"
EOF
cat >"$tmp/v4l2.toml" <<'EOF'
device = "dist-test"
[camera]
source = "v4l2:/dev/strix-no-such-camera"
model = "det.strix"
EOF
cat >"$tmp/alsa.toml" <<'EOF'
device = "dist-test"
[speech]
source = "alsa:strix_no_such_pcm"
model = "kws.strix"
keywords = ["yes"]
EOF

# expect_media_error QEMU... -- CONFIG FEATURE: --check must exit 4 (media
# error: no such device) and not say the feature was left out.
expect_device_error() {
    local cfg=$1 feature=$2 rc=0 out
    shift 2
    out=$(arm_timed_run "$@" --config "$tmp/$cfg" --check 2>&1) || rc=$?
    if ((rc == 4)) && ! grep -q "built without" <<<"$out"; then
        ok "strixd has $feature (--check: ${out##*error: })"
    else
        bad "strixd $feature check: exit $rc, expected 4: $out"
    fi
}
arm_timed_run() { timeout -k 5 60 "$@"; }

for t in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
    step "scripts/build-board.sh $t"
    scripts/build-board.sh "$t"
    ma=$(board_multiarch "$t")
    arch=$(board_debarch "$t")
    dist=$BOARD_TD/$t/dist
    step "check $t"
    case $t in
    aarch64-*) machine=AArch64 qemu=qemu-aarch64 ;;
    *) machine=ARM qemu=qemu-arm ;;
    esac
    for f in strixd libstrix.so.0; do
        m=$(readelf -h "$dist/$f" | sed -n 's/^ *Machine: *//p')
        [[ $m == "$machine" ]] && ok "$f: machine $m" || bad "$f: machine '$m', expected $machine"
        g=$(board_glibc_max "$dist/$f" "$t")
        if [[ -n $g ]] && board_version_le "$g" 2.31; then ok "$f: max GLIBC_$g <= 2.31"; else bad "$f: max GLIBC_'$g' > 2.31"; fi
        grep -q . <<<"$(file "$dist/$f" | grep -F 'dynamically linked')" && ok "$f: dynamically linked" || bad "$f: not dynamically linked"
    done
    soname=$(readelf -d "$dist/libstrix.so.0" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
    [[ $soname == libstrix.so.0 ]] && ok "SONAME $soname" || bad "SONAME '$soname', expected libstrix.so.0"
    check "libstrix.a defines strix_abi_version" \
        bash -c "readelf -s '$dist/libstrix.a' | grep -qE 'FUNC +GLOBAL +DEFAULT +[0-9]+ strix_abi_version$'"
    check "libstrix.so.0 exports strix_abi_version" \
        bash -c "$ma-objdump -T '$dist/libstrix.so.0' | grep -q ' strix_abi_version$'"
    # The shipped (dynamic) strixd under qemu: Debian's cross glibc as prefix,
    # the unpacked libasound beside it.
    q=("$qemu" -L "/usr/$ma" -E "LD_LIBRARY_PATH=$BOARD_TD/sysroot/$arch/usr/lib/$ma")
    (cd "$tmp" && arm_timed_run "${q[@]}" "$dist/strixd" --help >"$tmp/help.txt" 2>&1) &&
        grep -q -- '--check' "$tmp/help.txt" && ok "dynamic strixd --help under $qemu" ||
        bad "dynamic strixd --help under $qemu: $(head -3 "$tmp/help.txt")"
    expect_device_error v4l2.toml v4l2 "${q[@]}" "$dist/strixd"
    expect_device_error alsa.toml alsa "${q[@]}" "$dist/strixd"

    # Packages.
    d=$BOARD_TD/dist
    sd=$d/strixd_${version}_$arch.deb l0=$d/libstrix0_${version}_$arch.deb ld=$d/libstrix-dev_${version}_$arch.deb
    for p in "$sd" "$l0" "$ld"; do
        [[ -f $p ]] || { bad "missing package $p"; continue; }
        [[ $(dpkg-deb -f "$p" Architecture) == "$arch" ]] && ok "$(basename "$p"): Architecture $arch" ||
            bad "$(basename "$p"): Architecture $(dpkg-deb -f "$p" Architecture)"
        # Columns: mode owner size date time path [-> link target].
        dpkg-deb --contents "$p" | sed -E 's/^([^ ]+ +){5}//; s|^\./|/|' >"$tmp/$(basename "$p").list"
    done
    has() { # PACKAGE PATTERN: the package's file list has a line matching PATTERN (ERE)
        if grep -qE "$2" "$tmp/$(basename "$1").list"; then ok "$(basename "$1") has ${2//\\/}"; else bad "$(basename "$1") lacks $2"; fi
    }
    has "$sd" '^/usr/bin/strixd$'
    has "$sd" '^/lib/systemd/system/strixd\.service$'
    has "$sd" '^/etc/strix/strixd\.toml$'
    has "$sd" '^/usr/lib/tmpfiles\.d/strixd\.conf$'
    has "$sd" '^/usr/share/strix/models/$'
    for b in boards/*.toml; do has "$sd" "^/usr/share/strix/boards/$(basename "$b")\$"; done
    has "$l0" "^/usr/lib/$ma/libstrix\.so\.0\$"
    has "$ld" "^/usr/lib/$ma/libstrix\.so -> libstrix\.so\.0\$"
    has "$ld" "^/usr/lib/$ma/libstrix\.a\$"
    has "$ld" "^/usr/lib/$ma/pkgconfig/strix\.pc\$"
    has "$ld" '^/usr/include/strix\.h$'
    dpkg-deb --ctrl-tarfile "$sd" | tar -xO ./conffiles >"$tmp/conffiles"
    check "strixd conffiles: /etc/strix/strixd.toml" grep -qx /etc/strix/strixd.toml "$tmp/conffiles"
    # (continued lines joined)
    dpkg-deb --ctrl-tarfile "$sd" | tar -xO ./postinst | sed -e ':a' -e '/\\$/{N;s/\\\n *//;ba' -e '}' >"$tmp/postinst"
    check "strixd postinst creates the strix system user" grep -qE 'adduser --system .* strix$' "$tmp/postinst"
    check "strixd postinst adds strix to video/audio/gpio" grep -q 'for g in video audio gpio' "$tmp/postinst"
    check "strixd postinst is valid sh" sh -n "$tmp/postinst"
    deps=$(dpkg-deb -f "$sd" Depends)
    [[ $deps == *"libasound2"* && $deps == *"libc6 (>= 2."* ]] && ok "strixd Depends: $deps" || bad "strixd Depends: $deps"
    [[ $(dpkg-deb -f "$ld" Depends) == "libstrix0 (= $version)" ]] && ok "libstrix-dev Depends: libstrix0 (= $version)" ||
        bad "libstrix-dev Depends: $(dpkg-deb -f "$ld" Depends)"
    check "libstrix0 shlibs names libstrix.so.0" \
        bash -c "dpkg-deb --ctrl-tarfile '$l0' | tar -xO ./shlibs | grep -qx 'libstrix 0 libstrix0 (>= $version)'"
    # The installed pkg-config file, as a user of libstrix-dev sees it.
    rm -rf "$tmp/root"
    dpkg-deb -x "$ld" "$tmp/root"
    libs=$(PKG_CONFIG_SYSROOT_DIR=$tmp/root PKG_CONFIG_LIBDIR=$tmp/root/usr/lib/$ma/pkgconfig pkg-config --libs strix)
    libs=${libs% }
    [[ $libs == "-L$tmp/root/usr/lib/$ma -lstrix" ]] && ok "pkg-config --libs strix: -L/usr/lib/$ma -lstrix" ||
        bad "pkg-config --libs strix: $libs"
done

step "the systemd unit"
if command -v systemd-analyze >/dev/null; then
    rm -rf "$tmp/root"
    dpkg-deb -x "$BOARD_TD/dist/strixd_${version}_arm64.deb" "$tmp/root"
    # verify resolves ExecStart on the host: point it at the unpacked tree.
    sed "s|ExecStart=/usr/bin/strixd|ExecStart=$tmp/root/usr/bin/strixd|" \
        "$tmp/root/lib/systemd/system/strixd.service" >"$tmp/strixd.service"
    out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify "$tmp/strixd.service" 2>&1 | grep -v -e 'is not executable: Exec format' -e '^$' || true)
    [[ -z $out ]] && ok "systemd-analyze verify strixd.service" || bad "systemd-analyze verify: $out"
else
    echo "   (systemd-analyze not installed: unit not verified)"
fi
grep -q '^Restart=on-failure' packaging/strixd/root/lib/systemd/system/strixd.service && ok "unit: Restart=on-failure" || bad "unit: no Restart=on-failure"

step "scripts/build-board.sh aarch64-unknown-linux-gnu --static; run it under qemu-aarch64"
scripts/build-board.sh aarch64-unknown-linux-gnu --static
s=$BOARD_TD/aarch64-unknown-linux-gnu/dist-static/strixd
file "$s" | grep -q 'statically linked' && ok "static strixd is statically linked" || bad "static strixd: $(file "$s")"
(cd "$tmp" && timeout -k 5 60 qemu-aarch64 "$s" --help >"$tmp/help.txt" 2>&1) && grep -q -- '--check' "$tmp/help.txt" &&
    ok "static strixd --help under qemu-aarch64" || bad "static strixd --help: $(head -3 "$tmp/help.txt")"
out=$(cd "$tmp" && timeout -k 5 60 qemu-aarch64 "$s" --config tiny.toml --check 2>&1) && [[ $out == *"config OK"* ]] &&
    ok "static strixd --check tiny.toml: $out" || bad "static strixd --check tiny.toml: $out"
expect_device_error v4l2.toml v4l2 qemu-aarch64 "$s"

if ((fails)); then
    echo "test-dist: $fails check(s) FAILED in $((SECONDS - start)) s" >&2
    exit 1
fi
echo "test-dist: all checks passed in $((SECONDS - start)) s"
