//! The kernel table: one row ([`KernelSet`]) per instruction-set path, one
//! function pointer per op.
//!
//! Every function in every row computes exactly what the named reference
//! function computes (bit-identical output for every input within the
//! reference's contract); `kernels/tests/kernels.rs` checks each row against
//! [`SCALAR`] on one shared edge-case grid.
//!
//! Adding a path means adding a row to [`TABLE`]: start from `..SCALAR` so that
//! every op the path does not implement falls back to the reference (its
//! [`Kernel::name`] then stays the reference's, which the tests report), and
//! `#[cfg]` the row to the target that compiles it. Every entry is written
//! `kernel!(module::function)`, which takes [`Kernel::name`] from the
//! function's identifier: a row that reuses another path's function (the
//! dot-product row's NEON pooling, say) reports that function's name, never a
//! name of its own.
//!
//! **Safety contract of a row.** Rows are reachable through [`entry`] even on a
//! CPU that lacks the path's feature, so every function pointer must be sound
//! to call on any CPU of the target architecture: either it checks the feature
//! itself (the AVX2 wrappers re-check `is_x86_feature_detected!` and fall back
//! to the reference) or the row's docs say otherwise and callers must go
//! through [`kernels_for`], which only returns rows whose [`Isa::available`] is
//! true.

use crate::isa::Isa;
use crate::reference::{
    self, ConvGeometry, PoolGeometry, QAddParams, QConvParams, QMulParams, QOut, SparseWeights,
};
use crate::requant::Requant;
use crate::shape::Dims;

/// [`reference::qs8_gemm_nt`]: `(m, n, k, a, b, bias, rq, q, out, rs, cs)`.
pub type GemmNtFn =
    fn(usize, usize, usize, &[i8], &[i8], &[i32], &[Requant], &QOut, &mut [i8], usize, usize);

/// [`reference::qs8_gemm_nt_f32out`]:
/// `(m, n, k, a, b, bias, scale, act_min, act_max, out, rs, cs)`.
pub type GemmNtF32Fn =
    fn(usize, usize, usize, &[i8], &[i8], &[i32], &[f32], f32, f32, &mut [f32], usize, usize);

/// [`reference::qs8_gemm_4x16c4`]:
/// `(m, n, kb, a_packed, a_pairs, b_panel, bias, rq, q, out, rs)`; `a_pairs`
/// are the weights' flags from [`reference::pairable_4c4`] (computed once at
/// prepare; an empty slice promises nothing).
pub type Gemm4x16c4Fn =
    fn(usize, usize, usize, &[i8], &[bool], &[i8], &[i32], &[Requant], &QOut, &mut [i8], usize);

/// [`reference::qs8_gemm_4x16c4_f32out`]:
/// `(m, n, kb, a_packed, b_panel, bias, scale, lo, hi, out, rs)`.
pub type Gemm4x16c4F32Fn =
    fn(usize, usize, usize, &[i8], &[i8], &[i32], &[f32], f32, f32, &mut [f32], usize);

/// [`reference::qs8_gemm_nt_sparse`]: `(n, a, b, bias, rq, q, out, rs, cs, scratch)`.
pub type GemmNtSparseFn =
    fn(usize, &SparseWeights, &[i8], &[i32], &[Requant], &QOut, &mut [i8], usize, usize, &mut [i8]);

/// Depthwise [`reference::qs8_conv2d`]: `(g, q, input, weights, bias, rq, output)`.
///
/// Contract: the reference's, plus `g.groups == g.in_c == g.out_c` (one input
/// channel per output channel). Fast paths may rely on it; the AVX2 and ARM
/// ones fall back to the reference for any other geometry.
pub type DwConvFn = fn(&ConvGeometry, &QConvParams, &[i8], &[i8], &[i32], &[Requant], &mut [i8]);

/// [`reference::qs8_vadd`]: `(p, a, a_dims, b, b_dims, out, out_dims)`.
pub type VaddFn = fn(&QAddParams, &[i8], &Dims, &[i8], &Dims, &mut [i8], &Dims);

