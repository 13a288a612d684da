//! The registry projection: `domain::evolve` folded over the ledger from position 0 at start,
//! then kept current by a subscription. Readers take a snapshot under a short read lock.
//! The same follower keeps the audit-trail index, so the two never disagree on what is applied.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use tokio::sync::watch;

use super::Views;
use super::audit::AuditIndex;
use super::monitoring::Monitoring;
use super::replay::{Until, replay_into};
use crate::domain::{Recorded, Registry, RegistryEvent, evolve};
use crate::log::envelope::{Event, split_record};
use crate::log::{Ledger, LogError};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProjectionError {
    #[error("the registry projection stopped at position {position}: {reason}")]
    Stopped { position: u64, reason: String },
}

pub struct RegistryProjection {
    state: RwLock<Registry>,
    audit: RwLock<AuditIndex>,
    monitoring: RwLock<Monitoring>,
    /// Off only while `provenant bench score` measures what the monitoring fold costs the
    /// scorer; runs applied meanwhile are missing from the windows until a restart.
    monitoring_on: AtomicBool,
    /// The next position to apply, or why the projection stopped.
    progress: watch::Sender<Result<u64, ProjectionError>>,
}

/// A stored event as `evolve` sees it; registry payloads that do not decode are corruption.
pub fn recorded(event: &Event) -> Result<Recorded, String> {
    let u = &event.unsigned;
    let decoded = RegistryEvent::decode(&u.event_type, u.schema_version, &u.payload)
        .map_err(|e| e.to_string())?;
    Ok(Recorded {
        position: u.position,
        stream: u.stream.clone(),
        stream_version: u.stream_version,
        actor: u.actor.clone(),
        recorded_at: u.recorded_at.clone(),
        event: decoded,
    })
}

/// The envelope fields a fold needs, read from a stored record with the payload left as
/// raw JSON, so replay decodes each payload once, straight into its type.
#[derive(serde::Deserialize)]
struct Header<'a> {
    actor: String,
    #[serde(borrow)]
    event_type: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    payload: &'a serde_json::value::RawValue,
    position: u64,
    recorded_at: String,
    schema_version: u32,
    stream: String,
    stream_version: u64,
}

/// `recorded` from a raw stored record (see `log::envelope::split_record`).
pub fn recorded_from_record(record: &[u8]) -> Result<Recorded, String> {
    decode_record(record, false).map(|(r, _)| r)
}

/// What the audit index reads of an event beyond its `Recorded` fields; the ids in the
/// payload are read where the event is indexed (see `replay_into`).
pub struct Indexed {
    pub event_type: String,
    pub payload: Box<serde_json::value::RawValue>,
}

/// `recorded` from a raw stored record, and with `index`, what the audit index keeps of it.
pub fn decode_record(record: &[u8], index: bool) -> Result<(Recorded, Option<Indexed>), String> {
    let (canonical, _, _) = split_record(record).map_err(|e| e.to_string())?;
    let h: Header = serde_json::from_slice(canonical).map_err(|e| e.to_string())?;
    let mut payload = serde_json::Deserializer::from_str(h.payload.get());
    let event = RegistryEvent::decode(&h.event_type, h.schema_version, &mut payload)
        .map_err(|e| e.to_string())?;
    let indexed = index.then(|| Indexed {
        event_type: h.event_type.into_owned(),
        payload: h.payload.to_owned(),
    });
    let recorded = Recorded {
        position: h.position,
        stream: h.stream,
        stream_version: h.stream_version,
        actor: h.actor,
        recorded_at: h.recorded_at,
        event,
    };
    Ok((recorded, indexed))
}

impl RegistryProjection {
    /// Rebuilds the registry and the audit index from the whole log (the replay's fast
    /// path), then follows the log from there; returns once caught up with the head as it
    /// was at the call.
    pub async fn start(ledger: &Ledger) -> Result<Arc<RegistryProjection>, ProjectionError> {
        let failed = |reason: String| ProjectionError::Stopped {
            position: 0,
            reason,
        };
        let snap = ledger.snapshot().map_err(|e| failed(e.to_string()))?;
        let (registry, views) = tokio::task::spawn_blocking(move || {
            let mut views = Views::default();
            replay_into(&snap, Until::End, Some(&mut views), &mut |_, _| {})
                .map(|registry| (registry, views))
        })
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(|e| failed(e.to_string()))?;
        let applied = registry.applied;
        let (progress, _) = watch::channel(Ok(applied));
        let projection = Arc::new(RegistryProjection {
            state: RwLock::new(registry),
            audit: RwLock::new(views.audit),
            monitoring: RwLock::new(views.monitoring),
            monitoring_on: AtomicBool::new(true),
            progress,
        });
        let follower = projection.clone();
        let mut subscription = ledger.subscribe(applied);
        tokio::spawn(async move {
            loop {
                let position = subscription.position();
                let outcome = match subscription.next().await {
                    Ok(event) => recorded(&event).map(|r| (event, r)),
                    Err(LogError::Stopped) => return,
                    Err(e) => Err(e.to_string()),
                };
                match outcome {
                    Ok((event, r)) => follower.apply(&event, &r),
                    Err(reason) => {
                        let stopped = Err(ProjectionError::Stopped { position, reason });
                        follower.progress.send_modify(|p| *p = stopped);
                        return;
                    }
                }
            }
        });
        projection.wait_for(ledger.head().size).await?;
        Ok(projection)
    }

    fn apply(&self, event: &Event, r: &Recorded) {
        self.audit
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .add(&event.unsigned);
        if self.monitoring_on.load(Ordering::Relaxed) {
            self.monitoring
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .apply(r);
        }
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        *state = evolve(std::mem::take(&mut *state), r);
        let applied = state.applied;
        drop(state);
        self.progress.send_modify(|p| *p = Ok(applied));
    }

    /// Waits until every position below `size` is applied.
    pub async fn wait_for(&self, size: u64) -> Result<(), ProjectionError> {
        let mut rx = self.progress.subscribe();
        let result = rx
            .wait_for(|p| p.as_ref().map_or(true, |applied| *applied >= size))
            .await;
        match result {
            Ok(p) => p.as_ref().map(|_| ()).map_err(Clone::clone),
            Err(_) => Err(ProjectionError::Stopped {
                position: 0,
                reason: "the projection task ended".into(),
            }),
        }
    }

    /// The current registry, read-locked: hold it briefly.
    pub fn read(&self) -> RwLockReadGuard<'_, Registry> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The audit-trail index, read-locked: hold it briefly.
    pub fn audit(&self) -> RwLockReadGuard<'_, AuditIndex> {
        self.audit.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Turns the monitoring fold on or off (see `monitoring_on`).
    pub fn set_monitoring(&self, on: bool) {
        self.monitoring_on.store(on, Ordering::Relaxed);
    }

    /// The service-level monitoring windows, read-locked: hold it briefly.
    pub fn monitoring(&self) -> RwLockReadGuard<'_, Monitoring> {
        self.monitoring.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// The registry that `events`, from position 0 on, build from an empty one.
pub fn fold(events: impl IntoIterator<Item = Event>) -> Result<Registry, String> {
    events
        .into_iter()
        .try_fold(Registry::default(), |state, e| {
            Ok(evolve(state, &recorded(&e)?))
        })
}
