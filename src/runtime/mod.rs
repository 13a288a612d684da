//! The scoring runtime: ONNX Runtime loading and artifact ingestion.

pub mod ingest;
pub mod onnx;
