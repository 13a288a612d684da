//! ONNX Runtime, loaded once from its shared library, and model introspection.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::session::Session;
use ort::value::ValueType;

/// The library file the setup script fetches into the repo.
const REPO_LIBRARY: &str = ".ort/lib/libonnxruntime.so";

#[derive(Debug, Clone, thiserror::Error)]
pub enum OrtError {
    #[error(
        "ONNX Runtime's shared library was not found (looked at {0}); run `bash scripts/setup.sh`, set ORT_DYLIB_PATH, or pass --ort-lib"
    )]
    NotFound(String),
    #[error("ONNX Runtime could not be loaded from {path}: {reason}")]
    Load { path: PathBuf, reason: String },
}

/// A loaded ONNX Runtime: its environment, library path and version.
#[derive(Clone)]
pub struct Onnx {
    pub env: ort::environment::Environment,
    pub library: PathBuf,
    pub version: String,
    /// See `cpu_class`.
    pub cpu_class: String,
}

/// This machine's CPU class: its architecture and the SIMD extensions ONNX Runtime's MLAS
/// kernels choose their code paths by, so two machines of one class compute bit for bit alike.
fn cpu_class() -> String {
    #[cfg(target_arch = "x86_64")]
    let features = [
        ("sse4.1", std::arch::is_x86_feature_detected!("sse4.1")),
        ("avx", std::arch::is_x86_feature_detected!("avx")),
        ("avx2", std::arch::is_x86_feature_detected!("avx2")),
        ("fma", std::arch::is_x86_feature_detected!("fma")),
        ("f16c", std::arch::is_x86_feature_detected!("f16c")),
        ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
        ("avx512bw", std::arch::is_x86_feature_detected!("avx512bw")),
        ("avx512vl", std::arch::is_x86_feature_detected!("avx512vl")),
        (
            "avx512vnni",
            std::arch::is_x86_feature_detected!("avx512vnni"),
        ),
    ];
    #[cfg(target_arch = "aarch64")]
    let features = [
        ("neon", std::arch::is_aarch64_feature_detected!("neon")),
        (
            "dotprod",
            std::arch::is_aarch64_feature_detected!("dotprod"),
        ),
        ("i8mm", std::arch::is_aarch64_feature_detected!("i8mm")),
        ("fp16", std::arch::is_aarch64_feature_detected!("fp16")),
    ];
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let features: [(&str, bool); 0] = [];
    let mut class = std::env::consts::ARCH.to_string();
    for (name, _) in features.iter().filter(|(_, present)| *present) {
        class.push('+');
        class.push_str(name);
    }
    class
}

static ORT: OnceLock<Result<Onnx, OrtError>> = OnceLock::new();

/// Loads ONNX Runtime once per process: from `explicit`, else `ORT_DYLIB_PATH`, else the
/// repo's `.ort/lib/` (from the working directory or above the executable).
pub fn load(explicit: Option<&Path>) -> Result<&'static Onnx, OrtError> {
    ORT.get_or_init(|| {
        let candidates = candidates(explicit);
        let path = candidates
            .iter()
            .find(|p| p.is_file())
            .cloned()
            .ok_or_else(|| {
                OrtError::NotFound(
                    candidates
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                )
            })?;
        let load_err = |reason: String| OrtError::Load {
            path: path.clone(),
            reason,
        };
        let env = ort::init_from(&path)
            .map_err(|e| load_err(e.to_string()))?
            .with_name("provenant")
            .build()
            .map_err(|e| load_err(e.to_string()))?;
        let version = version_of(&path, ort::info());
        Ok(Onnx {
            env,
            library: path,
            version,
            cpu_class: cpu_class(),
        })
    })
    .as_ref()
    .map_err(Clone::clone)
}

fn candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![p.to_path_buf()];
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return vec![PathBuf::from(p)];
    }
    let mut out = vec![PathBuf::from(REPO_LIBRARY)];
    if let Ok(exe) = std::env::current_exe() {
        out.extend(exe.ancestors().skip(1).map(|dir| dir.join(REPO_LIBRARY)));
    }
    out
}

/// The runtime's version: from its build string (`rel-1.32.0`), else the library's file name.
fn version_of(path: &Path, build_info: &str) -> String {
    let from_info = build_info
        .split(['=', ',', ' '])
        .find_map(|w| w.strip_prefix("rel-"))
        .map(str::to_string);
    let from_file = || {
        let real = std::fs::canonicalize(path).ok()?;
        let name = real.file_name()?.to_string_lossy().into_owned();
        name.split_once(".so.").map(|(_, v)| v.to_string())
    };
    from_info
        .or_else(from_file)
        .unwrap_or_else(|| "unknown".into())
}

