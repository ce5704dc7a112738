//! The `.strix` container, version 1.
//!
//! ```text
//! offset 0   header (64 bytes)
//!            magic "STRIX\0\r\n" | version u32 | section count u32 | file length u64
//!            | sha256 of the section table (32) | reserved (8)
//! offset 64  section table: count x 64 bytes
//!            tag [u8; 8] | offset u64 | stored length u64 | raw length u64 | sha256 (32)
//! then       sections, each starting on a 64-byte boundary (mmap- and SIMD-friendly)
//! ```
//! All integers are little-endian. Sections: `META` (JSON [`ModelMeta`]),
//! `GRAPH` (JSON [`Graph`]), `CI8`, `CI32`, `CF32` (constant pools, raw LE).
//! A section whose raw length is non-zero is stored zlib-compressed (the
//! writer compresses the graph and int32 sections; int8 weights stay raw so
//! they can be mapped in place); the checksum covers the stored bytes.
//! The loader checks the magic, version, declared length, every bound and
//! alignment and every checksum before parsing anything, then validates the
//! graph against the constants.

use crate::error::{Error, Result};
use crate::graph::{Consts, Graph};
use crate::meta::ModelMeta;
use sha2::{Digest, Sha256};

pub const MAGIC: [u8; 8] = *b"STRIX\0\r\n";
pub const VERSION: u32 = 1;
const HEADER: usize = 64;
const ENTRY: usize = 64;
const ALIGN: usize = 64;
const MAX_SECTIONS: usize = 16;
/// Files above this size are refused before any allocation.
pub const MAX_FILE_BYTES: u64 = 1 << 31;

const TAGS: [&[u8; 8]; 5] = [
    b"META\0\0\0\0",
    b"GRAPH\0\0\0",
    b"CI8\0\0\0\0\0",
    b"CI32\0\0\0\0",
    b"CF32\0\0\0\0",
];

/// Serialises a model into the v1 container.
pub fn write(meta: &ModelMeta, graph: &Graph, consts: &Consts) -> Vec<u8> {
    let meta_json = serde_json::to_vec(meta).expect("metadata serialises");
    let graph_json = serde_json::to_vec(graph).expect("graph serialises");
    let ci8: Vec<u8> = consts.i8.iter().map(|&v| v as u8).collect();
    let ci32: Vec<u8> = consts.i32.iter().flat_map(|v| v.to_le_bytes()).collect();
    let cf32: Vec<u8> = consts.f32.iter().flat_map(|v| v.to_le_bytes()).collect();
    // (stored bytes, raw length if compressed)
    let pack = |raw: Vec<u8>, compress: bool| -> (Vec<u8>, u64) {
        if compress && !raw.is_empty() {
            let z = miniz_oxide::deflate::compress_to_vec_zlib(&raw, 9);
            if z.len() < raw.len() {
                return (z, raw.len() as u64);
            }
        }
        (raw, 0)
    };
    let packed = [
        pack(meta_json, false),
        pack(graph_json, true),
        pack(ci8, false),
        pack(ci32, true),
        pack(cf32, true),
    ];
    let bodies: Vec<&[u8]> = packed.iter().map(|(b, _)| b.as_slice()).collect();
    let mut table = Vec::with_capacity(ENTRY * bodies.len());
    let mut offset = align(HEADER + ENTRY * bodies.len());
    for ((tag, body), (_, raw_len)) in TAGS.iter().zip(bodies.iter().copied()).zip(&packed) {
        table.extend_from_slice(*tag);
        table.extend_from_slice(&(offset as u64).to_le_bytes());
        table.extend_from_slice(&(body.len() as u64).to_le_bytes());
        table.extend_from_slice(&raw_len.to_le_bytes());
        table.extend_from_slice(&Sha256::digest(body));
        offset = align(offset + body.len());
    }
    let total = offset;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(bodies.len() as u32).to_le_bytes());
    out.extend_from_slice(&(total as u64).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&table));
    out.extend_from_slice(&[0u8; 8]);
    out.extend_from_slice(&table);
    for body in bodies {
        out.resize(align(out.len()), 0);
        out.extend_from_slice(body);
    }
    out.resize(total, 0);
    out
}

