//! Helpers shared by the fuzz targets: the `.strix` container taken apart and
//! put back together with correct checksums (so mutations reach the parsers
//! behind them), a mutator of the numbers in JSON sections, a small PRNG for
//! custom mutators, and the load -> session -> run -> decode path that every
//! model target ends in.
//!
//! The container layout mirrors `runtime/src/format.rs` (read that file for
//! the authoritative description); it is duplicated here on purpose: the
//! fuzzer must be able to build files the runtime's own writer never would.

use sha2::{Digest, Sha256};
use std::path::PathBuf;
use strix_kernels::Isa;
use strix_runtime::postprocess::decode;
use strix_runtime::{Model, Session};

const HEADER: usize = 64;
const ENTRY: usize = 64;
const ALIGN: usize = 64;
const MAX_SECTIONS: usize = 16;
/// Sections inflated by [`Container::parse`] larger than this stay stored
/// as they are (the mutator must not allocate what the loader refuses).
const MAX_RAW: usize = 16 << 20;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Rewrites, in place, the declared file length, the checksum of every
/// section that lies inside the file and the section table checksum of a
/// `.strix` image, so that mutated bytes get past the integrity checks.
/// Leaves alone what it cannot interpret (too short, a section count out of
/// range); the loader then rejects the input as it would the raw bytes.
/// Idempotent: a well-formed file is unchanged.
pub fn reseal(b: &mut [u8]) {
    if b.len() < HEADER {
        return;
    }
    let len = b.len() as u64;
    b[16..24].copy_from_slice(&len.to_le_bytes());
    let count = u32_at(b, 12) as usize;
    if count == 0 || count > MAX_SECTIONS || HEADER + count * ENTRY > b.len() {
        return;
    }
    for i in 0..count {
        let e = HEADER + i * ENTRY;
        let off = u64_at(b, e + 8);
        let n = u64_at(b, e + 16);
        let Some(end) = off.checked_add(n).filter(|&end| end <= len) else {
            continue;
        };
        let digest = Sha256::digest(&b[off as usize..end as usize]);
        b[e + 32..e + 64].copy_from_slice(&digest);
    }
    let digest = Sha256::digest(&b[HEADER..HEADER + count * ENTRY]);
    b[24..56].copy_from_slice(&digest);
}

/// One section of a [`Container`], decompressed when it was compressed.
#[derive(Clone, Debug)]
pub struct Section {
    pub tag: [u8; 8],
    /// The section's content: inflated if `compressed`, else as stored.
    pub data: Vec<u8>,
    /// Whether [`Container::to_bytes`] stores it zlib-compressed.
    pub compressed: bool,
}

/// A `.strix` image as a list of sections, for structure-aware mutation.
#[derive(Clone, Debug)]
pub struct Container {
    pub version: u32,
    pub sections: Vec<Section>,
}

impl Container {
    /// Takes a `.strix` image apart. `None` if the header or the table is
    /// unusable (bad magic, section count, a section outside the file). A
    /// compressed section that does not inflate (or inflates past 16 MiB) is
    /// kept as stored bytes, uncompressed.
    pub fn parse(b: &[u8]) -> Option<Self> {
        if b.len() < HEADER || b[..8] != *b"STRIX\0\r\n" {
            return None;
        }
        let version = u32_at(b, 8);
        let count = u32_at(b, 12) as usize;
        if count == 0 || count > MAX_SECTIONS || HEADER + count * ENTRY > b.len() {
            return None;
        }
        let mut sections = Vec::with_capacity(count);
        for i in 0..count {
            let e = HEADER + i * ENTRY;
            let off = u64_at(b, e + 8);
            let n = u64_at(b, e + 16);
            let end = off.checked_add(n).filter(|&end| end <= b.len() as u64)?;
            let stored = &b[off as usize..end as usize];
            let raw_len = u64_at(b, e + 24);
            let inflated = if raw_len == 0 {
                None
            } else {
                miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(stored, MAX_RAW).ok()
            };
            sections.push(Section {
                tag: b[e..e + 8].try_into().expect("8 bytes"),
                compressed: inflated.is_some(),
                data: inflated.unwrap_or_else(|| stored.to_vec()),
            });
        }
        Some(Container { version, sections })
    }

