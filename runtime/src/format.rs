//! The `.strix` container, versions 1 and 2.
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
//! `GRAPH` (JSON [`Graph`]), `CI8`, `CI32`, `CF32` (constant pools, raw LE)
//! and, in version 2 only, `CF16` (IEEE half-precision constants, 2 bytes LE
//! each, for f32 weights stored at half precision).
//! Optional in either version: `RKNN`, a compiled Rockchip NPU blob with its
//! descriptor ([`crate::npu::NpuPart`]); the nodes it replaces stay in the
//! graph as the CPU fallback, so a runtime that skips the section (older
//! ones skip unknown sections) runs the same model on the CPU.
//! A section whose raw length is non-zero is stored zlib-compressed (the
//! writer compresses the graph, int32, f32 and f16 sections when that is
//! smaller; int8 weights stay raw so they can be mapped in place); the
//! checksum covers the stored bytes.
//! The writer emits version 1 (five sections, readable by every runtime)
//! unless the model has f16 constants; then it emits version 2 with a `CF16`
//! section, so an older runtime refuses it by version instead of failing on
//! the graph. The reader takes both.
//! The loader checks the magic, version, declared length, every bound and
//! alignment and every checksum before parsing anything, then validates the
//! graph against the constants.

use crate::error::{try_vec, try_vec_empty, Error, Result};
use crate::graph::{Consts, Graph};
use crate::meta::ModelMeta;
use sha2::{Digest, Sha256};

pub const MAGIC: [u8; 8] = *b"STRIX\0\r\n";
/// The newest version this crate reads and writes (see the module docs).
pub const VERSION: u32 = 2;
/// The version written for models without f16 constants.
const VERSION_F32: u32 = 1;
const HEADER: usize = 64;
const ENTRY: usize = 64;
const ALIGN: usize = 64;
const MAX_SECTIONS: usize = 16;
/// Files above this size are refused before any allocation.
pub const MAX_FILE_BYTES: u64 = 1 << 31;

const TAGS: [&[u8; 8]; 7] = [
    b"META\0\0\0\0",
    b"GRAPH\0\0\0",
    b"CI8\0\0\0\0\0",
    b"CI32\0\0\0\0",
    b"CF32\0\0\0\0",
    b"CF16\0\0\0\0",
    b"RKNN\0\0\0\0",
];
/// Index in [`TAGS`] of `CF16`, an optional section (absent = empty).
const CF16: usize = 5;
/// Index in [`TAGS`] of `RKNN`, the optional NPU part (stored raw).
const RKNN: usize = 6;

/// Serialises a model: version 1 without f16 constants, else version 2.
pub fn write(meta: &ModelMeta, graph: &Graph, consts: &Consts) -> Vec<u8> {
    write_all(meta, graph, consts, None)
}

/// [`write`] plus, when `npu` is given, an `RKNN` section holding it.
pub fn write_all(
    meta: &ModelMeta,
    graph: &Graph,
    consts: &Consts,
    npu: Option<&crate::npu::NpuPart>,
) -> Vec<u8> {
    let meta_json = serde_json::to_vec(meta).expect("metadata serialises");
    let graph_json = serde_json::to_vec(graph).expect("graph serialises");
    let ci8: Vec<u8> = consts.i8.iter().map(|&v| v as u8).collect();
    let ci32: Vec<u8> = consts.i32.iter().flat_map(|v| v.to_le_bytes()).collect();
    let cf32: Vec<u8> = consts.f32.iter().flat_map(|v| v.to_le_bytes()).collect();
    let cf16: Vec<u8> = consts.f16.iter().flat_map(|v| v.to_le_bytes()).collect();
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
    let mut packed = vec![
        pack(meta_json, false),
        pack(graph_json, true),
        pack(ci8, false),
        pack(ci32, true),
        pack(cf32, true),
    ];
    // Files without f16 constants stay byte-identical to version 1.
    let version = if cf16.is_empty() {
        VERSION_F32
    } else {
        packed.push(pack(cf16, true));
        VERSION
    };
    let mut sections: Vec<(&[u8; 8], &[u8], u64)> = TAGS
        .iter()
        .zip(&packed)
        .map(|(tag, (body, raw_len))| (*tag, body.as_slice(), *raw_len))
        .collect();
    // Stored raw: a compiled blob barely compresses and is handed to the
    // NPU runtime as it is.
    let npu_body = npu.map(|p| p.encode());
    if let Some(body) = &npu_body {
        sections.push((TAGS[RKNN], body.as_slice(), 0));
    }
    assemble(version, &sections)
}

