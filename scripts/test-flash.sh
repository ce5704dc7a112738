#!/usr/bin/env bash
# SC2015: `A && B || fail` is meant (fail unless both hold); SC2016: the
# stand-in scripts are written with their own $1 $2 $3.
# shellcheck disable=SC2015,SC2016
# End-to-end test of `strix flash` (issue 15, "Done when"):
#   1. builds the host `strix` and a statically linked aarch64 strixd
#      (features: gpio-cdev; ALSA and V4L2 are not built here: the test
#      uses a camera image directory), converts FastestDet (models/),
#   2. `strix flash --board rpi4 --to <temporary root>` with a camera config
#      on the bundled media (models/images) and MQTT to a mosquitto on
#      loopback; the health check runs the installed strixd under
#      qemu-aarch64,
#   3. runs the installed strixd (/usr/bin/strixd -> the release) under
#      `timeout qemu-aarch64` and checks at a mosquitto_sub subscriber that a
#      person alert, the Home Assistant discovery config and a snapshot
#      arrive (a snapshot topic when strixd has one, else the JPEG at the
#      event's snapshot path inside the root),
#   4. checks the real strixd refuses a tampered model and a tampered bundle
#      (exit 3), that a strixd failing its health check is rolled back, and
#      that an aarch64 strixd is refused for an armv7 board,
#   5. flashes over SSH (`ssh://user@127.0.0.1:PORT/<dir>`) to an sshd it
#      starts on loopback with its own keys and config: install, health check,
#      rollback and a refused key, with the real ssh and scp. The "board" is
#      this host there, so its strixd is a stand-in script that verifies the
#      installed bundle with `strix verify` (the aarch64 strixd would need
#      binfmt_misc to run over ssh).
# Fails (exit 1, naming the step) when any of that does not happen.
# Needs: Debian/Ubuntu; installs qemu-user, the aarch64 cross gcc, mosquitto
# and mosquitto-clients when missing (scripts/lib/arm.sh). Env:
# CARGO_TARGET_DIR (default target), KEEP=1 keeps the work directory.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/arm.sh
source scripts/lib/arm.sh
start=$SECONDS
step() { echo "== test-flash: $* ($((SECONDS - start)) s)"; }
fail() {
    echo "test-flash: FAILED: $* (KEEP=1 keeps the work directory)" >&2
    exit 1
}

arm_tools mosquitto mosquitto-clients python3 openssh-server openssh-client
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
target=$(mkdir -p "$CARGO_TARGET_DIR" && cd "$CARGO_TARGET_DIR" && pwd)

step "build strix (host)"
arm_timed "cargo build strix" 1800 cargo build --release -q -p strix-tools
strix=$target/release/strix
step "build strixd for aarch64 (static)"
if [[ -n ${STRIXD:-} ]]; then
    strixd=$STRIXD # a prebuilt static aarch64 strixd
elif [[ -x scripts/build-board.sh ]]; then
    arm_timed "build-board.sh rpi4 --static" 2400 scripts/build-board.sh rpi4 --static
    strixd=$target/aarch64-unknown-linux-gnu/dist-static/strixd
else
    # As scripts/lib/arm.sh links every guest: +crt-static (see there why).
    arm_timed "cargo build strixd aarch64" 2400 cargo build --release -q -p strix-firmware \
        --target aarch64-unknown-linux-gnu --no-default-features --features gpio-cdev
    strixd=$target/aarch64-unknown-linux-gnu/release/strixd
fi
[[ -x $strixd ]] || fail "no strixd at $strixd"

work=$(mktemp -d /tmp/strix-flash-e2e.XXXXXX)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ ${KEEP:-0} == 1 ]]; then echo "test-flash: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

step "convert FastestDet, key, media"
arm_timed "strix convert" 300 "$strix" convert models/fastestdet/FastestDet.onnx \
    --calib models/images/fastestdet_0.jpg models/images/fastestdet_3.jpg models/images/camera.png \
    -o "$work/fastestdet.strix" >/dev/null
"$strix" keygen -o "$work/strix.key" >/dev/null
# A camera that sees the same person for 8 frames (the bundled photo).
mkdir -p "$work/media"
for i in 1 2 3 4 5 6 7 8; do cp models/images/fastestdet_3.jpg "$work/media/frame_$i.jpg"; done

