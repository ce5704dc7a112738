//! Instruction-set paths and their selection.
//!
//! The runtime picks one [`Isa`] per model at prepare time: the best the CPU
//! supports ([`Isa::detect`]), or the one its caller asks for. The library
//! reads no environment: the binaries (`strix`, `strixd`, the icount and
//! peer tools, the examples) turn their `STRIX_ISA` variable
//! (`scalar|avx2|avxvnni|avx512vnni|neon|dotprod|i8mm|armv7neon`) into a request through
//! [`Isa::forced`].

/// A kernel path. `Scalar` is the reference and always available.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    Scalar,
    /// x86_64 AVX2.
    Avx2,
    /// x86_64 AVX2 with AVX-VNNI (VEX `vpdpbusd`): the AVX2 kernels but
    /// the packed gemm.
    AvxVnni,
    /// x86_64 AVX2 with AVX-512 F/BW/VL/VNNI (zmm `vpdpbusd`): the AVX2
    /// kernels but the packed gemm.
    Avx512Vnni,
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
    pub const ALL: [Isa; 8] = [
        Isa::Scalar,
        Isa::Avx2,
        Isa::AvxVnni,
        Isa::Avx512Vnni,
        Isa::Neon,
        Isa::Dotprod,
        Isa::I8mm,
        Isa::Armv7Neon,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::AvxVnni => "avxvnni",
            Isa::Avx512Vnni => "avx512vnni",
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
            #[cfg(all(target_arch = "x86_64", feature = "std"))]
            Isa::AvxVnni => {
                std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("avxvnni")
            }
            #[cfg(all(target_arch = "x86_64", feature = "std"))]
            Isa::Avx512Vnni => {
                std::is_x86_feature_detected!("avx2")
                    && std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("avx512vnni")
            }
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
            Isa::Avx512Vnni,
            Isa::AvxVnni,
            Isa::Avx2,
            Isa::Armv7Neon,
        ]
        .into_iter()
        .find(|i| i.available())
        .unwrap_or(Isa::Scalar)
    }

    /// The path a user asked for by name (a `--isa` value, the `STRIX_ISA`
    /// variable a binary read): `None` or `""` asks for nothing (`Ok(None)`:
    /// detect); a path this CPU runs is `Ok(Some(path))`; an unknown name or
    /// a path this CPU cannot run is an error that says which.
    #[cfg(feature = "std")]
    pub fn forced(value: Option<&str>) -> Result<Option<Isa>, String> {
        let Some(s) = value.filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        let isa = Isa::from_name(s).ok_or_else(|| {
            let names: Vec<&str> = Isa::ALL.iter().map(|i| i.name()).collect();
            format!("{s:?} is not a kernel path ({})", names.join(", "))
        })?;
        if !isa.available() {
            return Err(format!("this CPU cannot run the {s} kernel path"));
        }
        Ok(Some(isa))
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::Isa;

    #[test]
    fn forced_checks_the_name_and_the_cpu() {
        assert_eq!(Isa::forced(None), Ok(None));
        assert_eq!(Isa::forced(Some("")), Ok(None));
        assert_eq!(Isa::forced(Some("scalar")), Ok(Some(Isa::Scalar)));
        let e = Isa::forced(Some("sse9")).unwrap_err();
        assert!(
            e.contains("\"sse9\" is not a kernel path") && e.contains("dotprod"),
            "{e}"
        );
        for isa in Isa::ALL {
            match Isa::forced(Some(isa.name())) {
                Ok(got) => assert!(isa.available() && got == Some(isa)),
                Err(e) => assert!(!isa.available() && e.contains("cannot run"), "{e}"),
            }
        }
    }
}
