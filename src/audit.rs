//! Which events an audit export covers: a project, a deployment, a model (or one version),
//! or the whole log, optionally cut to a position or time range.

use uuid::Uuid;

use crate::domain::Registry;
use crate::domain::event::stream_of;
use crate::log::LogError;
use crate::log::store::{Direction, Snapshot};
use crate::projections::replay::Until;

#[derive(Debug, Clone, Copy)]
pub enum Subject {
    All,
    Project(Uuid),
    Deployment(Uuid),
    Model {
        model_id: Uuid,
        version: Option<u32>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("{0}")]
    Unknown(String),
    #[error(transparent)]
    Bundle(#[from] crate::log::bundle::BundleError),
    #[error("bundle file {0}: {1}")]
    File(std::path::PathBuf, std::io::Error),
}

/// Writes the audit bundle of `positions` (from `select`) to `out`, which appears whole or
/// not at all; `progress(done, total)` as events are written.
pub fn write_bundle(
    snap: &Snapshot,
    (positions, selection): (Vec<u64>, String),
    previous: Option<u64>,
    out: &std::path::Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<crate::log::bundle::Manifest, SelectError> {
    let tmp = out.with_extension("partial");
    let file = |e| SelectError::File(tmp.clone(), e);
    let manifest = crate::log::bundle::write(
        snap,
        positions,
        &selection,
        previous,
        std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(file)?),
        progress,
    )?;
    std::fs::rename(&tmp, out).map_err(file)?;
    Ok(manifest)
}

/// Every position of a stream (none when the stream was never written).
fn stream(snap: &Snapshot, name: &str) -> Result<Vec<u64>, LogError> {
    match snap.read_stream(name, 0, Direction::Forward, usize::MAX) {
        Ok(events) => Ok(events.iter().map(|e| e.unsigned.position).collect()),
        Err(LogError::UnknownStream(_)) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The positions `subject` covers between `from` and `to` (both included), sorted, with a
/// description of the selection.
pub fn select(
    snap: &Snapshot,
    reg: &Registry,
    subject: Subject,
    from: Until,
    to: Until,
) -> Result<(Vec<u64>, String), SelectError> {
    let deployment_streams = |pick: &dyn Fn(&crate::domain::deployment::Deployment) -> bool| {
        reg.deployments
            .values()
            .filter(|d| pick(d))
            .map(|d| stream(snap, &crate::domain::deployment::stream(d.deployment_id)))
            .collect::<Result<Vec<_>, _>>()
            .map(|v| v.into_iter().flatten().collect::<Vec<_>>())
    };
    let (mut positions, what) = match subject {
        Subject::All => ((0..snap.size()?).collect(), "the whole log".to_string()),
        Subject::Project(id) => {
            let p = reg
                .projects
                .get(&id)
                .ok_or_else(|| SelectError::Unknown(format!("no project {id}")))?;
            let mut positions = p.event_positions.clone();
            positions.extend(deployment_streams(&|d| d.spec.project_id == id)?);
            (
                positions,
                format!("project {id} ({}) and its deployments", p.name),
            )
        }
        Subject::Deployment(id) => {
            if !reg.deployments.contains_key(&id) {
                return Err(SelectError::Unknown(format!("no deployment {id}")));
            }
            (
                stream(snap, &crate::domain::deployment::stream(id))?,
                format!("deployment {id}"),
            )
        }
        Subject::Model { model_id, version } => {
            let m = reg
                .models
                .get(&model_id)
                .ok_or_else(|| SelectError::Unknown(format!("no model {model_id}")))?;
            if let Some(v) = version
                && !m.versions.contains_key(&v)
            {
                return Err(SelectError::Unknown(format!(
                    "model {model_id} has no version {v}"
                )));
            }
            let wanted = |v: u32| version.is_none_or(|w| w == v);
            let mut positions = Vec::new();
            for e in snap.read_stream(
                &stream_of("model", model_id),
                0,
                Direction::Forward,
                usize::MAX,
            )? {
                let v = e.unsigned.payload["version"].as_u64();
                if v.is_none_or(|v| wanted(v as u32)) {
                    positions.push(e.unsigned.position);
                }
            }
            for mv in m.versions.values().filter(|mv| wanted(mv.version)) {
                positions.extend(stream(snap, &stream_of("experiment", mv.experiment_id))?);
            }
            positions.extend(deployment_streams(&|d| {
                d.spec.model_id == model_id && wanted(d.spec.version)
            })?);
            let what = match version {
                Some(v) => format!(
                    "model {model_id} ({}) version {v}, its experiment and deployments",
                    m.name
                ),
                None => format!(
                    "model {model_id} ({}), its experiments and deployments",
                    m.name
                ),
            };
            (positions, what)
        }
    };
    positions.sort_unstable();
    positions.dedup();
    let timed = from.is_time() || to.is_time();
    let mut kept = Vec::with_capacity(positions.len());
    for p in positions {
        let at = match timed {
            true => snap
                .event(p)?
                .map(|e| e.unsigned.recorded_at)
                .unwrap_or_default(),
            false => String::new(),
        };
        if Until::holds(&from, &to, p, &at) {
            kept.push(p);
        }
    }
    let range = match (from, to) {
        (Until::End, Until::End) => String::new(),
        _ => format!(", from {from:?} to {to:?}"),
    };
    Ok((kept, format!("{what}{range}")))
}