step "mosquitto on loopback"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$port" >"$work/mosquitto.conf"
timeout 600 mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
    timeout 5 mosquitto_pub -h 127.0.0.1 -p "$port" -t strix-test/ping -m up 2>/dev/null && break
    sleep 0.2
done
timeout 5 mosquitto_pub -h 127.0.0.1 -p "$port" -t strix-test/ping -m up || fail "mosquitto did not start (see $work/mosquitto.log)"
timeout 600 mosquitto_sub -h 127.0.0.1 -p "$port" -v -t 'strix/#' -t 'homeassistant/#' >"$work/sub.log" 2>&1 &
pids+=($!)
# The first snapshot image, raw (strixd versions with an MQTT snapshot topic).
timeout 600 mosquitto_sub -h 127.0.0.1 -p "$port" -t 'strix/e2e/+/snapshot' -C 1 -N >"$work/snapshot.bin" 2>/dev/null &
pids+=($!)

cat >"$work/strixd.toml" <<EOF
device = "e2e"
[camera]
source = "$work/media"
model = "fastestdet.strix"
fps = 10.0
realtime = false
[camera.motion]
enabled = false
[mqtt]
host = "127.0.0.1"
port = $port
discovery = true
EOF

root=$work/root
mkdir -p "$root"
step "strix flash --board rpi4 --to $root (health check under qemu-aarch64)"
arm_timed "strix flash" 600 "$strix" flash --board rpi4 --to "$root" --config "$work/strixd.toml" \
    --strixd "$strixd" --key "$work/strix.key" --health-timeout 240 | tee "$work/flash.log" ||
    fail "strix flash"
grep -q "health check passed" "$work/flash.log" || fail "no passed health check in the flash output"
release=$(readlink "$root/usr/share/strix/current")
[[ -x $root/usr/bin/strixd && -f $root/etc/strix/strix.pub ]] || fail "installed layout"
"$strix" verify --pub "$work/strix.key.pub" "$root/usr/share/strix/current" || fail "strix verify of the installed bundle"

step "run the installed strixd under qemu-aarch64"
rc=0
arm_timed "installed strixd" 300 qemu-aarch64 "$root/usr/bin/strixd" --config "$root/etc/strix/strixd.toml" \
    >"$work/strixd.out" 2>"$work/strixd.err" || rc=$?
[[ $rc == 0 ]] || {
    tail -20 "$work/strixd.err" >&2
    fail "installed strixd exited $rc"
}
grep -q "bundle .* verified" "$work/strixd.err" || fail "strixd did not verify the bundle (trusted_key)"
sleep 1
kill "${pids[1]}" 2>/dev/null || true

step "check what the subscriber got"
events=$(grep -a '^strix/e2e/events ' "$work/sub.log" || true)
grep -q '"type":"new"' <<<"$events" && grep -q '"label":"person"' <<<"$events" ||
    fail "no person alert on strix/e2e/events (subscriber log: $work/sub.log)"
grep -aq '^homeassistant/binary_sensor/strix_e2e/person/config ' "$work/sub.log" ||
    fail "no Home Assistant discovery config for person"
if grep -aqE '^strix/e2e/[A-Za-z0-9_]+/snapshot ' "$work/sub.log"; then
    [[ $(head -c 2 "$work/snapshot.bin" | od -An -tx1 | tr -d ' ') == ffd8 ]] ||
        fail "the MQTT snapshot is not a JPEG ($work/snapshot.bin)"
    echo "snapshot: a $(stat -c %s "$work/snapshot.bin")-byte JPEG on $(grep -aoE '^strix/e2e/[A-Za-z0-9_]+/snapshot' "$work/sub.log" | head -1)"
