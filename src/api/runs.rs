//! Recorded inference runs as the monitoring reports read them: the run at a ledger position,
//! and its input or output table when the deployment's retention policy kept it.

use super::AppState;
use super::error::ApiError;
use super::jobs::internal;
use crate::blobs::BlobError;
use crate::domain::deployment::{Deployment, Retention};
use crate::domain::event::{InferenceRunRecorded, RegistryEvent};
use crate::log::envelope::Digest;
use crate::runtime::cells::Cells;

/// The inference run stored at `position`, with its commit time (RFC 3339).
pub(super) fn run_at(
    s: &AppState,
    position: u64,
) -> Result<(String, InferenceRunRecorded), ApiError> {
    let event = s
        .ledger
        .event(position)?
        .ok_or_else(|| internal("internal", format!("no event at position {position}")))?;
    let u = event.unsigned;
    match RegistryEvent::decode(&u.event_type, u.schema_version, &u.payload) {
        Ok(Some(RegistryEvent::InferenceRunRecorded(run))) => Ok((u.recorded_at, run)),
        _ => Err(internal(
            "internal",
            format!("position {position} is not an inference run"),
        )),
    }
}

/// A run's inputs or outputs, as the scorer stored them.
pub(super) struct RunTable {
    pub fields: Vec<String>,
    pub rows: Cells,
}

/// What a deployment's retention policy lets a report read: no run's blobs under hash-only
/// retention, and none purged. (A blob another deployment keeps is not this one's.)
#[derive(Clone, Copy)]
pub(super) struct Retained {
    any: bool,
    from: u64,
}

impl Retained {
    pub fn of(d: &Deployment) -> Retained {
        Retained {
            any: d.spec.retention != Retention::Hashes,
            from: d.purged_before,
        }
    }

    /// The table stored as blob `hash` of the run at `position`; None when the policy did not
    /// keep it or the blob is gone.
    pub fn table(
        self,
        s: &AppState,
        position: u64,
        hash: &str,
    ) -> Result<Option<RunTable>, ApiError> {
        if !self.any || position < self.from {
            return Ok(None);
        }
        let digest = Digest::from_hex(hash)
            .ok_or_else(|| internal("internal", format!("bad blob hash {hash}")))?;
        match s.blobs.get(&digest) {
            Ok(bytes) => crate::runtime::typed::read(&bytes)
                .map(|(fields, rows)| Some(RunTable { fields, rows }))
                .map_err(|e| internal("internal", e)),
            Err(BlobError::NotFound(_)) => Ok(None),
            Err(e) => Err(internal("internal", e)),
        }
    }
}
