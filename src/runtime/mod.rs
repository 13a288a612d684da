//! The scoring runtime: ONNX Runtime loading and artifact ingestion.

pub mod batch;
pub mod bootstrap;
pub mod cells;
pub mod ingest;
pub mod onnx;
pub mod reproduce;
pub mod scorer;
pub mod typed;