/// Lays out a container from `(tag, stored bytes, raw length if compressed)`
/// sections, computing the table and every checksum.
fn assemble(version: u32, sections: &[(&[u8; 8], &[u8], u64)]) -> Vec<u8> {
    let mut table = Vec::with_capacity(ENTRY * sections.len());
    let mut offset = align(HEADER + ENTRY * sections.len());
    for &(tag, body, raw_len) in sections {
        table.extend_from_slice(tag);
        table.extend_from_slice(&(offset as u64).to_le_bytes());
        table.extend_from_slice(&(body.len() as u64).to_le_bytes());
        table.extend_from_slice(&raw_len.to_le_bytes());
        table.extend_from_slice(&Sha256::digest(body));
        offset = align(offset + body.len());
    }
    let total = offset;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    out.extend_from_slice(&(total as u64).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&table));
    out.extend_from_slice(&[0u8; 8]);
    out.extend_from_slice(&table);
    for &(_, body, _) in sections {
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

/// Most bytes the compressed sections of one file may inflate to, all
/// together: [`INFLATE_RATIO`] times the file's length plus
/// [`INFLATE_SLACK`], and never more than [`MAX_FILE_BYTES`]. Checked on the
/// declared raw lengths before anything is inflated, so a small file cannot
/// make the loader allocate much more than the file itself (a zlib stream
/// can expand ~1000x). Real models inflate far less: the bundled and bench
/// models by 0.06x to 2.5x in total (int8 weights are stored raw; f32
/// weights compress under 2x); only the graph JSON compresses well, up to
/// ~16x, and it is a small part of any model but a tiny one.
pub fn inflate_budget(file_len: u64) -> u64 {
    file_len
        .saturating_mul(INFLATE_RATIO)
        .saturating_add(INFLATE_SLACK)
        .min(MAX_FILE_BYTES)
}
/// See [`inflate_budget`].
pub const INFLATE_RATIO: u64 = 16;
/// See [`inflate_budget`]: room for the graph of a tiny model.
pub const INFLATE_SLACK: u64 = 1 << 20;

/// One entry of the section table, its bounds already checked.
struct Entry<'a> {
    tag: &'a [u8; 8],
    /// Stored bytes (checksum verified).
    body: &'a [u8],
    /// Inflated length if compressed, else 0.
    raw_len: u64,
}

/// A parsed file: everything [`read_all`] returns, owning its data.
pub type Parts = (ModelMeta, Graph, Consts, Option<crate::npu::NpuPart>);

/// Parses and checks a container; returns its parts (the graph not yet validated).
///
/// Memory: besides `bytes`, at most [`inflate_budget`]`(bytes.len())` bytes
/// of inflated sections plus the decoded constants (each no larger than its
/// section); unknown sections are skipped without being inflated. Every
/// buffer sized from the file is reserved fallibly: an allocation the
/// system refuses is an error, not an abort.
pub fn read(bytes: &[u8]) -> Result<(ModelMeta, Graph, Consts)> {
    read_all(bytes).map(|(m, g, c, _)| (m, g, c))
}