/// [`reference::qs8_vmul`]: `(p, a, a_dims, b, b_dims, out, out_dims)`.
pub type VmulFn = fn(&QMulParams, &[i8], &Dims, &[i8], &Dims, &mut [i8], &Dims);

/// [`reference::qs8_maxpool2d`]: `(g, input, output)`.
pub type MaxPoolFn = fn(&PoolGeometry, &[i8], &mut [i8]);

/// [`reference::qs8_avgpool2d`]: `(g, zp, input, output)`.
pub type AvgPoolFn = fn(&PoolGeometry, i32, &[i8], &mut [i8]);

/// [`reference::qs8_requantize_copy`]: `(input, in_zp, rq, out_zp, output)`.
pub type RequantCopyFn = fn(&[i8], i32, Requant, i32, &mut [i8]);

/// [`reference::qs8_quantize`]: `(input, scale, zp, output)`.
pub type QuantizeFn = fn(&[f32], f32, i32, &mut [i8]);

/// [`reference::qs8_lut`]: `(table, input, output)`.
pub type LutFn = fn(&[i8; 256], &[i8], &mut [i8]);

/// One op of one path: the function and its name (`<datatype>_<op>[__<isa>]`,
/// see the crate docs; no suffix for the reference). The table builds every
/// entry with `kernel!`, so `name` is the identifier of the function in `run`.
#[derive(Clone, Copy)]
pub struct Kernel<F> {
    pub name: &'static str,
    pub run: F,
}

/// `kernel!(module::function)`: a [`Kernel`] running `function`, named by its
/// identifier, so that no row can run one function under another's name.
macro_rules! kernel {
    ($module:ident :: $function:ident) => {
        Kernel {
            name: stringify!($function),
            run: $module::$function,
        }
    };
}

/// Every op of one path. Ops a path lacks hold the reference (and its name).
#[derive(Clone, Copy)]
pub struct KernelSet {
    pub isa: Isa,
    pub gemm_nt: Kernel<GemmNtFn>,
    pub gemm_nt_f32out: Kernel<GemmNtF32Fn>,
    pub gemm_nt_sparse: Kernel<GemmNtSparseFn>,
    pub gemm_4x16c4: Kernel<Gemm4x16c4Fn>,
    /// Whether ungrouped int8 convs run packed tiles through `gemm_4x16c4`
    /// (weights packed at prepare, activation panels per tile) rather than
    /// im2row tiles through `gemm_nt`: true where that is the row's faster
    /// conv path.
    pub conv_packed: bool,
    pub gemm_4x16c4_f32out: Kernel<Gemm4x16c4F32Fn>,
    /// Whether f32-output convs (`QConvF32`) run packed through
    /// `gemm_4x16c4_f32out` (set where that kernel is this row's own).
    pub conv_packed_f32out: bool,
    pub dwconv2d: Kernel<DwConvFn>,
    pub vadd: Kernel<VaddFn>,
    pub vmul: Kernel<VmulFn>,
    pub maxpool2d: Kernel<MaxPoolFn>,
    pub avgpool2d: Kernel<AvgPoolFn>,
    pub requantize_copy: Kernel<RequantCopyFn>,
    pub lut: Kernel<LutFn>,
    pub quantize: Kernel<QuantizeFn>,
}

impl KernelSet {
    /// The names of all ops of the row, in field order (for reports and tests).
    pub fn names(&self) -> [&'static str; 13] {
        [
            self.gemm_nt.name,
            self.gemm_nt_f32out.name,
            self.gemm_nt_sparse.name,
            self.gemm_4x16c4.name,
            self.dwconv2d.name,
            self.vadd.name,
            self.vmul.name,
            self.maxpool2d.name,
            self.avgpool2d.name,
            self.requantize_copy.name,
            self.lut.name,
            self.quantize.name,
            self.gemm_4x16c4_f32out.name,
        ]
    }
}

