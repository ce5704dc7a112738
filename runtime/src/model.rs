//! A loaded, validated model.

use crate::error::{Error, Result};
use crate::format;
use crate::graph::{Consts, Graph};
use crate::meta::ModelMeta;
use std::path::Path;
use strix_kernels::table::KernelSet;
use strix_kernels::Isa;

/// How a model is prepared when it is built or loaded ([`Model::new_with`],
/// [`Model::from_bytes_with`], [`Model::load_with`]). The default is what
/// [`Model::new`], [`Model::from_bytes`] and [`Model::load`] use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// The kernel path; `None` runs the best this CPU supports
    /// ([`Isa::detect`]). Outputs are bit-identical on every path. A path
    /// this CPU cannot run is refused ([`Error::Argument`]). Binaries map a
    /// user's request (`--isa`, `STRIX_ISA`) here with [`Isa::forced`].
    pub isa: Option<Isa>,
    /// Hold each conv weight once: where a conv runs packed, its weight
    /// tensor is read by nothing else and the packed layout is as long as the
    /// stored one, the packed weights replace the stored ones in
    /// [`Model::consts`] instead of being a second copy (mobilenet_v2: 2 MB
    /// less). Outputs are unchanged; [`Model::to_bytes`] and
    /// [`Model::with_isa`] turn the pool back first, so they work as on any
    /// model. The price: `consts` does not show those tensors' stored values
    /// ([`Model::is_repacked`]; [`crate::Session::tensor`] returns `None` for
    /// them). Runners (`strix run`/`bench`, strixd, the C ABI) set it; tools
    /// that read weights do not.
    pub lean: bool,
}

/// An immutable model: share it read-only between threads; run it through
/// one [`crate::Session`] per thread.
#[derive(Clone, Debug)]
pub struct Model {
    pub meta: ModelMeta,
    pub graph: Graph,
    pub consts: Consts,
    /// Prepared per-node data for the fast kernels (folded biases, scratch).
    pub(crate) prepared: crate::kernels::Prepared,
    /// The compiled NPU part (`RKNN` section), checked against `graph`;
    /// its nodes stay in `graph` as the CPU fallback. Set with
    /// [`Model::with_npu_part`].
    pub npu: Option<std::sync::Arc<crate::npu::NpuPart>>,
    /// How sessions made by [`crate::Session::new`] and
    /// [`crate::Session::with_threads`] run the NPU part: the loader's
    /// choice (a board daemon sets it from its board file), so every user
    /// of the model gets it without passing it along. Default: try the NPU
    /// through [`crate::npu::DEFAULT_LIBRARY`].
    npu_options: crate::npu::NpuOptions,
}

impl Model {
    /// Validates the parts and builds a model on the best kernel path (what
    /// the compiler calls).
    pub fn new(meta: ModelMeta, graph: Graph, consts: Consts) -> Result<Self> {
        Model::new_with(meta, graph, consts, &LoadOptions::default())
    }

    /// [`Model::new`] prepared as `opts` says.
    pub fn new_with(
        meta: ModelMeta,
        graph: Graph,
        consts: Consts,
        opts: &LoadOptions,
    ) -> Result<Self> {
        let isa = runnable(opts.isa)?;
        crate::validate::validate(&graph, &consts)?;
        let mut consts = consts;
        let prepared = crate::kernels::Prepared::new(&graph, &mut consts, isa, opts.lean);
        Ok(Model {
            meta,
            graph,
            consts,
            prepared,
            npu: None,
            npu_options: Default::default(),
        })
    }