/// A model's parts and its NPU part (`RKNN` section) if it has one
/// ([`read`]'s checks; the NPU part is decoded, not yet checked against the
/// graph: [`crate::npu::NpuPart::check`]).
pub fn read_all(bytes: &[u8]) -> Result<Parts> {
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
    if !(VERSION_F32..=VERSION).contains(&version) {
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
    // First pass: bounds, checksums, duplicates and the inflation budget,
    // before any section is inflated.
    let mut known: [Option<Entry>; 7] = Default::default();
    let mut inflated = 0u64;
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
        // Unknown sections are skipped (later minor versions may add some),
        // and never inflated: their raw length costs nothing.
        let Some(i) = TAGS.iter().position(|t| *t == tag) else {
            continue;
        };
        let raw_len = u64_at(e, 24);
        inflated = inflated.saturating_add(raw_len);
        if known[i].replace(Entry { tag, body, raw_len }).is_some() {
            return Err(Error::Corrupt(format!(
                "duplicate section {}",
                tag_name(tag)
            )));
        }
    }
    let budget = inflate_budget(declared);
    if inflated > budget {
        return Err(Error::Corrupt(format!(
            "sections claim {inflated} bytes once inflated, over the {budget}-byte budget \
             of a {declared}-byte file"
        )));
    }
    let mut found: [Option<std::borrow::Cow<[u8]>>; 7] = Default::default();
    for (slot, entry) in found.iter_mut().zip(known) {
        if let Some(e) = entry {
            *slot = Some(inflate(&e)?);
        }
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
    let cf16 = found[CF16].as_deref().unwrap_or_default();
    if version == VERSION_F32 && !cf16.is_empty() {
        return Err(Error::Corrupt(
            "a version 1 file has a CF16 section (f16 constants need version 2)".into(),
        ));
    }
    let consts = Consts {
        i8: decode(get(2)?, "CI8", |[b]| b as i8)?,
        i32: decode(get(3)?, "CI32", i32::from_le_bytes)?,
        f32: decode(get(4)?, "CF32", f32::from_le_bytes)?,
        // Finiteness is checked by validation, which also covers graphs
        // built in memory by the compiler.
        f16: decode(cf16, "CF16", half::f16::from_le_bytes)?,
    };
    let npu = match found[RKNN].as_deref() {
        Some(body) => Some(crate::npu::NpuPart::decode(body)?),
        None => None,
    };
    Ok((meta, graph, consts, npu))
}

/// The section's raw bytes: borrowed if stored raw, else inflated into a
/// buffer of exactly the declared length (reserved fallibly).
fn inflate<'a>(e: &Entry<'a>) -> Result<std::borrow::Cow<'a, [u8]>> {
    use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};
    use miniz_oxide::inflate::TINFLStatus;
    if e.raw_len == 0 {
        return Ok(std::borrow::Cow::Borrowed(e.body));
    }
    let name = tag_name(e.tag);
    // The budget keeps raw_len <= MAX_FILE_BYTES, which fits usize.
    let raw_len = usize::try_from(e.raw_len)
        .map_err(|_| Error::Corrupt(format!("section {name} claims {} bytes", e.raw_len)))?;
    let mut out = try_vec(raw_len, 0u8, &format!("section {name}"))?;
    let mut d = Box::<DecompressorOxide>::default();
    let flags = inflate_flags::TINFL_FLAG_PARSE_ZLIB_HEADER
        | inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
    // The whole stream in one call: it ends (Done), wants more room than
    // declared (HasMoreOutput), or is truncated or malformed.
    let (status, _, written) = decompress(&mut d, e.body, &mut out, 0, flags);
    match status {
        TINFLStatus::Done if written == raw_len => Ok(std::borrow::Cow::Owned(out)),
        TINFLStatus::Done | TINFLStatus::HasMoreOutput => Err(Error::Corrupt(format!(
            "section {name} decompresses to the wrong size (declared {raw_len} bytes)"
        ))),
        s => Err(Error::Corrupt(format!(
            "section {name} does not decompress: {s:?}"
        ))),
    }
}

/// A constant pool from its little-endian bytes, `N` per value.
fn decode<T, const N: usize>(b: &[u8], what: &str, f: impl Fn([u8; N]) -> T) -> Result<Vec<T>> {
    if !b.len().is_multiple_of(N) {
        return Err(Error::Corrupt(format!(
            "{what} section length {} is not a multiple of {N}",
            b.len()
        )));
    }
    let mut v = try_vec_empty(b.len() / N, what)?;
    v.extend(
        b.chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunks of N"))),
    );
    Ok(v)
}