/// The reference row; also the fallback of every other row (`..SCALAR`).
pub const SCALAR: KernelSet = KernelSet {
    isa: Isa::Scalar,
    gemm_nt: kernel!(reference::qs8_gemm_nt),
    gemm_nt_f32out: kernel!(reference::qs8_gemm_nt_f32out),
    gemm_nt_sparse: kernel!(reference::qs8_gemm_nt_sparse),
    gemm_4x16c4: kernel!(reference::qs8_gemm_4x16c4),
    // The reference runs convs packed too, so that the packed driver and the
    // runtime's use of it are checked on every host against the other rows.
    conv_packed: true,
    gemm_4x16c4_f32out: kernel!(reference::qs8_gemm_4x16c4_f32out),
    conv_packed_f32out: true,
    dwconv2d: kernel!(reference::qs8_dwconv2d),
    vadd: kernel!(reference::qs8_vadd),
    vmul: kernel!(reference::qs8_vmul),
    maxpool2d: kernel!(reference::qs8_maxpool2d),
    avgpool2d: kernel!(reference::qs8_avgpool2d),
    requantize_copy: kernel!(reference::qs8_requantize_copy),
    lut: kernel!(reference::qs8_lut),
    quantize: kernel!(reference::qs8_quantize),
};

/// x86_64 AVX2 (wrappers re-check the feature and fall back to the reference).
#[cfg(all(target_arch = "x86_64", feature = "std"))]
pub const AVX2: KernelSet = {
    use crate::x86_64 as x;
    KernelSet {
        isa: Isa::Avx2,
        gemm_nt: kernel!(x::qs8_gemm_nt__avx2),
        gemm_nt_f32out: kernel!(x::qs8_gemm_nt_f32out__avx2),
        gemm_nt_sparse: kernel!(x::qs8_gemm_nt_sparse__avx2),
        gemm_4x16c4: kernel!(x::qs8_gemm_4x16c4__avx2),
        // Faster than im2row + `gemm_nt`: 1.3x over six conv layers, 0.96x
        // on the one it loses (1x1 96->24; `examples/packed_speed.rs`).
        conv_packed: true,
        // f32-output convs keep im2row + `gemm_nt_f32out`.
        gemm_4x16c4_f32out: kernel!(reference::qs8_gemm_4x16c4_f32out),
        conv_packed_f32out: false,
        dwconv2d: kernel!(x::qs8_dwconv2d__avx2),
        vadd: kernel!(x::qs8_vadd__avx2),
        vmul: kernel!(x::qs8_vmul__avx2),
        maxpool2d: kernel!(x::qs8_maxpool2d__avx2),
        avgpool2d: kernel!(x::qs8_avgpool2d__avx2),
        requantize_copy: kernel!(x::qs8_requantize_copy__avx2),
        lut: kernel!(reference::qs8_lut),
        quantize: kernel!(reference::qs8_quantize),
    }
};

/// x86_64 AVX-VNNI: the [`AVX2`] row with the `vpdpbusd` packed gemm (its
/// wrapper re-checks AVX2 and AVX-VNNI and falls back to the AVX2 kernel).
#[cfg(all(target_arch = "x86_64", feature = "std"))]
pub const AVXVNNI: KernelSet = KernelSet {
    isa: Isa::AvxVnni,
    gemm_4x16c4: {
        use crate::x86_64 as x;
        kernel!(x::qs8_gemm_4x16c4__avxvnni)
    },
    ..AVX2
};

/// x86_64 AVX-512 VNNI: the [`AVX2`] row with the zmm `vpdpbusd` packed
/// gemm, the depthwise kernel built with AVX-512's 32 registers, the
/// `vpermi2b` table lookup and the quantization built for zmm (their
/// wrappers re-check AVX-512 F/BW/VL/VNNI, and VBMI for the lookup, and
/// fall back to the AVX-VNNI gemm, the AVX2 depthwise kernel and the
/// reference).
#[cfg(all(target_arch = "x86_64", feature = "std"))]
pub const AVX512VNNI: KernelSet = {
    use crate::x86_64 as x;
    KernelSet {
        isa: Isa::Avx512Vnni,
        gemm_4x16c4: kernel!(x::qs8_gemm_4x16c4__avx512vnni),
        dwconv2d: kernel!(x::qs8_dwconv2d__avx512vnni),
        lut: kernel!(x::qs8_lut__avx512vnni),
        quantize: kernel!(x::qs8_quantize__avx512vnni),
        ..AVX2
    }
};