else
    snap=$(python3 -c '
import json, sys
for line in sys.stdin:
    ev = json.loads(line.split(" ", 1)[1])
    if ev.get("type") == "new" and ev.get("snapshot"):
        print(ev["snapshot"]); break
' <<<"$events")
    [[ -n $snap ]] || fail "the person event names no snapshot"
    real=$(realpath -e "$snap") || fail "snapshot $snap does not exist"
    [[ $real == "$(realpath "$root")/var/lib/strix/snapshots/"* ]] || fail "snapshot $real is not under the root's /var/lib/strix/snapshots"
    [[ $(head -c 2 "$real" | od -An -tx1 | tr -d ' ') == ffd8 ]] || fail "snapshot $real is not a JPEG"
    echo "snapshot: $real (no MQTT snapshot topic in this strixd)"
fi

check_refused() { # LABEL PATTERN: the installed strixd --check must exit 3 saying PATTERN
    local rc=0
    arm_timed "strixd --check ($1)" 120 qemu-aarch64 "$root/usr/bin/strixd" --check \
        --config "$root/etc/strix/strixd.toml" >"$work/check.out" 2>"$work/check.err" || rc=$?
    [[ $rc == 3 ]] || fail "$1: strixd --check exited $rc, expected 3: $(cat "$work/check.err")"
    grep -q "$2" "$work/check.err" || fail "$1: strixd did not say '$2': $(cat "$work/check.err")"
    echo "refused ($1): $(grep -m1 'error' "$work/check.err")"
}
step "strixd refuses a tampered model and a tampered bundle"
cur=$root/usr/share/strix/current
model=$cur/models/fastestdet.strix
cp "$model" "$work/model.bak"
printf '\x5a' | dd of="$model" bs=1 seek=$(($(stat -c %s "$model") / 2)) conv=notrunc status=none
check_refused "tampered model" "changed"
cp "$work/model.bak" "$model"
# A model re-signed by another key: the bundle catches the changed .sig; and
# without the bundle's MANIFEST, the model's own check names the keys.
"$strix" keygen -o "$work/other.key" >/dev/null
cp "$model.sig" "$work/sig.bak"
"$strix" sign --key "$work/other.key" "$model" >/dev/null
check_refused "model signed by another key" "changed after it was signed"
mv "$cur/MANIFEST" "$work/MANIFEST.bak"
check_refused "model signed by another key, no MANIFEST" "the trusted key is"
mv "$work/MANIFEST.bak" "$cur/MANIFEST"
cp "$work/sig.bak" "$model.sig"
echo "# edited" >>"$cur/boards/rpi4.toml"
check_refused "tampered bundle" "changed after it was signed"
sed -i '$d' "$cur/boards/rpi4.toml"
arm_timed "strixd --check (restored)" 120 qemu-aarch64 "$root/usr/bin/strixd" --check \
    --config "$root/etc/strix/strixd.toml" >/dev/null 2>&1 || fail "the restored bundle does not pass --check"

step "a strixd failing its health check is rolled back"
sed "s|source = \"$work/media\"|source = \"$work/no-such-media\"|" "$work/strixd.toml" >"$work/broken.toml"
rc=0
arm_timed "strix flash (broken)" 600 "$strix" flash --board rpi4 --to "$root" --config "$work/broken.toml" \
    --strixd "$strixd" --key "$work/strix.key" --health-timeout 240 >"$work/flash2.log" 2>&1 || rc=$?
[[ $rc != 0 ]] || fail "flash with a broken config succeeded"
grep -q "rolled back" "$work/flash2.log" || fail "no rollback: $(cat "$work/flash2.log")"
[[ $(readlink "$root/usr/share/strix/current") == "$release" ]] || fail "current does not point at $release again"
echo "rolled back: current -> $release"

step "refused at flash time: an aarch64 strixd for an armv7 board"
rc=0
"$strix" flash --board rv1106 --to "$root" --config "$work/strixd.toml" --strixd "$strixd" \
    --key "$work/strix.key" --dry-run >"$work/flash3.log" 2>&1 || rc=$?
[[ $rc != 0 ]] && grep -q "is built for aarch64" "$work/flash3.log" || fail "rv1106 not refused: $(cat "$work/flash3.log")"

step "flash over SSH to an sshd on loopback"
ssh_dir=$work/ssh
sshroot=$work/sshroot
mkdir -p "$ssh_dir" "$work/bin" "$sshroot"
ssh-keygen -q -t ed25519 -N '' -f "$ssh_dir/id"
ssh-keygen -q -t ed25519 -N '' -f "$ssh_dir/host"
cp "$ssh_dir/id.pub" "$ssh_dir/authorized_keys"
sport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf '%s\n' "Port $sport" "ListenAddress 127.0.0.1" "HostKey $ssh_dir/host" \
    "AuthorizedKeysFile $ssh_dir/authorized_keys" "PasswordAuthentication no" \
    "KbdInteractiveAuthentication no" "UsePAM no" "StrictModes no" \
    "PermitRootLogin prohibit-password" "PidFile $ssh_dir/sshd.pid" "Subsystem sftp internal-sftp" >"$ssh_dir/sshd_config"
# sshd run as root wants its privilege separation directory.
[[ $(id -u) != 0 ]] || mkdir -p /run/sshd
timeout 600 /usr/sbin/sshd -D -e -f "$ssh_dir/sshd_config" 2>"$ssh_dir/sshd.log" &
pids+=($!)
printf '%s\n' "Host *" "  IdentityFile $ssh_dir/id" "  IdentitiesOnly yes" \
    "  UserKnownHostsFile /dev/null" "  StrictHostKeyChecking no" "  LogLevel ERROR" >"$ssh_dir/config"
# The real ssh and scp, given this test's keys (strix flash runs `ssh` and
# `scp` from PATH): wrappers in the work directory only.
for t in ssh scp; do
    real=$(command -v "$t") || fail "$t is not installed"
    printf '#!/bin/sh\nexec %s -F %s "$@"\n' "$real" "$ssh_dir/config" >"$work/bin/$t"
    chmod +x "$work/bin/$t"
done
wpath=$work/bin:$PATH
me=$(id -un)
for _ in $(seq 50); do
    PATH=$wpath timeout 10 ssh -o BatchMode=yes -p "$sport" "$me@127.0.0.1" true 2>/dev/null && break
    sleep 0.2
done
PATH=$wpath timeout 10 ssh -o BatchMode=yes -p "$sport" "$me@127.0.0.1" true ||
    fail "sshd on 127.0.0.1:$sport does not let us in: $(tail -3 "$ssh_dir/sshd.log")"
# strixd stand-ins for this host as the "board": one verifies the installed
# bundle against the installed key (as strixd would), one fails.
printf '%s\n' '#!/bin/sh' '[ "$1" = --check ] && [ "$2" = --config ] || exit 9' \
    "exec $strix verify --pub $sshroot/etc/strix/strix.pub \"\$(dirname \"\$3\")\"" >"$work/strixd-verify"
printf '%s\n' '#!/bin/sh' 'echo "strixd: error: camera source missing" >&2' 'exit 4' >"$work/strixd-fail"
chmod +x "$work/strixd-verify" "$work/strixd-fail"
dest="ssh://$me@127.0.0.1:$sport$sshroot"
ssh_flash() { # LOG STRIXD KEY
    PATH=$wpath arm_timed "strix flash $dest" 300 "$strix" flash --board rpi4 --to "$dest" \
        --config "$work/strixd.toml" --strixd "$2" --key "$3" >"$work/$1" 2>&1
}
ssh_flash ssh1.log "$work/strixd-verify" "$work/strix.key" || fail "flash over ssh: $(cat "$work/ssh1.log")"
grep -q "bundle OK" "$work/ssh1.log" || fail "the remote health check did not verify the bundle: $(cat "$work/ssh1.log")"
ssh_release=$(readlink "$sshroot/usr/share/strix/current")
"$strix" verify --pub "$work/strix.key.pub" "$sshroot/usr/share/strix/current" >/dev/null ||
    fail "the bundle installed over ssh does not verify"
[[ -L $sshroot/usr/bin/strixd && -f $sshroot/etc/strix/strix.pub ]] || fail "layout installed over ssh"
sleep 1 # a new release id
rc=0
ssh_flash ssh2.log "$work/strixd-fail" "$work/strix.key" || rc=$?
[[ $rc != 0 ]] && grep -q "rolled back" "$work/ssh2.log" || fail "no rollback over ssh: $(cat "$work/ssh2.log")"
[[ $(readlink "$sshroot/usr/share/strix/current") == "$ssh_release" ]] || fail "ssh rollback: current moved"
[[ $(ls "$sshroot/usr/share/strix/releases") == "${ssh_release#releases/}" ]] ||
    fail "the failed release was not removed: $(ls "$sshroot/usr/share/strix/releases")"
rc=0
ssh_flash ssh3.log "$work/strixd-verify" "$work/other.key" || rc=$?
[[ $rc != 0 ]] && grep -q "trusts another key" "$work/ssh3.log" || fail "another key not refused over ssh: $(cat "$work/ssh3.log")"
echo "ssh: installed $ssh_release, rolled back a failing strixd, refused another key"

echo "test-flash: all checks passed in $((SECONDS - start)) s"