fn tag_name(t: &[u8; 8]) -> String {
    String::from_utf8_lossy(t)
        .trim_end_matches('\0')
        .to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::graph::{DType, Node, Op, Storage, Tensor};
    use half::f16;
    use strix_kernels::reference::ConvGeometry;

    /// Deterministic values in `[-1, 1)` (a 64-bit LCG: no dependency, and
    /// every mantissa bit is used, so f16 rounding is visible).
    pub(crate) fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    pub(crate) const GEOM: ConvGeometry = ConvGeometry {
        in_c: 4,
        in_h: 6,
        in_w: 6,
        out_c: 8,
        out_h: 6,
        out_w: 6,
        kh: 3,
        kw: 3,
        stride_h: 1,
        stride_w: 1,
        dil_h: 1,
        dil_w: 1,
        pad_top: 1,
        pad_left: 1,
        groups: 1,
    };

    /// One planned f32 conv `x [1,4,6,6] -> y [1,8,6,6]` with weights `w`,
    /// stored in the f16 pool when `f16_weights` (rounded to nearest) and in
    /// the f32 pool otherwise; the bias stays f32.
    pub(crate) fn conv(w: &[f32], f16_weights: bool) -> (ModelMeta, Graph, Consts) {
        let mut c = Consts::default();
        let w_storage = if f16_weights {
            c.f16 = w.iter().map(|&v| f16::from_f32(v)).collect();
            Storage::ConstF16 { offset: 0 }
        } else {
            c.f32.extend_from_slice(w);
            Storage::Const { offset: 0 }
        };
        let b_off = c.f32.len();
        c.f32.extend(noise(GEOM.out_c, 7).iter().map(|v| v * 0.1));
        let t = |name: &str, shape: &[usize], storage| Tensor {
            name: name.into(),
            shape: shape.to_vec(),
            dtype: DType::F32,
            quant: None,
            storage,
        };
        let arena = Storage::Arena { offset: 0 };
        let mut g = Graph {
            tensors: vec![
                t("x", &[1, 4, 6, 6], arena),
                t("w", &[8, 4, 3, 3], w_storage),
                t("b", &[8], Storage::Const { offset: b_off }),
                t("y", &[1, 8, 6, 6], arena),
            ],
            nodes: vec![Node {
                name: "conv".into(),
                op: Op::Conv {
                    geom: GEOM,
                    act_min: f32::MIN,
                    act_max: f32::MAX,
                },
                inputs: vec![0, 1, 2],
                output: 3,
            }],
            inputs: vec![0],
            outputs: vec![3],
            ..Default::default()
        };
        crate::plan::plan(&mut g, true);
        let meta = ModelMeta {
            name: "conv".into(),
            ..Default::default()
        };
        (meta, g, c)
    }

    fn weights() -> Vec<f32> {
        noise(GEOM.weight_len(), 3)
    }

    #[test]
    fn f16_constants_round_trip_in_version_2() {
        let (meta, g, c) = conv(&weights(), true);
        assert!(matches!(g.tensors[1].storage, Storage::ConstF16 { .. }));
        let bytes = write(&meta, &g, &c);
        assert_eq!(u32_at(&bytes, 8), 2, "f16 constants need version 2");
        assert_eq!(u32_at(&bytes, 12), 6, "META GRAPH CI8 CI32 CF32 CF16");
        let (meta2, g2, c2) = read(&bytes).unwrap();
        assert_eq!((meta2, &g2, &c2), (meta, &g, &c));
        // Bit-exact: every f16 comes back with the same bits.
        let bits = |c: &Consts| c.f16.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&c2), bits(&c));
        assert_eq!(c2.bytes(), 2 * GEOM.weight_len() + 4 * GEOM.out_c);
    }

    #[test]
    fn models_without_f16_stay_version_1() {
        let (meta, g, c) = conv(&weights(), false);
        let bytes = write(&meta, &g, &c);
        assert_eq!(u32_at(&bytes, 8), 1);
        assert_eq!(u32_at(&bytes, 12), 5, "no CF16 section");
        let (_, g2, c2) = read(&bytes).unwrap();
        assert_eq!((g2, c2), (g, c));
    }

    /// The sections of `conv(.., true)` with `cf16` as the CF16 body.
    fn with_cf16(version: u32, cf16: &[u8]) -> Vec<u8> {
        let (meta, g, c) = conv(&weights(), true);
        let meta = serde_json::to_vec(&meta).unwrap();
        let graph = serde_json::to_vec(&g).unwrap();
        let cf32: Vec<u8> = c.f32.iter().flat_map(|v| v.to_le_bytes()).collect();
        assemble(
            version,
            &[
                (TAGS[0], &meta, 0),
                (TAGS[1], &graph, 0),
                (TAGS[2], &[], 0),
                (TAGS[3], &[], 0),
                (TAGS[4], &cf32, 0),
                (TAGS[CF16], cf16, 0),
            ],
        )
    }

    fn load_err(bytes: &[u8]) -> String {
        crate::Model::from_bytes(bytes)
            .expect_err("malformed f16 data accepted")
            .to_string()
    }

    #[test]
    fn malformed_f16_sections_are_rejected_by_name() {
        let good: Vec<u8> = weights()
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect();
        assert!(crate::Model::from_bytes(&with_cf16(2, &good)).is_ok());

        let e = load_err(&with_cf16(2, &good[..good.len() - 1]));
        assert!(
            e.contains("CF16 section length") && e.contains("multiple of 2"),
            "{e}"
        );

        // One value short: the weight tensor no longer fits the pool.
        let e = load_err(&with_cf16(2, &good[..good.len() - 2]));
        assert!(
            e.contains("'w'") && e.contains("outside the f16 constants"),
            "{e}"
        );

        let e = load_err(&with_cf16(1, &good));
        assert!(e.contains("version 1") && e.contains("CF16"), "{e}");

        let e = load_err(&with_cf16(3, &good));
        assert!(e.contains("unsupported .strix version 3"), "{e}");

        for bad in [f16::INFINITY, f16::NEG_INFINITY, f16::NAN] {
            let mut b = good.clone();
            b[20..22].copy_from_slice(&bad.to_le_bytes());
            let e = load_err(&with_cf16(2, &b));
            assert!(e.contains("f16 constant 10") && e.contains("finite"), "{e}");
        }
    }

    /// The stored sections of `conv(.., false)` as the writer lays them out,
    /// to be assembled with extra or altered ones.
    fn conv_sections() -> Vec<([u8; 8], Vec<u8>, u64)> {
        let (meta, g, c) = conv(&weights(), false);
        let bytes = write(&meta, &g, &c);
        let count = u32_at(&bytes, 12) as usize;
        (0..count)
            .map(|i| {
                let e = &bytes[HEADER + i * ENTRY..][..ENTRY];
                let (off, len) = (u64_at(e, 8) as usize, u64_at(e, 16) as usize);
                (
                    e[..8].try_into().unwrap(),
                    bytes[off..off + len].to_vec(),
                    u64_at(e, 24),
                )
            })
            .collect()
    }

    fn assemble_owned(version: u32, s: &[([u8; 8], Vec<u8>, u64)]) -> Vec<u8> {
        let refs: Vec<(&[u8; 8], &[u8], u64)> =
            s.iter().map(|(t, b, r)| (t, b.as_slice(), *r)).collect();
        assemble(version, &refs)
    }

    const JUNK: [u8; 8] = *b"JUNK\0\0\0\0";

    /// Unknown sections are skipped without being inflated: a body that is
    /// not even zlib, claiming 100 MiB or 1 TiB, costs nothing.
    #[test]
    fn unknown_sections_are_never_inflated() {
        for raw_len in [100 << 20, 1 << 40] {
            let mut s = conv_sections();
            s.push((JUNK, b"not a zlib stream".to_vec(), raw_len));
            crate::Model::from_bytes(&assemble_owned(1, &s)).unwrap();
        }
        // A real bomb: 100 MiB of zeros in ~100 KB.
        let bomb = miniz_oxide::deflate::compress_to_vec_zlib(&vec![0u8; 100 << 20], 1);
        assert!(bomb.len() < 1 << 20);
        let mut s = conv_sections();
        s.push((JUNK, bomb, 100 << 20));
        crate::Model::from_bytes(&assemble_owned(1, &s)).unwrap();
    }

    /// Known sections may inflate to at most the budget relative to the
    /// file, checked before inflating: here a valid graph JSON followed by
    /// 64 MiB of whitespace (which serde_json would accept).
    #[test]
    fn inflation_beyond_the_budget_is_refused() {
        let mut s = conv_sections();
        let graph = s.iter_mut().find(|(t, ..)| t == TAGS[1]).unwrap();
        let mut json = miniz_oxide::inflate::decompress_to_vec_zlib(&graph.1).unwrap();
        json.resize(json.len() + (64 << 20), b' ');
        graph.1 = miniz_oxide::deflate::compress_to_vec_zlib(&json, 1);
        graph.2 = json.len() as u64;
        let bytes = assemble_owned(1, &s);
        assert!(bytes.len() < 1 << 20);
        let e = load_err(&bytes);
        let budget = inflate_budget(bytes.len() as u64);
        assert!(
            e.contains("sections claim") && e.contains(&format!("over the {budget}-byte budget")),
            "{e}"
        );
        // A stream longer than it claims stops at the claim.
        let graph = s.iter_mut().find(|(t, ..)| t == TAGS[1]).unwrap();
        graph.2 = 1000;
        let e = load_err(&assemble_owned(1, &s));
        assert!(e.contains("GRAPH decompresses to the wrong size"), "{e}");
    }

    /// The budget leaves room for what the writer produces: the graph
    /// JSON of a large model compresses ~10x but is a small part of it.
    #[test]
    fn the_budget_is_proportional_and_capped() {
        assert_eq!(inflate_budget(0), INFLATE_SLACK);
        assert_eq!(inflate_budget(1000), 16_000 + INFLATE_SLACK);
        assert_eq!(inflate_budget(u64::MAX), MAX_FILE_BYTES);
    }

    #[test]
    fn only_f32_tensors_may_be_stored_as_f16() {
        let (meta, mut g, c) = conv(&weights(), true);
        g.tensors[1].dtype = DType::I8;
        let e = load_err(&write(&meta, &g, &c));
        assert!(e.contains("'w' is I8 but stored as f16"), "{e}");
        // An f16 reference into an empty pool.
        let (meta, mut g, c) = conv(&weights(), false);
        g.tensors[2].storage = Storage::ConstF16 { offset: 0 };
        let e = load_err(&write(&meta, &g, &c));
        assert!(
            e.contains("'b'") && e.contains("outside the f16 constants"),
            "{e}"
        );
    }
}