/// aarch64 Advanced SIMD: every op (baseline ARMv8-A, runs on every aarch64
/// CPU).
#[cfg(target_arch = "aarch64")]
pub const NEON: KernelSet = {
    use crate::aarch64 as a;
    KernelSet {
        isa: Isa::Neon,
        gemm_nt: kernel!(a::qs8_gemm_nt__neon),
        gemm_nt_f32out: kernel!(a::qs8_gemm_nt_f32out__neon),
        // `smlal` by lane: the baseline form of the sparse kernel.
        gemm_nt_sparse: kernel!(a::qs8_gemm_nt_sparse__neon),
        gemm_4x16c4: kernel!(a::qs8_gemm_4x16c4__neon),
        conv_packed: true,
        gemm_4x16c4_f32out: kernel!(a::qs8_gemm_4x16c4_f32out__neon),
        conv_packed_f32out: true,
        dwconv2d: kernel!(a::qs8_dwconv2d__neon),
        vadd: kernel!(a::qs8_vadd__neon),
        vmul: kernel!(a::qs8_vmul__neon),
        maxpool2d: kernel!(a::qs8_maxpool2d__neon),
        avgpool2d: kernel!(a::qs8_avgpool2d__neon),
        requantize_copy: kernel!(a::qs8_requantize_copy__neon),
        lut: kernel!(a::qs8_lut__neon),
        quantize: kernel!(a::qs8_quantize__neon),
    }
};

/// aarch64 FEAT_DotProd (`sdot`): int8 NT gemm, dense and block-sparse
/// (wrappers re-check the feature and fall back to the NEON path); the other
/// ops are the baseline NEON ones (no dot-product shape in them).
#[cfg(target_arch = "aarch64")]
pub const DOTPROD: KernelSet = {
    use crate::aarch64 as a;
    KernelSet {
        isa: Isa::Dotprod,
        gemm_nt: kernel!(a::qs8_gemm_nt__dotprod),
        gemm_nt_f32out: kernel!(a::qs8_gemm_nt_f32out__dotprod),
        // One `sdot` per 1x4 block and four columns.
        gemm_nt_sparse: kernel!(a::qs8_gemm_nt_sparse__dotprod),
        gemm_4x16c4: kernel!(a::qs8_gemm_4x16c4__dotprod),
        conv_packed: true,
        gemm_4x16c4_f32out: kernel!(a::qs8_gemm_4x16c4_f32out__dotprod),
        conv_packed_f32out: true,
        dwconv2d: kernel!(a::qs8_dwconv2d__neon),
        vadd: kernel!(a::qs8_vadd__neon),
        vmul: kernel!(a::qs8_vmul__neon),
        maxpool2d: kernel!(a::qs8_maxpool2d__neon),
        avgpool2d: kernel!(a::qs8_avgpool2d__neon),
        requantize_copy: kernel!(a::qs8_requantize_copy__neon),
        lut: kernel!(a::qs8_lut__neon),
        quantize: kernel!(a::qs8_quantize__neon),
    }
};

