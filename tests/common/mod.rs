//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;

use provenant::log::{self, ExpectedVersion, Ledger, NewEvent};
use serde_json::{Value, json};

pub fn event(kind: &str, payload: Value) -> NewEvent {
    NewEvent {
        event_type: kind.into(),
        schema_version: 1,
        actor: "user:test".into(),
        payload,
    }
}

pub fn fresh(dir: &Path) -> Ledger {
    Ledger::init(dir).unwrap();
    Ledger::open(dir, log::Config::default()).unwrap()
}

/// Appends `n` events to each of `streams` streams, round-robin.
pub async fn fill(ledger: &Ledger, streams: usize, n: usize) {
    for i in 0..n {
        for s in 0..streams {
            ledger
                .append(
                    &format!("s-{s}"),
                    ExpectedVersion::Any,
                    vec![event("Filled", json!({"i": i, "s": s}))],
                )
                .await
                .unwrap();
        }
    }
}
