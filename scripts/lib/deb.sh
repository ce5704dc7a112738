# shellcheck shell=bash
# Debian packages strixd, libstrix0 and libstrix-dev from a dist directory
# (sourced by build-board.sh). dpkg-deb on a staged tree: the trees under
# packaging/*/root and packaging/*/DEBIAN are copied whole, the board files
# are globbed from boards/, conffiles are every file under /etc, and
# Depends comes from the binaries' DT_NEEDED: no file list to keep in step.

DEB_MAINTAINER=${DEB_MAINTAINER:-"Strix developers <strix@localhost>"}

# deb_needed_depends FILE GLIBC: Depends for FILE's DT_NEEDED libraries. An
# unknown library fails the build: a new dependency must be named here.
deb_needed_depends() {
    local file=$1 glibc=$2 lib deps=()
    for lib in $(readelf -d "$file" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
        case $lib in
        libc.so.6 | libm.so.6 | libpthread.so.0 | libdl.so.2 | librt.so.1 | libutil.so.1 | ld-linux-*)
            deps+=("libc6 (>= $glibc)")
            ;;
        libgcc_s.so.1) deps+=("libgcc-s1 | libgcc1") ;;
        # Debian 13 renamed it libasound2t64 (it provides libasound2 on arm64 only).
        libasound.so.2) deps+=("libasound2 (>= 1.0.16) | libasound2t64") ;;
        *) die "$file needs $lib: scripts/lib/deb.sh has no package for it" ;;
        esac
    done
    printf '%s\n' "${deps[@]}" | sort -u | paste -sd, | sed 's/,/, /g'
}

# deb_pack NAME STAGE ARCH VERSION DEPENDS OUTDIR: control, md5sums, dpkg-deb.
deb_pack() {
    local name=$1 stage=$2 arch=$3 version=$4 depends=$5 outdir=$6 size
    find "$stage" -type d -exec chmod 0755 {} +
    size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
    # '#' as the delimiter: Depends holds '|' alternatives.
    sed -e "s#@VERSION@#$version#g; s#@ARCH@#$arch#; s#@MAINTAINER@#$DEB_MAINTAINER#; s#@SIZE@#$size#; s#@DEPENDS@#$depends#" \
        "packaging/$name/DEBIAN/control.in" >"$stage/DEBIAN/control"
    rm -f "$stage/DEBIAN/control.in"
    (cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0r md5sum) >"$stage/DEBIAN/md5sums"
    chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/md5sums"
    mkdir -p "$outdir"
    dpkg-deb --root-owner-group -Zxz --build "$stage" "$outdir/${name}_${version}_$arch.deb" >/dev/null
}

# deb_docs DIR NAME VERSION: the package's copyright and changelog.gz
# (dated by the checkout's last commit, so a rebuild gives the same bytes).
deb_docs() {
    local dir=$1 name=$2 version=$3 when year commit
    when=$(git log -1 --format=%cD 2>/dev/null || date -R)
    year=$(git log -1 --format=%cd --date=format:%Y 2>/dev/null || date +%Y)
    commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    mkdir -p "$dir"
    cat >"$dir/copyright" <<EOF2
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: strix
License: Apache-2.0

Files: *
Copyright: Copyright (C) $year the Strix developers
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
EOF2
    printf '%s (%s) unstable; urgency=medium\n\n  * Built from git commit %s by scripts/build-board.sh.\n\n -- %s  %s\n' \
        "$name" "$version" "$commit" "$DEB_MAINTAINER" "$when" | gzip -9n >"$dir/changelog.gz"
    chmod 0644 "$dir/copyright" "$dir/changelog.gz"
}

