//! The bootstrap file: read, checked, hashed. A file that does not parse or check stops
//! `serve` before anything is appended, with the line (or the entry) at fault.

use std::path::Path;

use crate::domain::runtime::{Bootstrap, check_bootstrap};

/// The catalog shipped with Provenant, applied when no file is given.
pub const DEFAULT: &str = include_str!("../../config/bootstrap.yaml");

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("bootstrap file {0}: {1}")]
    Read(String, std::io::Error),
    /// serde's message carries the line and column.
    #[error("bootstrap file {0}: {1}")]
    Parse(String, String),
    #[error("bootstrap file {0}: {1}")]
    Invalid(String, String),
}

/// Reads and checks a bootstrap file (`None`: the shipped default); answers it with the
/// blake3 hash of its bytes.
pub fn load(path: Option<&Path>) -> Result<(Bootstrap, String), BootstrapError> {
    let (name, text) = match path {
        Some(p) => {
            let name = p.display().to_string();
            let text =
                std::fs::read_to_string(p).map_err(|e| BootstrapError::Read(name.clone(), e))?;
            (name, text)
        }
        None => ("(built in)".to_string(), DEFAULT.to_string()),
    };
    parse(&name, &text)
}

pub fn parse(name: &str, text: &str) -> Result<(Bootstrap, String), BootstrapError> {
    let file: Bootstrap = if text.trim().is_empty() {
        Bootstrap::default()
    } else {
        serde_norway::from_str(text)
            .map_err(|e| BootstrapError::Parse(name.into(), e.to_string()))?
    };
    check_bootstrap(&file).map_err(|e| BootstrapError::Invalid(name.into(), e.to_string()))?;
    Ok((file, blake3::hash(text.as_bytes()).to_hex().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_catalog_parses_and_checks() {
        let (file, hash) = parse("default", DEFAULT).unwrap();
        assert_eq!(hash.len(), 64);
        assert!(
            file.runtimes
                .iter()
                .any(|r| r.id == "onnx-runtime" && r.spec.available)
        );
        assert!(
            file.runtimes
                .iter()
                .filter(|r| r.id != "onnx-runtime")
                .all(|r| !r.spec.available)
        );
        let mojo = file
            .artifact_types
            .iter()
            .find(|t| t.artifact_type == "dai/mojo_pipeline")
            .unwrap();
        assert_eq!(
            (mojo.name.as_str(), mojo.model_type.as_str()),
            ("DAI MOJO Pipeline", "dai_mojo_pipeline")
        );
    }

    #[test]
    fn errors_name_the_line_or_the_entry() {
        let err = parse("f.yaml", "runtimes:\n  - id: x\n    name: [unclosed\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line"), "{err}");
        let err = parse(
            "f.yaml",
            "runtime_images:\n  - id: a\n    name: A\n    colour: red\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("colour") && err.contains("line"), "{err}");
        let err = parse(
            "f.yaml",
            "runtimes:\n  - id: r\n    name: R\n    image_id: missing\n    model_types: [onnx]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("entry 0") && err.contains("missing"), "{err}");
        let err = parse(
            "f.yaml",
            "runtime_images:\n  - id: a\n    name: A\n    state: SLEEPING\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("SLEEPING") || err.contains("line"), "{err}");
    }
}
