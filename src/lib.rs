//! Provenant: an MLOps registry, deployment manager and scoring runtime whose source of
//! truth is a signed, hash-chained, append-only event ledger.

pub mod accuracy;
pub mod api;
pub mod audit;
pub mod bench;
pub mod blobs;
pub mod demo;
pub mod domain;
pub mod drift;
pub mod export;
pub mod log;
pub mod progress;
pub mod projections;
pub mod report;
pub mod runtime;