    /// Parses and validates a `.strix` image.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Model::from_bytes_with(bytes, &LoadOptions::default())
    }

    /// [`Model::from_bytes`] prepared as `opts` says.
    pub fn from_bytes_with(bytes: &[u8], opts: &LoadOptions) -> Result<Self> {
        runnable(opts.isa)?;
        Model::from_parts(format::read_all(bytes)?, opts)
    }

    /// Builds the model from a parsed file's parts (the file's bytes may be
    /// gone: preparing packs weights, so dropping the bytes first lowers the
    /// load's peak memory by the file's size).
    fn from_parts(parts: format::Parts, opts: &LoadOptions) -> Result<Self> {
        let (meta, graph, consts, npu) = parts;
        let m = Model::new_with(meta, graph, consts, opts)?;
        match npu {
            Some(p) => m.with_npu_part(p),
            None => Ok(m),
        }
    }

    /// Reads, parses and validates a `.strix` file.
    ///
    /// Only regular files are read: a directory, device (`/dev/zero`), FIFO
    /// or socket is refused before it is opened (opening a FIFO would block
    /// until a writer appears; a device would be read without end). At most
    /// [`format::MAX_FILE_BYTES`] + 1 bytes are read, whatever the size the
    /// file system reported, so a file growing under us cannot exceed the
    /// limit either.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Model::load_with(path, &LoadOptions::default())
    }

    /// [`Model::load`] prepared as `opts` says.
    pub fn load_with(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Self> {
        use std::io::Read;
        runnable(opts.isa)?;
        let path = path.as_ref();
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        let not_regular = |kind: &str| {
            io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{kind}, not a regular file (a model must be a .strix file)"),
            ))
        };
        let kind = |m: &std::fs::Metadata| {
            let t = m.file_type();
            if t.is_file() {
                None
            } else if t.is_dir() {
                Some("a directory")
            } else {
                Some(special_kind(&t))
            }
        };
        // `metadata` follows symlinks, as `open` does.
        if let Some(k) = kind(&std::fs::metadata(path).map_err(io)?) {
            return Err(not_regular(k));
        }
        let file = std::fs::File::open(path).map_err(io)?;
        // Checked again on the open file: the path may have been replaced.
        let meta = file.metadata().map_err(io)?;
        if let Some(k) = kind(&meta) {
            return Err(not_regular(k));
        }
        let too_big = |len: u64| {
            Error::Corrupt(format!(
                "{} is {len} bytes, over the {}-byte limit",
                path.display(),
                format::MAX_FILE_BYTES
            ))
        };
        if meta.len() > format::MAX_FILE_BYTES {
            return Err(too_big(meta.len()));
        }
        let mut bytes = crate::error::try_vec_empty(meta.len() as usize, "the model file")?;
        file.take(format::MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > format::MAX_FILE_BYTES {
            return Err(too_big(bytes.len() as u64));
        }
        let parts = format::read_all(&bytes)?;
        drop(bytes);
        Model::from_parts(parts, opts)
    }

    /// The same model running on another kernel path (tests compare paths).
    pub fn with_isa(mut self, isa: Isa) -> Result<Self> {
        let isa = runnable(Some(isa))?;
        self.prepared.restore(&mut self.consts);
        let lean = self.prepared.lean;
        self.prepared = crate::kernels::Prepared::new(&self.graph, &mut self.consts, isa, lean);
        Ok(self)
    }

    /// The kernel path this model runs on.
    pub fn isa(&self) -> Isa {
        self.prepared.isa
    }

    pub fn kernels(&self) -> &'static KernelSet {
        self.prepared.ks
    }

    /// The `.strix` image (of a lean model too: its pool is turned back to
    /// the stored layout in a copy first).
    pub fn to_bytes(&self) -> Vec<u8> {
        if self.prepared.repacked.iter().all(Option::is_none) {
            return format::write_all(&self.meta, &self.graph, &self.consts, self.npu.as_deref());
        }
        let mut c = self.consts.clone();
        self.prepared.restore(&mut c);
        format::write_all(&self.meta, &self.graph, &c, self.npu.as_deref())
    }

    /// Bytes prepare added beside the constants: packed conv weights (and
    /// their plans) that are copies, folded biases, f16 weights expanded to
    /// f32. What [`LoadOptions::lean`] saves shows here.
    pub fn prepared_bytes(&self) -> usize {
        self.prepared.bytes()
    }

    /// Whether tensor `t` holds packed weights in [`Model::consts`] instead
    /// of its stored values ([`LoadOptions::lean`]).
    pub fn is_repacked(&self, t: usize) -> bool {
        self.prepared.is_repacked(&self.graph, t)
    }

    /// Attaches a compiled NPU part after checking it against the graph
    /// ([`crate::npu::NpuPart::check`]).
    pub fn with_npu_part(mut self, part: crate::npu::NpuPart) -> Result<Self> {
        part.check(&self.graph)?;
        self.npu = Some(std::sync::Arc::new(part));
        Ok(self)
    }

    /// The same model, whose sessions use `opts` for its NPU part (see
    /// [`crate::npu::NpuOptions::for_board`]). No effect on a model without one.
    pub fn with_npu_options(mut self, opts: crate::npu::NpuOptions) -> Self {
        self.npu_options = opts;
        self
    }

    /// What [`crate::Session::new`] uses for the NPU part.
    pub fn npu_options(&self) -> &crate::npu::NpuOptions {
        &self.npu_options
    }

    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.to_bytes()).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })
    }
}

