#!/usr/bin/env bash
# Generate a labelled keyword-spotting test set with espeak-ng and sox.
#
# usage: gen_kws_clips.sh OUT_DIR [N_PER_CLASS]
#
# Writes N_PER_CLASS (default 20) one-second clips, 16 kHz mono 16-bit WAV,
# for each of the 12 labels of the MLPerf Tiny KWS model, as
# OUT_DIR/<label>/<label>_<idx>.wav:
#   * the 10 keywords: down go left no off on right stop up yes
#   * _unknown_: other Speech Commands words (house, bird, seven, marvin, ...)
#   * _silence_: low-level white or pink noise only
# Speech varies in espeak-ng voice and variant, speed, pitch, peak level and
# position in the second, with light noise mixed in. Everything is derived
# from the clip's label and index (a MINSTD generator, and sox -R for its own
# noise), so the same arguments always give byte-identical files, and a larger
# N_PER_CLASS only adds clips. WAVs already in OUT_DIR/<label>/ are replaced.
#
# The default 240 clips take well under a minute on 2 cores (clips run in
# parallel with xargs; set KWS_JOBS to change the number of jobs).
#
# KWS_PROFILE=accents makes a harder, differently distributed set: English
# words in 14 other espeak-ng voices' accents (de fr es it pl ru hi pt nl sv
# cs hu vi fi) besides en-us/en-gb, speeds 90-300 words/min, peaks down to
# -24 dB and noise at -20 to -45 dB (standard: 8 English voices, 120-210,
# -1 to -12 dB, -45 to -70 dB).
#
# Synthetic speech is a hard, out-of-distribution test for the model: use the
# set to compare int8 against fp32, not as an accuracy benchmark.
set -euo pipefail

KEYWORDS=(down go left no off on right stop up yes)
LABELS=("${KEYWORDS[@]}" _unknown_ _silence_)
UNKNOWN_WORDS=(bed bird cat dog eight five four happy house marvin nine one
    seven sheila six three tree two wow zero learn follow)
VOICES=(en en-us en-gb en-gb-x-rp en-gb-scotland en-029 en-us-nyc en-gb-x-gbclan)
# Ranges per profile: speed, noise dB (below full scale), peak dB.
SPEED=(120 210) NOISE_DB=(45 70) PEAK_DB=(1 12)
case ${KWS_PROFILE:-standard} in
standard) ;;
accents)
    VOICES=(de fr es it pl ru hi pt nl sv cs hu en-us en-gb vi fi)
    SPEED=(90 300) NOISE_DB=(20 45) PEAK_DB=(1 24)
    ;;
*) echo "gen_kws_clips.sh: KWS_PROFILE must be standard or accents, not '$KWS_PROFILE'" >&2; exit 2 ;;
esac
VARIANTS=("" +f1 +f2 +f3 +f4 +f5 +m1 +m2 +m3 +m4 +m5 +m6 +m7)
NOISES=(whitenoise pinknoise brownnoise)
NOISE_BANK_SECONDS=6
RATE=16000

die() {
    echo "gen_kws_clips.sh: $*" >&2
    exit 1
}

# MINSTD (Park-Miller) generator: deterministic in any bash version, unlike
# $RANDOM. rand LO HI sets R to an integer in [LO, HI].
rng_state=1
seed() { rng_state=$(( ($1 % 2147483646) + 1 )); rand 0 1; rand 0 1; }
rand() {
    rng_state=$(( rng_state * 48271 % 2147483647 ))
    R=$(( $1 + rng_state % ($2 - $1 + 1) ))
}
# dB to a linear factor, printed for sox.
db_to_lin() { awk -v d="$1" 'BEGIN { printf "%.6f", 10 ^ (d / 20) }'; }