/// A model's graph inputs and outputs and its descriptive metadata, as ONNX Runtime reads them.
pub struct ModelInfo {
    pub inputs: Vec<(String, ValueType)>,
    pub outputs: Vec<(String, ValueType)>,
    pub producer: Option<String>,
    pub graph_name: Option<String>,
    pub domain: Option<String>,
    pub model_version: Option<i64>,
    pub custom: BTreeMap<String, String>,
}

/// Loads the model in a one-thread session and reads its signature.
pub fn inspect(onnx: &Onnx, bytes: &[u8]) -> Result<ModelInfo, String> {
    let session = session(onnx, bytes, 1)?;
    let outlets = |list: &[ort::value::Outlet]| {
        list.iter()
            .map(|o| (o.name().to_string(), o.dtype().clone()))
            .collect::<Vec<_>>()
    };
    let meta = session.metadata().map_err(|e| e.to_string())?;
    let custom = meta
        .custom_keys()
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter_map(|k| meta.custom(&k).map(|v| (k, v)))
        .collect();
    Ok(ModelInfo {
        inputs: outlets(session.inputs()),
        outputs: outlets(session.outputs()),
        producer: meta.producer().filter(|s| !s.is_empty()),
        graph_name: meta.name().filter(|s| !s.is_empty()),
        domain: meta.domain().filter(|s| !s.is_empty()),
        model_version: meta.version(),
        custom,
    })
}

/// A session over `bytes` with `threads` intra-op threads.
pub fn session(onnx: &Onnx, bytes: &[u8], threads: usize) -> Result<Session, String> {
    Session::builder(&onnx.env)
        .map_err(|e| e.to_string())?
        .with_intra_threads(threads)
        .map_err(|e| e.to_string())?
        .commit_from_memory(bytes)
        .map_err(|e| e.to_string())
}

/// Facts ONNX Runtime does not report, read from the ModelProto's top-level fields:
/// IR version, producer version, and the opset of each domain.
#[derive(Debug, Default, PartialEq)]
pub struct ProtoFacts {
    pub ir_version: Option<u64>,
    pub producer_version: Option<String>,
    pub opsets: BTreeMap<String, u64>,
}

/// Walks the protobuf wire format of a ModelProto's top level (fields 1, 3 and 8).
pub fn proto_facts(bytes: &[u8]) -> Option<ProtoFacts> {
    let mut facts = ProtoFacts::default();
    let mut r = Wire(bytes);
    while !r.0.is_empty() {
        let (field, value) = r.field()?;
        match (field, value) {
            (1, Value::Varint(v)) => facts.ir_version = Some(v),
            (3, Value::Bytes(b)) => {
                facts.producer_version = Some(String::from_utf8_lossy(b).into_owned())
            }
            (8, Value::Bytes(b)) => {
                let (mut domain, mut version) = (String::new(), 0);
                let mut inner = Wire(b);
                while !inner.0.is_empty() {
                    match inner.field()? {
                        (1, Value::Bytes(d)) => domain = String::from_utf8_lossy(d).into_owned(),
                        (2, Value::Varint(v)) => version = v,
                        _ => {}
                    }
                }
                let domain = if domain.is_empty() {
                    "ai.onnx".into()
                } else {
                    domain
                };
                facts.opsets.insert(domain, version);
            }
            _ => {}
        }
    }
    Some(facts)
}

struct Wire<'a>(&'a [u8]);

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

impl<'a> Wire<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.0.split_first()?;
            self.0 = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn field(&mut self) -> Option<(u64, Value<'a>)> {
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => self.take(8).map(|_| Value::Fixed)?,
            2 => {
                let n = usize::try_from(self.varint()?).ok()?;
                Value::Bytes(self.take(n)?)
            }
            5 => self.take(4).map(|_| Value::Fixed)?,
            _ => return None,
        };
        Some((key >> 3, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_from_build_info_or_file_name() {
        let info = "ORT Build Info: git-branch=rel-1.32.0, git-commit-id=abc, build type=Release";
        assert_eq!(version_of(Path::new("/nonexistent"), info), "1.32.0");
        assert_eq!(
            version_of(Path::new("/nonexistent"), "no version"),
            "unknown"
        );
    }

    #[test]
    fn proto_facts_of_a_real_model() {
        let bytes = std::fs::read("fixtures/models/wine_classifier.onnx").unwrap();
        let facts = proto_facts(&bytes).unwrap();
        assert_eq!(facts.ir_version, Some(8));
        assert_eq!(facts.opsets.get("ai.onnx"), Some(&17));
        assert!(facts.opsets.contains_key("ai.onnx.ml"));
        assert!(facts.producer_version.is_some());
        assert_eq!(proto_facts(&[0x0a, 0x05, 0x01]), None);
    }
}