/// The kernel path to prepare for: `isa` if this CPU runs it, the detected
/// best for `None`. Checked before a file is read, so a bad request fails fast.
fn runnable(isa: Option<Isa>) -> Result<Isa> {
    match isa {
        None => Ok(Isa::detect()),
        Some(i) if i.available() => Ok(i),
        Some(i) => Err(Error::Argument(format!(
            "this CPU cannot run the {} kernel path",
            i.name()
        ))),
    }
}

/// What a non-regular, non-directory file is, for [`Model::load`]'s error.
#[cfg(unix)]
fn special_kind(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn special_kind(_: &std::fs::FileType) -> &'static str {
    "a special file"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tests::{conv, noise, GEOM};
    use crate::{Session, TensorData};

    fn run(m: &Model, x: &[f32]) -> Vec<f32> {
        let mut s = Session::new(m);
        s.input_mut(0).unwrap().copy_from_slice(x);
        s.run().unwrap();
        let mut y = vec![];
        s.output_f32(0, &mut y).unwrap();
        y
    }

    /// An f32 conv whose weights are stored as f16 computes exactly the conv
    /// of the f16-rounded weights, within the f16 rounding bound of the f32
    /// conv, from a file with half the weight bytes.
    #[test]
    fn f16_weights_run_the_f32_conv_within_the_rounding_bound() {
        let w = noise(GEOM.weight_len(), 3);
        let x = noise(GEOM.input_len(), 5);
        let load = |w: &[f32], f16: bool| {
            let (meta, g, c) = conv(w, f16);
            let bytes = format::write(&meta, &g, &c);
            (Model::from_bytes(&bytes).unwrap(), bytes.len())
        };
        let (m32, n32) = load(&w, false);
        let (m16, n16) = load(&w, true);
        assert!(n16 < n32, "f16 file {n16} bytes, f32 file {n32}");
        let y32 = run(&m32, &x);
        let y16 = run(&m16, &x);

        // Expansion is exact: same result as f32 storage of the rounded weights.
        let rounded: Vec<f32> = w.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
        assert_eq!(y16, run(&load(&rounded, false).0, &x));
        // And the session exposes the expanded weights as an f32 constant.
        let s = Session::new(&m16);
        let Some(TensorData::F32(seen)) = s.tensor(1) else {
            panic!("f16-stored weights are not an f32 tensor")
        };
        assert_eq!(seen, rounded.as_slice());

        // Round to nearest: |w - f16(w)| <= 2^-11 |w| for normal values, so
        // |y16 - y32| <= 2^-11 sum |x||w| (+ f32 accumulation noise, 1e-6).
        let xa: Vec<f32> = x.iter().map(|v| v.abs()).collect();
        let wa: Vec<f32> = w.iter().map(|v| v.abs()).collect();
        let (meta, g, mut c) = conv(&wa, false);
        c.f32[GEOM.weight_len()..].fill(0.0); // zero bias: sum |x||w| only
        let mag = run(&Model::new(meta, g, c).unwrap(), &xa);
        let mut worst = 0f32;
        for ((a, b), m) in y16.iter().zip(&y32).zip(&mag) {
            let d = (a - b).abs();
            assert!(d <= m / 2048.0 + 1e-6, "diff {d} over bound {}", m / 2048.0);
            worst = worst.max(d);
        }
        // The f16 path really ran (rounding is visible), and did not
        // produce something trivially close: outputs are O(1).
        assert!(worst > 0.0, "f16 weights gave bit-identical outputs");
        assert!(y32.iter().any(|v| v.abs() > 0.5));
    }

    /// `Model::load` on `path` in a thread: the error, or a panic if it
    /// takes over 20 s (a blocked open or an endless read).
    fn load_err_within_20s(path: &std::path::Path) -> String {
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.to_path_buf();
        // Detached: if it hangs, the test fails and the process ends it.
        std::thread::spawn(move || {
            let _ = tx.send(Model::load(&p).map(|_| ()).map_err(|e| e.to_string()));
        });
        rx.recv_timeout(std::time::Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("Model::load({}) hung", path.display()))
            .expect_err("a non-regular file loaded")
    }

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("strix-model-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Issue 13: `Model::new` read the `STRIX_ISA` environment variable.
    /// The kernel path is now the caller's [`LoadOptions::isa`], the same
    /// through every constructor, checked before any parsing.
    #[test]
    fn the_kernel_path_comes_from_the_load_options() {
        let (meta, g, c) = conv(&noise(GEOM.weight_len(), 3), false);
        let bytes = format::write(&meta, &g, &c);
        let d = temp_dir("isa");
        let path = d.join("m.strix");
        std::fs::write(&path, &bytes).unwrap();
        let scalar = LoadOptions {
            isa: Some(Isa::Scalar),
            ..Default::default()
        };
        let best = Isa::detect();
        let m = Model::new_with(meta.clone(), g.clone(), c.clone(), &scalar).unwrap();
        assert_eq!(m.isa(), Isa::Scalar);
        assert_eq!(m.kernels().isa, Isa::Scalar);
        assert_eq!(
            Model::from_bytes_with(&bytes, &scalar).unwrap().isa(),
            Isa::Scalar
        );
        assert_eq!(Model::load_with(&path, &scalar).unwrap().isa(), Isa::Scalar);
        assert_eq!(Model::new(meta, g, c).unwrap().isa(), best);
        assert_eq!(Model::from_bytes(&bytes).unwrap().isa(), best);
        assert_eq!(Model::load(&path).unwrap().isa(), best);
        if let Some(lacking) = Isa::ALL.into_iter().find(|i| !i.available()) {
            let opts = LoadOptions {
                isa: Some(lacking),
                ..Default::default()
            };
            // Refused before the (here: garbage) bytes are looked at.
            let e = Model::from_bytes_with(b"not a model", &opts).unwrap_err();
            assert!(
                matches!(&e, Error::Argument(m) if m.contains(lacking.name())),
                "{e}"
            );
            assert!(Model::load_with(&path, &opts).is_err());
            assert!(Model::from_bytes(&bytes)
                .unwrap()
                .with_isa(lacking)
                .is_err());
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn directories_are_refused() {
        let d = temp_dir("dir");
        let e = load_err_within_20s(&d);
        assert!(e.contains("a directory, not a regular file"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// `/dev/zero` reports length 0 and never ends: read to EOF, it grew
    /// until memory ran out.
    #[cfg(unix)]
    #[test]
    fn devices_are_refused_before_reading() {
        let e = load_err_within_20s(std::path::Path::new("/dev/zero"));
        assert!(
            e.contains("/dev/zero") && e.contains("a character device, not a regular file"),
            "{e}"
        );
    }

    /// Opening a FIFO for reading blocks until a writer appears: it must be
    /// refused before it is opened.
    #[cfg(unix)]
    #[test]
    fn fifos_are_refused_without_blocking() {
        let d = temp_dir("fifo");
        let fifo = d.join("model.strix");
        let st = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(st.success());
        let e = load_err_within_20s(&fifo);
        assert!(e.contains("a FIFO, not a regular file"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A regular file still loads, through a symlink too.
    #[cfg(unix)]
    #[test]
    fn regular_files_and_symlinks_to_them_load() {
        let d = temp_dir("regular");
        let (meta, g, c) = conv(&noise(GEOM.weight_len(), 3), false);
        let m = Model::new(meta, g, c).unwrap();
        m.save(d.join("m.strix")).unwrap();
        std::os::unix::fs::symlink(d.join("m.strix"), d.join("link.strix")).unwrap();
        for p in ["m.strix", "link.strix"] {
            assert_eq!(Model::load(d.join(p)).unwrap().to_bytes(), m.to_bytes());
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn f16_weights_count_two_bytes_and_survive_a_resave() {
        let w = noise(GEOM.weight_len(), 3);
        let c32 = conv(&w, false).2;
        let (meta, g, c16) = conv(&w, true);
        assert_eq!(c32.bytes() - c16.bytes(), 2 * GEOM.weight_len());
        // The loaded model keeps the f16 pool (not the expansion) for saving.
        let m = Model::new(meta, g, c16).unwrap();
        let again = Model::from_bytes(&m.to_bytes()).unwrap();
        assert_eq!(again.consts, m.consts);
        assert_eq!(again.to_bytes(), m.to_bytes());
    }
}