fn align(x: usize) -> usize {
    x.div_ceil(ALIGN) * ALIGN
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Parses and checks a container; returns its parts (the graph not yet validated).
pub fn read(bytes: &[u8]) -> Result<(ModelMeta, Graph, Consts)> {
    if bytes.len() < HEADER {
        return Err(Error::Format(format!(
            "{} bytes is shorter than the 64-byte header",
            bytes.len()
        )));
    }
    if bytes[..8] != MAGIC {
        return Err(Error::Format("bad magic (expected \"STRIX\")".into()));
    }
    let version = u32_at(bytes, 8);
    if version != VERSION {
        return Err(Error::Version {
            found: version,
            supported: VERSION,
        });
    }
    let count = u32_at(bytes, 12) as usize;
    let declared = u64_at(bytes, 16);
    if declared != bytes.len() as u64 {
        return Err(Error::Corrupt(format!(
            "header declares {declared} bytes but the file has {} (truncated or padded)",
            bytes.len()
        )));
    }
    if declared > MAX_FILE_BYTES {
        return Err(Error::Corrupt(format!(
            "file of {declared} bytes exceeds the {MAX_FILE_BYTES}-byte limit"
        )));
    }
    if count == 0 || count > MAX_SECTIONS || HEADER + count * ENTRY > bytes.len() {
        return Err(Error::Corrupt(format!("bad section count {count}")));
    }
    let table = &bytes[HEADER..HEADER + count * ENTRY];
    if Sha256::digest(table).as_slice() != &bytes[24..56] {
        return Err(Error::Corrupt("section table checksum mismatch".into()));
    }
    let mut found: [Option<std::borrow::Cow<[u8]>>; 5] = [None, None, None, None, None];
    for e in table.chunks(ENTRY) {
        let tag: &[u8; 8] = e[..8].try_into().expect("8 bytes");
        let off = u64_at(e, 8);
        let len = u64_at(e, 16);
        let end = off
            .checked_add(len)
            .filter(|&end| end <= bytes.len() as u64);
        let Some(end) = end else {
            return Err(Error::Corrupt(format!(
                "section {} runs past the end of the file",
                tag_name(tag)
            )));
        };
        if !(off as usize).is_multiple_of(ALIGN) || (off as usize) < HEADER + count * ENTRY {
            return Err(Error::Corrupt(format!(
                "section {} is misplaced",
                tag_name(tag)
            )));
        }
        let body = &bytes[off as usize..end as usize];
        if Sha256::digest(body).as_slice() != &e[32..64] {
            return Err(Error::Corrupt(format!(
                "section {} checksum mismatch",
                tag_name(tag)
            )));
        }
        let raw_len = u64_at(e, 24);
        let body: std::borrow::Cow<[u8]> = if raw_len == 0 {
            std::borrow::Cow::Borrowed(body)
        } else {
            if raw_len > MAX_FILE_BYTES {
                return Err(Error::Corrupt(format!(
                    "section {} claims {raw_len} bytes",
                    tag_name(tag)
                )));
            }
            let raw =
                miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(body, raw_len as usize)
                    .map_err(|e| {
                        Error::Corrupt(format!(
                            "section {} does not decompress: {e:?}",
                            tag_name(tag)
                        ))
                    })?;
            if raw.len() as u64 != raw_len {
                return Err(Error::Corrupt(format!(
                    "section {} decompresses to the wrong size",
                    tag_name(tag)
                )));
            }
            std::borrow::Cow::Owned(raw)
        };
        if let Some(i) = TAGS.iter().position(|t| *t == tag) {
            if found[i].replace(body).is_some() {
                return Err(Error::Corrupt(format!(
                    "duplicate section {}",
                    tag_name(tag)
                )));
            }
        }
        // Unknown sections are skipped: later minor versions may add some.
    }
    let get = |i: usize| {
        found[i]
            .as_deref()
            .ok_or_else(|| Error::Corrupt(format!("missing section {}", tag_name(TAGS[i]))))
    };
    let meta: ModelMeta = serde_json::from_slice(get(0)?)
        .map_err(|e| Error::Corrupt(format!("metadata section: {e}")))?;
    let graph: Graph = serde_json::from_slice(get(1)?)
        .map_err(|e| Error::Corrupt(format!("graph section: {e}")))?;
    let words = |b: &[u8], what: &str| {
        if !b.len().is_multiple_of(4) {
            Err(Error::Corrupt(format!(
                "{what} section length {} is not a multiple of 4",
                b.len()
            )))
        } else {
            Ok(b.chunks_exact(4)
                .map(|c| <[u8; 4]>::try_from(c).expect("4 bytes"))
                .collect::<Vec<_>>())
        }
    };
    let consts = Consts {
        i8: get(2)?.iter().map(|&v| v as i8).collect(),
        i32: words(get(3)?, "CI32")?
            .into_iter()
            .map(i32::from_le_bytes)
            .collect(),
        f32: words(get(4)?, "CF32")?
            .into_iter()
            .map(f32::from_le_bytes)
            .collect(),
    };
    Ok((meta, graph, consts))
}

fn tag_name(t: &[u8; 8]) -> String {
    String::from_utf8_lossy(t)
        .trim_end_matches('\0')
        .to_string()
}