# deb_build_all TRIPLE DIST OUTDIR: the three packages from DIST (strixd,
# libstrix.so.0, libstrix.a) into OUTDIR.
deb_build_all() {
    local t=$1 dist=$2 outdir=$3 arch ma version stages s glibc
    arch=$(board_debarch "$t")
    ma=$(board_multiarch "$t")
    version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -1)
    stages=$BOARD_TD/deb-stage/$arch
    rm -rf "$stages"
    mkdir -p "$stages"

    # strixd
    s=$stages/strixd
    mkdir -p "$s"
    cp -a packaging/strixd/root/. "$s/"
    cp -a packaging/strixd/DEBIAN "$s/"
    install -D -m 0755 "$dist/strixd" "$s/usr/bin/strixd"
    install -d "$s/usr/share/strix/models"
    install -D -m 0644 -t "$s/usr/share/strix/boards" boards/*.toml
    install -D -m 0644 firmware/README.md "$s/usr/share/doc/strixd/README.md"
    deb_docs "$s/usr/share/doc/strixd" strixd "$version"
    find "$s" -type f ! -path '*/DEBIAN/*' ! -path '*/usr/bin/*' -exec chmod 0644 {} +
    (cd "$s" && find etc -type f -printf '/%p\n' | sort) >"$s/DEBIAN/conffiles"
    glibc=$(board_glibc_max "$dist/strixd" "$t")
    deb_pack strixd "$s" "$arch" "$version" "$(deb_needed_depends "$dist/strixd" "$glibc")" "$outdir"

    # libstrix0
    s=$stages/libstrix0
    mkdir -p "$s"
    cp -a packaging/libstrix0/DEBIAN "$s/"
    install -D -m 0644 "$dist/libstrix.so.0" "$s/usr/lib/$ma/libstrix.so.0"
    deb_docs "$s/usr/share/doc/libstrix0" libstrix0 "$version"
    glibc=$(board_glibc_max "$dist/libstrix.so.0" "$t")
    echo "libstrix 0 libstrix0 (>= $version)" >"$s/DEBIAN/shlibs"
    chmod 0644 "$s/DEBIAN/shlibs" "$s/DEBIAN/triggers"
    deb_pack libstrix0 "$s" "$arch" "$version" "$(deb_needed_depends "$dist/libstrix.so.0" "$glibc")" "$outdir"

    # libstrix-dev: the pkg-config file links -lstrix (the installed name),
    # where the in-tree build's library is libstrix_runtime.
    s=$stages/libstrix-dev
    mkdir -p "$s/usr/lib/$ma/pkgconfig"
    cp -a packaging/libstrix-dev/DEBIAN "$s/"
    install -D -m 0644 runtime/include/strix.h "$s/usr/include/strix.h"
    install -m 0644 "$dist/libstrix.a" "$s/usr/lib/$ma/libstrix.a"
    ln -s libstrix.so.0 "$s/usr/lib/$ma/libstrix.so"
    sed -e "s|@PREFIX@|/usr|; s|@LIBDIR@|\${prefix}/lib/$ma|; s|@INCLUDEDIR@|\${prefix}/include|; s|@VERSION@|$version|" \
        -e 's|-lstrix_runtime$|-lstrix|; s|libstrix_runtime\.a|libstrix.a|' \
        runtime/strix.pc.in >"$s/usr/lib/$ma/pkgconfig/strix.pc"
    grep -qx 'Libs: -L${libdir} -lstrix' "$s/usr/lib/$ma/pkgconfig/strix.pc" ||
        die "runtime/strix.pc.in: its Libs line changed; scripts/lib/deb.sh rewrites -lstrix_runtime to -lstrix"
    chmod 0644 "$s/usr/lib/$ma/pkgconfig/strix.pc"
    deb_docs "$s/usr/share/doc/libstrix-dev" libstrix-dev "$version"
    deb_pack libstrix-dev "$s" "$arch" "$version" "" "$outdir"
    echo "build-board: packages in $outdir: $(cd "$outdir" && ls ./*_"${version}_$arch".deb | sed 's|^\./||' | tr '\n' ' ')"
}