    /// Lays the container out as the runtime's writer does (64-byte aligned
    /// sections, correct lengths and checksums). Compression uses level 1:
    /// the mutator runs once per execution.
    pub fn to_bytes(&self) -> Vec<u8> {
        let bodies: Vec<(Vec<u8>, u64)> = self
            .sections
            .iter()
            .map(|s| {
                if s.compressed && !s.data.is_empty() {
                    let z = miniz_oxide::deflate::compress_to_vec_zlib(&s.data, 1);
                    (z, s.data.len() as u64)
                } else {
                    (s.data.clone(), 0)
                }
            })
            .collect();
        let mut table = Vec::with_capacity(ENTRY * bodies.len());
        let mut offset = align(HEADER + ENTRY * bodies.len());
        for (s, (body, raw_len)) in self.sections.iter().zip(&bodies) {
            table.extend_from_slice(&s.tag);
            table.extend_from_slice(&(offset as u64).to_le_bytes());
            table.extend_from_slice(&(body.len() as u64).to_le_bytes());
            table.extend_from_slice(&raw_len.to_le_bytes());
            table.extend_from_slice(&Sha256::digest(body));
            offset = align(offset + body.len());
        }
        let mut out = Vec::with_capacity(offset);
        out.extend_from_slice(b"STRIX\0\r\n");
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(bodies.len() as u32).to_le_bytes());
        out.extend_from_slice(&(offset as u64).to_le_bytes());
        out.extend_from_slice(&Sha256::digest(&table));
        out.extend_from_slice(&[0u8; 8]);
        out.extend_from_slice(&table);
        for (body, _) in &bodies {
            out.resize(align(out.len()), 0);
            out.extend_from_slice(body);
        }
        out.resize(offset, 0);
        out
    }

    /// Index of the first section whose tag starts with `name`.
    pub fn find(&self, name: &[u8]) -> Option<usize> {
        self.sections
            .iter()
            .position(|s| s.tag.starts_with(name) && s.tag[name.len()..].iter().all(|&b| b == 0))
    }
}

fn align(x: usize) -> usize {
    x.div_ceil(ALIGN) * ALIGN
}