/// aarch64 FEAT_I8MM (`smmla`): int8 NT gemm (wrappers re-check the feature
/// and fall back to the NEON path); the other ops are the baseline NEON ones.
#[cfg(target_arch = "aarch64")]
pub const I8MM: KernelSet = {
    use crate::aarch64 as a;
    KernelSet {
        isa: Isa::I8mm,
        gemm_nt: kernel!(a::qs8_gemm_nt__i8mm),
        gemm_nt_f32out: kernel!(a::qs8_gemm_nt_f32out__i8mm),
        // The `sdot` sparse kernel (a 1x4 block is a dot product, not a
        // 2x8 by 8x2 block; the wrapper re-checks FEAT_DotProd, which every
        // FEAT_I8MM core has in practice, and falls back to `smlal`).
        gemm_nt_sparse: kernel!(a::qs8_gemm_nt_sparse__dotprod),
        // `sdot` by element (every FEAT_I8MM core has FEAT_DotProd; the
        // wrapper re-checks it): the packed tile is a dot-product shape.
        gemm_4x16c4: kernel!(a::qs8_gemm_4x16c4__dotprod),
        conv_packed: true,
        gemm_4x16c4_f32out: kernel!(a::qs8_gemm_4x16c4_f32out__dotprod),
        conv_packed_f32out: true,
        dwconv2d: kernel!(a::qs8_dwconv2d__neon),
        vadd: kernel!(a::qs8_vadd__neon),
        vmul: kernel!(a::qs8_vmul__neon),
        maxpool2d: kernel!(a::qs8_maxpool2d__neon),
        avgpool2d: kernel!(a::qs8_avgpool2d__neon),
        requantize_copy: kernel!(a::qs8_requantize_copy__neon),
        lut: kernel!(a::qs8_lut__neon),
        quantize: kernel!(a::qs8_quantize__neon),
    }
};

/// 32-bit ARMv7 NEON: every op but the sparse gemm (wrappers re-check NEON
/// through `AT_HWCAP` and fall back to the reference).
#[cfg(target_arch = "arm")]
pub const ARMV7NEON: KernelSet = {
    use crate::arm as a;
    KernelSet {
        isa: Isa::Armv7Neon,
        gemm_nt: kernel!(a::qs8_gemm_nt__armv7neon),
        gemm_nt_f32out: kernel!(a::qs8_gemm_nt_f32out__armv7neon),
        dwconv2d: kernel!(a::qs8_dwconv2d__armv7neon),
        vadd: kernel!(a::qs8_vadd__armv7neon),
        vmul: kernel!(a::qs8_vmul__armv7neon),
        maxpool2d: kernel!(a::qs8_maxpool2d__armv7neon),
        avgpool2d: kernel!(a::qs8_avgpool2d__armv7neon),
        requantize_copy: kernel!(a::qs8_requantize_copy__armv7neon),
        gemm_4x16c4: kernel!(a::qs8_gemm_4x16c4__armv7neon),
        // Packed convs: fewer instructions than im2row + `gemm_nt` on every
        // model measured (kernels/README.md, "Packed gemm").
        conv_packed: true,
        // f32-output convs packed too (yolov8n's detect head: fewer
        // instructions than im2row + `gemm_nt_f32out`, kernels/README.md).
        gemm_4x16c4_f32out: kernel!(a::qs8_gemm_4x16c4_f32out__armv7neon),
        conv_packed_f32out: true,
        lut: kernel!(a::qs8_lut__armv7neon),
        quantize: kernel!(a::qs8_quantize__armv7neon),
        ..SCALAR
    }
};

/// Every row compiled for this target, the reference first. ARM rows go here
/// too (`#[cfg(target_arch = "aarch64")] NEON,` ...), one `const` per path.
pub static TABLE: &[KernelSet] = &[
    SCALAR,
    #[cfg(all(target_arch = "x86_64", feature = "std"))]
    AVX2,
    #[cfg(all(target_arch = "x86_64", feature = "std"))]
    AVXVNNI,
    #[cfg(all(target_arch = "x86_64", feature = "std"))]
    AVX512VNNI,
    #[cfg(target_arch = "aarch64")]
    NEON,
    #[cfg(target_arch = "aarch64")]
    DOTPROD,
    #[cfg(target_arch = "aarch64")]
    I8MM,
    #[cfg(target_arch = "arm")]
    ARMV7NEON,
];

/// The row compiled for `isa`, whether or not this CPU can run it (`None` when
/// the path is not built for this target). See the module's safety contract.
pub fn entry(isa: Isa) -> Option<&'static KernelSet> {
    TABLE.iter().find(|k| k.isa == isa)
}

/// The kernels to run for `isa`: its row when compiled and available on this
/// CPU, else the reference row. Never fails.
pub fn kernels_for(isa: Isa) -> &'static KernelSet {
    match entry(isa) {
        Some(k) if isa.available() => k,
        _ => &SCALAR,
    }
}
