//! Replay: the registry rebuilt from the log up to a position or a time — what was registered,
//! deployed where and on which runtime, as the ledger knew it then.
//!
//! Reading and decoding run on one thread while the fold runs on another, so a replay costs
//! about the larger of the two rather than their sum.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};

use super::Views;
use super::audit::entity_ids;
use super::registry::{Indexed, decode_record};
use crate::domain::{Recorded, Registry, evolve};
use crate::log::LogError;
use crate::log::envelope::format_time;
use crate::log::store::Snapshot;

/// Where a replay stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Until {
    /// The whole log.
    End,
    /// Through this position, included.
    Position(u64),
    /// Through the last event recorded at or before this time.
    Time(DateTime<Utc>),
}

impl std::str::FromStr for Until {
    type Err = String;
    /// A position (`1234`) or an RFC 3339 time (`2026-05-01T00:00:00Z`).
    fn from_str(s: &str) -> Result<Until, String> {
        if let Ok(p) = s.parse::<u64>() {
            return Ok(Until::Position(p));
        }
        DateTime::parse_from_rfc3339(s)
            .map(|t| Until::Time(t.with_timezone(&Utc)))
            .map_err(|_| format!("{s:?} is neither a position nor an RFC 3339 time"))
    }
}

impl Until {
    /// Where an event at `position`, recorded at `recorded_at`, stands against this bound;
    /// `End` bounds nothing.
    fn compare(&self, position: u64, recorded_at: &str) -> Option<Ordering> {
        match self {
            Until::End => None,
            Until::Position(p) => Some(position.cmp(p)),
            // RFC 3339 UTC times of fixed precision compare as text.
            Until::Time(t) => Some(recorded_at.cmp(format_time(*t).as_str())),
        }
    }

    /// Whether `from` and `to` (both included, either of them `End`) hold an event.
    pub fn holds(from: &Until, to: &Until, position: u64, recorded_at: &str) -> bool {
        from.compare(position, recorded_at) != Some(Ordering::Less)
            && to.compare(position, recorded_at) != Some(Ordering::Greater)
    }

    /// A range bound that may be left out: `End` when it is.
    pub fn bound(s: Option<&str>) -> Result<Until, String> {
        s.map_or(Ok(Until::End), str::parse)
    }

    pub fn is_time(&self) -> bool {
        matches!(self, Until::Time(_))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("event {position} does not fold: {reason}")]
    Corrupt { position: u64, reason: String },
}

/// Events read and decoded per step.
const CHUNK: usize = 4096;

/// Folds the log in `snap` from position 0 up to `until`; `progress(done, total)` after each
/// chunk.
pub fn replay(
    snap: &Snapshot,
    until: Until,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Registry, ReplayError> {
    replay_into(snap, until, None, progress)
}

/// `replay`, also folding every event into `views` (empty ones) when given.
pub fn replay_into(
    snap: &Snapshot,
    until: Until,
    mut views: Option<&mut Views>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Registry, ReplayError> {
    let size = snap.size()?;
    let end = match until {
        Until::Position(p) => (p + 1).min(size),
        _ => size,
    };
    let cutoff = match until {
        Until::Time(t) => Some(format_time(t)),
        _ => None,
    };
    let index = views.is_some();
    type Chunk = Vec<(Recorded, Option<Indexed>)>;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Chunk, ReplayError>>(2);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut from = 0;
            while from < end {
                let want = CHUNK.min((end - from) as usize);
                let chunk = snap
                    .records(from, from + want as u64)
                    .map_err(ReplayError::from)
                    .and_then(|records| {
                        let mut out = Vec::with_capacity(records.len());
                        for (position, record) in &records {
                            let decoded = decode_record(record, index).map_err(|reason| {
                                ReplayError::Corrupt {
                                    position: *position,
                                    reason,
                                }
                            })?;
                            // RFC 3339 UTC times of fixed precision compare as text, and the
                            // log's times never go back.
                            if cutoff.as_ref().is_some_and(|c| decoded.0.recorded_at > *c) {
                                break;
                            }
                            out.push(decoded);
                        }
                        Ok(out)
                    });
                let stop = match &chunk {
                    Ok(c) => c.len() < want || c.is_empty(),
                    Err(_) => true,
                };
                from += CHUNK as u64;
                if tx.send(chunk).is_err() || stop {
                    return;
                }
            }
        });
        let mut state = Registry::default();
        for chunk in rx {
            for (r, indexed) in chunk? {
                // The ids are read here, not with the decoding: decoding is the slower side.
                if let (Some(views), Some(i)) = (views.as_deref_mut(), indexed) {
                    let mut payload = serde_json::Deserializer::from_str(i.payload.get());
                    let ids =
                        entity_ids(&r.stream, &mut payload).map_err(|e| ReplayError::Corrupt {
                            position: r.position,
                            reason: e.to_string(),
                        })?;
                    views.audit.push(
                        r.position,
                        &r.actor,
                        &r.stream,
                        &i.event_type,
                        &r.recorded_at,
                        ids,
                    );
                    views.monitoring.apply(&r);
                }
                state = evolve(state, &r);
            }
            progress(state.applied, end);
        }
        Ok(state)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_parses_positions_and_times() {
        assert_eq!("42".parse::<Until>(), Ok(Until::Position(42)));
        let t = "2026-05-01T12:00:00Z".parse::<Until>().unwrap();
        assert_eq!(
            t,
            Until::Time(
                DateTime::parse_from_rfc3339("2026-05-01T12:00:00Z")
                    .unwrap()
                    .into()
            )
        );
        assert!("yesterday".parse::<Until>().is_err());
        assert!("-1".parse::<Until>().is_err());
    }
}
