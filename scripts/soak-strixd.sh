#!/usr/bin/env bash
# A bounded soak of strixd on loopback: both pipelines on looping bundled media,
# alerts to a real mosquitto, for SOAK_S seconds (default 600). Samples strixd's
# RSS every 30 s and fails if the final RSS exceeds the RSS after the first
# minute (warm-up) by more than 5%. Not part of the test command (it takes 10 min).
set -euo pipefail
cd "$(dirname "$0")/.."
soak=${SOAK_S:-600}
cargo build -q --release -p strix-tools -p strix-firmware
dir=out/soak; rm -rf "$dir"; mkdir -p "$dir"
strix=target/release/strix
$strix convert models/fastestdet/FastestDet.onnx --calib models/images/*.jpg models/images/*.png -o "$dir/fastestdet.strix" 2>/dev/null
$strix convert models/kws/kws_dscnn_f32.onnx --calib models/kws/*.wav -o "$dir/kws.strix" 2>/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$port" > "$dir/mosquitto.conf"
mosquitto -c "$dir/mosquitto.conf" >/dev/null 2>&1 & broker=$!
cat > "$dir/strixd.toml" <<CFG
device = "soak"
[camera]
source = "$(pwd)/models/images"
model = "fastestdet.strix"
fps = 10
realtime = true
loop = true
[speech]
source = "$(pwd)/models/kws/yes_1000ms.wav"
model = "kws.strix"
realtime = true
loop = true
keywords = ["yes"]
[outbox]
path = "outbox.redb"
[mqtt]
host = "127.0.0.1"
port = $port
[stdout]
enabled = false
CFG
target/release/strixd --config "$dir/strixd.toml" >/dev/null 2>"$dir/strixd.err" & pid=$!
trap 'kill $pid $broker 2>/dev/null || true' EXIT
rss() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
sleep 60; base=$(rss); echo "t=60s rss=${base} kB (baseline)"
t=60
while [ $t -lt "$soak" ]; do sleep 30; t=$((t + 30)); echo "t=${t}s rss=$(rss) kB"; done
final=$(rss)
limit=$((base * 105 / 100))
echo "baseline ${base} kB, final ${final} kB, limit ${limit} kB"
[ "$final" -le "$limit" ] || { echo "RSS grew more than 5%"; exit 1; }
echo "soak: RSS within 5% over ${soak} s"
