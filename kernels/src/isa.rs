//! Instruction-set paths and their selection.
//!
//! The runtime picks one [`Isa`] per process at prepare time: the best the CPU
//! supports, or the one forced by the `STRIX_ISA` environment variable
//! (`scalar|avx2|neon|dotprod|i8mm|armv7neon`), which tests use to pin a path.

/// A kernel path. `Scalar` is the reference and always available.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    Scalar,
    /// x86_64 AVX2.
    Avx2,
    /// aarch64 Advanced SIMD (baseline ARMv8-A).
    Neon,
    /// aarch64 with the dot-product extension (`sdot`).
    Dotprod,
    /// aarch64 with the int8 matrix-multiply extension (`smmla`).
    I8mm,
    /// 32-bit ARMv7-A with NEON.
    Armv7Neon,
}

impl Isa {
    pub const ALL: [Isa; 6] = [
        Isa::Scalar,
        Isa::Avx2,
        Isa::Neon,
        Isa::Dotprod,
        Isa::I8mm,
        Isa::Armv7Neon,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Neon => "neon",
            Isa::Dotprod => "dotprod",
            Isa::I8mm => "i8mm",
            Isa::Armv7Neon => "armv7neon",
        }
    }

    pub fn from_name(s: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|i| i.name() == s)
    }

    /// Whether this CPU can run the path (checked at run time).
    pub fn available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(all(target_arch = "x86_64", feature = "std"))]
            Isa::Avx2 => std::is_x86_feature_detected!("avx2"),
            #[cfg(all(target_arch = "aarch64", feature = "std"))]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(all(target_arch = "aarch64", feature = "std"))]
            Isa::Dotprod => std::arch::is_aarch64_feature_detected!("dotprod"),
            #[cfg(all(target_arch = "aarch64", feature = "std"))]
            Isa::I8mm => std::arch::is_aarch64_feature_detected!("i8mm"),
            #[cfg(all(target_arch = "arm", target_os = "linux", feature = "std"))]
            Isa::Armv7Neon => crate::arm::has_neon(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The best available path on this CPU.
    pub fn detect() -> Isa {
        [
            Isa::I8mm,
            Isa::Dotprod,
            Isa::Neon,
            Isa::Avx2,
            Isa::Armv7Neon,
        ]
        .into_iter()
        .find(|i| i.available())
        .unwrap_or(Isa::Scalar)
    }

    /// `STRIX_ISA` if set (an error if unknown or unavailable), else [`Isa::detect`].
    #[cfg(feature = "std")]
    pub fn from_env() -> Result<Isa, String> {
        match std::env::var("STRIX_ISA") {
            Ok(s) if !s.is_empty() => {
                let isa = Isa::from_name(&s).ok_or_else(|| {
                    format!("STRIX_ISA={s} is not a kernel path (scalar, avx2, neon, dotprod, i8mm, armv7neon)")
                })?;
                if !isa.available() {
                    return Err(format!("STRIX_ISA={s}: this CPU cannot run the {s} path"));
                }
                Ok(isa)
            }
            _ => Ok(Isa::detect()),
        }
    }
}