/// Byte ranges of the number tokens of JSON text, strings skipped. Works on
/// broken JSON too (it only tracks quotes and escapes).
pub fn json_numbers(text: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let (mut i, mut in_string) = (0, false);
    while i < text.len() {
        let c = text[i];
        if in_string {
            match c {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
        } else if c == b'"' {
            in_string = true;
            i += 1;
        } else if c == b'-' || c.is_ascii_digit() {
            let start = i;
            i += 1;
            while i < text.len()
                && (text[i].is_ascii_digit() || matches!(text[i], b'.' | b'e' | b'E' | b'+' | b'-'))
            {
                i += 1;
            }
            spans.push((start, i));
        } else {
            i += 1;
        }
    }
    spans
}

/// Values that break size arithmetic: zero, one, sign and width boundaries,
/// and magnitudes whose products wrap a 64-bit `usize`.
const BOUNDARIES: [&str; 22] = [
    "0",
    "1",
    "-1",
    "2",
    "3",
    "255",
    "256",
    "65536",
    "2147483647",
    "2147483648",
    "4294967295",
    "4294967296",
    "4611686018427387904",  // 2^62
    "9223372036854775807",  // 2^63 - 1
    "9223372036854775808",  // 2^63
    "18446744073709551615", // u64::MAX
    "-2147483648",
    "1e30",
    "-1e30",
    "0.5",
    "-0.0",
    "1e-40",
];

/// Replaces one number of JSON `text`: number `pick` (modulo their count) by
/// a boundary value or by a value derived from the original (plus or minus
/// one, doubled, plus 2^32, 2^62 or 2^63 wrapping in 64 bits: a dimension
/// that multiplies back to its original value when products wrap), chosen
/// by `how`. Returns false if the text has no number.
pub fn mutate_json_number(text: &mut Vec<u8>, pick: usize, how: usize) -> bool {
    let spans = json_numbers(text);
    if spans.is_empty() {
        return false;
    }
    let (s, e) = spans[pick % spans.len()];
    let orig = std::str::from_utf8(&text[s..e]).unwrap_or("0");
    let derived = orig.parse::<i128>().ok().map(|v| {
        let w = v as u64;
        // Wrapping: repeated mutations can grow a number to any size.
        [
            v.wrapping_add(1).to_string(),
            v.wrapping_sub(1).to_string(),
            v.wrapping_mul(2).to_string(),
            w.wrapping_add(1 << 32).to_string(),
            w.wrapping_add(1 << 62).to_string(),
            w.wrapping_add(1 << 63).to_string(),
        ]
    });
    let n = BOUNDARIES.len() + derived.as_ref().map_or(0, |d| d.len());
    let k = how % n;
    let new = match (k.checked_sub(BOUNDARIES.len()), &derived) {
        (Some(j), Some(d)) => d[j].clone(),
        _ => BOUNDARIES[k % BOUNDARIES.len()].to_string(),
    };
    text.splice(s..e, new.into_bytes());
    true
}

/// Copies number `from` of JSON `text` over number `to` (both modulo their
/// count): makes dimensions agree (or disagree) with each other.
pub fn copy_json_number(text: &mut Vec<u8>, from: usize, to: usize) -> bool {
    let spans = json_numbers(text);
    if spans.is_empty() {
        return false;
    }
    let (fs, fe) = spans[from % spans.len()];
    let (ts, te) = spans[to % spans.len()];
    let value = text[fs..fe].to_vec();
    text.splice(ts..te, value);
    true
}

/// One protobuf field value, as far as the wire format tells: a
/// length-delimited field that parses as a message is taken as one (names
/// and raw tensor data occasionally do too; re-encoding is lossless either
/// way for canonical input).
#[derive(Clone, Debug)]
pub enum Pb {
    Varint(u64),
    I64([u8; 8]),
    I32([u8; 4]),
    Bytes(Vec<u8>),
    Msg(Vec<(u32, Pb)>),
}

fn read_varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Parses a protobuf message (fields of any number, nested messages
/// guessed up to 12 levels deep). `None` if `b` is not one.
pub fn pb_parse(b: &[u8]) -> Option<Vec<(u32, Pb)>> {
    pb_parse_depth(b, 0)
}

fn pb_parse_depth(b: &[u8], depth: usize) -> Option<Vec<(u32, Pb)>> {
    let mut at = 0;
    let mut fields = Vec::new();
    while at < b.len() {
        let key = read_varint(b, &mut at)?;
        let field = u32::try_from(key >> 3).ok().filter(|&f| f > 0)?;
        let value = match key & 7 {
            0 => Pb::Varint(read_varint(b, &mut at)?),
            1 => {
                let v = b.get(at..at + 8)?.try_into().ok()?;
                at += 8;
                Pb::I64(v)
            }
            5 => {
                let v = b.get(at..at + 4)?.try_into().ok()?;
                at += 4;
                Pb::I32(v)
            }
            2 => {
                let n = usize::try_from(read_varint(b, &mut at)?).ok()?;
                let body = b.get(at..at.checked_add(n)?)?;
                at += n;
                match (depth < 12 && !body.is_empty())
                    .then(|| pb_parse_depth(body, depth + 1))
                    .flatten()
                {
                    Some(m) => Pb::Msg(m),
                    None => Pb::Bytes(body.to_vec()),
                }
            }
            _ => return None,
        };
        fields.push((field, value));
    }
    Some(fields)
}

/// Encodes a message parsed by [`pb_parse`] (length prefixes recomputed).
pub fn pb_encode(fields: &[(u32, Pb)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (field, value) in fields {
        let key = u64::from(*field) << 3;
        match value {
            Pb::Varint(v) => {
                write_varint(&mut out, key);
                write_varint(&mut out, *v);
            }
            Pb::I64(b) => {
                write_varint(&mut out, key | 1);
                out.extend_from_slice(b);
            }
            Pb::I32(b) => {
                write_varint(&mut out, key | 5);
                out.extend_from_slice(b);
            }
            Pb::Bytes(b) => {
                write_varint(&mut out, key | 2);
                write_varint(&mut out, b.len() as u64);
                out.extend_from_slice(b);
            }
            Pb::Msg(m) => {
                let body = pb_encode(m);
                write_varint(&mut out, key | 2);
                write_varint(&mut out, body.len() as u64);
                out.extend_from_slice(&body);
            }
        }
    }
    out
}

/// Calls `op` on the message holding entry `k` (pre-order over all
/// entries of all nested messages) and that entry's index; false if there
/// are fewer entries.
pub fn pb_with_entry(
    msg: &mut Vec<(u32, Pb)>,
    k: &mut usize,
    op: &mut dyn FnMut(&mut Vec<(u32, Pb)>, usize),
) -> bool {
    for i in 0..msg.len() {
        if *k == 0 {
            op(msg, i);
            return true;
        }
        *k -= 1;
        if let Pb::Msg(sub) = &mut msg[i].1 {
            if pb_with_entry(sub, k, op) {
                return true;
            }
        }
    }
    false
}

/// Number of entries of a parsed message, nested ones included.
pub fn pb_count(msg: &[(u32, Pb)]) -> usize {
    msg.iter()
        .map(|(_, v)| 1 + if let Pb::Msg(m) = v { pb_count(m) } else { 0 })
        .sum()
}

/// Every varint of a parsed message, pre-order.
pub fn pb_varints(msg: &mut [(u32, Pb)]) -> Vec<&mut u64> {
    let mut out = Vec::new();
    for (_, v) in msg {
        match v {
            Pb::Varint(x) => out.push(x),
            Pb::Msg(sub) => out.extend(pb_varints(sub)),
            _ => {}
        }
    }
    out
}

/// A boundary value for a protobuf integer (int64 negatives are 10-byte
/// two's complement varints), or one derived from `orig`.
pub fn pb_boundary(orig: u64, how: usize) -> u64 {
    const V: [u64; 17] = [
        0,
        1,
        2,
        3,
        7,
        8,
        255,
        256,
        65535,
        (1 << 31) - 1,
        1 << 31,
        1 << 32,
        1 << 62,
        1 << 63,
        u64::MAX,      // -1
        u64::MAX - 1,  // -2
        (1 << 63) - 1, // i64::MAX
    ];
    match how % (V.len() + 4) {
        i if i < V.len() => V[i],
        17 => orig.wrapping_add(1),
        18 => orig.wrapping_sub(1),
        19 => orig.wrapping_mul(2),
        _ => orig.wrapping_add(1 << 62),
    }
}

/// CRC-32 (IEEE, as PNG chunks use).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

/// Recomputes the CRC of every complete chunk of a PNG file in place, so
/// that mutated headers and data reach the decoder instead of failing the
/// checksum. Stops at the first chunk running past the end.
pub fn fix_png_crcs(b: &mut [u8]) {
    let mut at = 8;
    while at + 12 <= b.len() {
        let n = u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes")) as usize;
        let Some(end) = (at + 8).checked_add(n).filter(|&e| e + 4 <= b.len()) else {
            return;
        };
        let crc = crc32(&b[at + 4..end]);
        b[end..end + 4].copy_from_slice(&crc.to_be_bytes());
        at = end + 4;
    }
}

/// xorshift64*: enough randomness for a custom mutator, seeded by libFuzzer.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u32) -> Self {
        Rng(u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Files up to this size also run on the scalar (reference) kernels; larger
/// ones (FastestDet, UltraFace) only on the detected path, where the scalar
/// run would cost most of the fuzzing time.
const SCALAR_RUN_MAX_BYTES: usize = 100_000;

/// Loads `bytes` as a model and, if it loads, runs it once on zero inputs
/// on the detected kernel path and (small files) on the scalar one, then
/// decodes the outputs with the model's decoder (what `strix run` does).
///
/// Panics (a finding) when a model that passed validation fails to run:
/// the C ABI reports that as `STRIX_E_INTERNAL`, "a bug inside the library".
pub fn load_and_run(bytes: &[u8]) {
    let Ok(model) = Model::from_bytes(bytes) else {
        return;
    };
    run_once(&model);
    if model.isa() != Isa::Scalar && bytes.len() <= SCALAR_RUN_MAX_BYTES {
        let scalar = model
            .with_isa(Isa::Scalar)
            .expect("the scalar path runs everywhere");
        run_once(&scalar);
    }
}

fn run_once(m: &Model) {
    let mut s = Session::new(m);
    if let Err(e) = s.run() {
        panic!("a model that passed validation failed to run: {e}");
    }
    let g = &m.graph;
    let mut outs = Vec::new();
    for (i, &id) in g.outputs.iter().enumerate() {
        let mut v = Vec::new();
        if s.output_f32(i, &mut v).is_ok() {
            outs.push((v, g.tensors[id].shape.clone()));
        }
    }
    let views: Vec<(&[f32], &[usize])> = outs
        .iter()
        .map(|(v, s)| (v.as_slice(), s.as_slice()))
        .collect();
    let _ = decode(&m.meta.decoder, &views);
}

/// Writes `bytes` to this process's scratch file with extension `ext` (for
/// readers that only take a path) and returns its path. One file per
/// process and extension, overwritten by each execution.
pub fn scratch_file(ext: &str, bytes: &[u8]) -> PathBuf {
    let p = std::env::temp_dir().join(format!("strix-fuzz-{}.{ext}", std::process::id()));
    std::fs::write(&p, bytes).expect("the temp directory is writable");
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_outside_strings_only() {
        let t = br#"{"a-1":[1,-2.5e3],"s":"x\"9","b":7}"#;
        let got: Vec<&[u8]> = json_numbers(t).iter().map(|&(s, e)| &t[s..e]).collect();
        assert_eq!(got, [&b"1"[..], b"-2.5e3", b"7"]);
    }

    #[test]
    fn protobuf_round_trip_and_png_crc() {
        // ModelProto { ir_version: 7, graph: { name: "g" } }
        let m = [0x08, 0x07, 0x3a, 0x03, 0x12, 0x01, b'g'];
        let parsed = pb_parse(&m).unwrap();
        assert_eq!(pb_encode(&parsed), m);
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
    }

    #[test]
    fn derived_values_wrap_in_64_bits() {
        let mut t = b"[5]".to_vec();
        // 22 boundaries, then +1, -1, *2, +2^32, +2^62, +2^63.
        assert!(mutate_json_number(&mut t, 0, 22 + 4));
        assert_eq!(t, b"[4611686018427387909]");
    }
}