# One clip: __clip OUT_DIR NOISE_DIR LABEL_INDEX IDX
make_clip() {
    local out_dir=$1 noise_dir=$2 li=$3 idx=$4
    local label=${LABELS[$li]}
    local dest="$out_dir/$label/${label}_$(printf '%03d' "$idx").wav"
    local tmp
    tmp=$(mktemp -d)
    # shellcheck disable=SC2064  # expand $tmp now
    trap "rm -rf '$tmp'" EXIT
    seed $(( li * 100003 + idx * 7919 + 17 ))

    # Noise: a one-second slice of a pre-generated noise bank. _silence_ uses
    # white or pink noise only: the model calls brown noise (rumble, absent
    # from its training noise) _unknown_, so it would make a wrong label.
    local n_noises=${#NOISES[@]}
    if [[ $label == _silence_ ]]; then n_noises=2; fi
    rand 0 $(( n_noises - 1 )); local noise=${NOISES[$R]}
    rand 0 $(( (NOISE_BANK_SECONDS - 1) * RATE - 1 )); local noise_at=$R
    local noise_db
    if [[ $label == _silence_ ]]; then
        rand 40 75; noise_db=-$R
    else
        rand "${NOISE_DB[@]}"; noise_db=-$R
    fi
    sox -R "$noise_dir/$noise.wav" "$tmp/noise.wav" \
        trim "${noise_at}s" "${RATE}s" vol "$(db_to_lin "$noise_db")"

    if [[ $label == _silence_ ]]; then
        mv "$tmp/noise.wav" "$tmp/out.wav"
    else
        local word=$label
        if [[ $label == _unknown_ ]]; then
            rand 0 $(( ${#UNKNOWN_WORDS[@]} - 1 )); word=${UNKNOWN_WORDS[$R]}
        fi
        rand 0 $(( ${#VOICES[@]} - 1 )); local voice=${VOICES[$R]}
        rand 0 $(( ${#VARIANTS[@]} - 1 )); voice+=${VARIANTS[$R]}
        rand "${SPEED[@]}"; local speed=$R
        rand 20 80; local pitch=$R
        rand "${PEAK_DB[@]}"; local peak_db=-$R
        espeak-ng -v "$voice" -s "$speed" -p "$pitch" -w "$tmp/raw.wav" "$word"
        # Drop espeak's leading and trailing silence, go to 16 kHz mono,
        # set the peak level.
        sox -R -D "$tmp/raw.wav" -r "$RATE" -c 1 -b 16 "$tmp/word.wav" \
            silence 1 0.01 0.3% reverse silence 1 0.01 0.3% reverse \
            gain -n "$peak_db"
        local n
        n=$(soxi -s "$tmp/word.wav")
        # A word longer than 0.92 s (slow speed, long word) is sped up to fit.
        local max=$(( RATE * 92 / 100 ))
        if (( n > max )); then
            sox -R -D "$tmp/word.wav" "$tmp/fit.wav" \
                tempo -s "$(awk -v a="$n" -v b="$max" 'BEGIN { printf "%.4f", a / b }')"
            mv "$tmp/fit.wav" "$tmp/word.wav"
            n=$(soxi -s "$tmp/word.wav")
            (( n <= RATE )) || die "$dest: '$word' is still $n samples after tempo"
        fi
        # Place the word at a random offset (centre +- jitter), pad to exactly 1 s.
        local slack=$(( RATE - n )) lead
        rand $(( slack / 4 )) $(( slack * 3 / 4 )); lead=$R
        sox -R -D "$tmp/word.wav" "$tmp/placed.wav" pad "${lead}s" "$(( slack - lead ))s"
        sox -R -D -m -v 1 "$tmp/placed.wav" -v 1 "$tmp/noise.wav" -b 16 "$tmp/out.wav"
    fi
    [[ $(soxi -s "$tmp/out.wav") == "$RATE" ]] || die "$dest: not exactly $RATE samples"
    mv "$tmp/out.wav" "$dest"
}

if [[ ${1:-} == __clip ]]; then
    shift
    make_clip "$@"
    exit 0
fi

if [[ $# -lt 1 || $# -gt 2 || ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
    exit 2
fi
for tool in espeak-ng sox soxi awk xargs; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "'$tool' not found; install the tools with: apt-get install espeak-ng sox"
done
out_dir=$1
per_class=${2:-20}
[[ $per_class =~ ^[1-9][0-9]*$ ]] || die "N_PER_CLASS must be a positive integer, got '$per_class'"
jobs=${KWS_JOBS:-$(nproc 2>/dev/null || echo 2)}
start=$SECONDS

mkdir -p "$out_dir"
for label in "${LABELS[@]}"; do
    rm -f "$out_dir/$label"/*.wav 2>/dev/null || true
    mkdir -p "$out_dir/$label"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for noise in "${NOISES[@]}"; do
    # -R: sox seeds its generator with a fixed value, so the bank is repeatable.
    sox -R -n -r "$RATE" -c 1 -b 16 "$work/$noise.wav" synth "$NOISE_BANK_SECONDS" "$noise" vol 0.5
done

for li in "${!LABELS[@]}"; do
    for (( i = 0; i < per_class; i++ )); do
        printf '%s %s\n' "$li" "$i"
    done
done | xargs -P "$jobs" -n 2 bash "${BASH_SOURCE[0]}" __clip "$out_dir" "$work"

total=0
for label in "${LABELS[@]}"; do
    clips=("$out_dir/$label"/*.wav)
    [[ -e ${clips[0]} ]] && total=$(( total + ${#clips[@]} ))
done
expected=$(( ${#LABELS[@]} * per_class ))
[[ $total -eq $expected ]] || die "expected $expected clips in $out_dir, found $total"
echo "gen_kws_clips.sh: wrote $total clips (${#LABELS[@]} labels x $per_class, 16 kHz mono 16-bit, 1.0 s) to $out_dir in $(( SECONDS - start )) s"
