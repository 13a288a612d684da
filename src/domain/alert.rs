//! Alerts: a deployment's policy names what to watch over a trailing window; each evaluation
//! compares what the shell observed with the alerts already open, and raises or resolves one
//! per crossing, with its evidence (window, value, threshold) in the event.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::event::{AlertPolicySet, AlertRaised, AlertResolved, ProjectRole, RegistryEvent};
use super::state::{Registry, Stamp};
use super::{Decision, DomainError, may};

/// What an alert watches.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Dataset drift of the inputs: the share of drifted input columns, crossed at the
    /// deployment's `dataset_share` (0.5 by default).
    InputDrift,
    /// Dataset drift of the predictions, likewise.
    PredictionDrift,
    /// The 95th percentile of request latency, in milliseconds, above the policy's limit.
    LatencyP95Ms,
    /// The share of scoring requests answered with a server error (5xx), above the limit.
    ErrorRate,
    /// A classifier's accuracy against the recorded actuals, below the policy's minimum.
    Accuracy,
    /// A regressor's RMSE against the recorded actuals, above the policy's limit.
    Rmse,
}

impl Metric {
    pub const ALL: [Metric; 6] = [
        Metric::InputDrift,
        Metric::PredictionDrift,
        Metric::LatencyP95Ms,
        Metric::ErrorRate,
        Metric::Accuracy,
        Metric::Rmse,
    ];
}

/// What to watch for one deployment, over the trailing `window_minutes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertPolicy {
    pub window_minutes: u32,
    #[serde(default)]
    pub input_drift: bool,
    #[serde(default)]
    pub prediction_drift: bool,
    /// Alert while the window's p95 latency exceeds this many milliseconds.
    #[serde(default)]
    pub latency_p95_ms: Option<f64>,
    /// Alert while more than this share (above 0, below 1) of the window's scoring requests
    /// get a server error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    /// Alert while a classifier's accuracy over the window's predictions with actuals is
    /// below this share (above 0, at most 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_min: Option<f64>,
    /// Alert while a regressor's RMSE over the window's predictions with actuals exceeds this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rmse_max: Option<f64>,
    /// `http://host[:port]/path` to POST each raised and resolved alert to, as JSON.
    #[serde(default)]
    pub webhook: Option<String>,
}

impl AlertPolicy {
    pub fn watches(&self, metric: Metric) -> bool {
        match metric {
            Metric::InputDrift => self.input_drift,
            Metric::PredictionDrift => self.prediction_drift,
            Metric::LatencyP95Ms => self.latency_p95_ms.is_some(),
            Metric::ErrorRate => self.error_rate.is_some(),
            Metric::Accuracy => self.accuracy_min.is_some(),
            Metric::Rmse => self.rmse_max.is_some(),
        }
    }
}

/// The longest window a policy may watch: a day.
pub const MAX_WINDOW_MINUTES: u32 = 1440;

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Alert {
    pub alert_id: Uuid,
    pub deployment_id: Uuid,
    pub metric: Metric,
    pub raised: Evidence,
    pub raised_at: Stamp,
    /// None while open.
    pub resolved: Option<Evidence>,
    pub resolved_at: Option<Stamp>,
}

/// What an evaluation saw: the window (RFC 3339), the value and the threshold it was held to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    pub window_start: String,
    pub window_end: String,
    pub value: f64,
    pub threshold: f64,
}

/// One metric as the shell measured it over the window.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Observation {
    pub metric: Metric,
    pub value: f64,
    pub threshold: f64,
    pub crossed: bool,
}

/// Editors set a deployment's policy; it must watch something over a window of at most a
/// day, and a webhook must be a plain `http://` URL (the server speaks no TLS to it).
pub fn set_policy(
    state: &Registry,
    actor: Uuid,
    deployment_id: Uuid,
    policy: AlertPolicy,
) -> Result<Decision, DomainError> {
    let d = super::deployment::find(state, deployment_id)?;
    let project_id = d.spec.project_id;
    if !may(state, actor, project_id, ProjectRole::Editor) {
        return Err(DomainError::Forbidden(format!(
            "an alert policy needs the editor role in project {project_id}"
        )));
    }
    let invalid = |field, detail: &str| DomainError::Invalid {
        field,
        detail: detail.to_string(),
    };
    if !(1..=MAX_WINDOW_MINUTES).contains(&policy.window_minutes) {
        return Err(invalid("window_minutes", "must be 1 to 1440"));
    }
    let positive = |x: f64| x.is_finite() && x > 0.0;
    let share = |x: f64| x > 0.0 && x < 1.0;
    let share_or_one = |x: f64| x > 0.0 && x <= 1.0;
    limit(
        "latency_p95_ms",
        policy.latency_p95_ms,
        positive,
        "a positive number",
    )?;
    limit(
        "error_rate",
        policy.error_rate,
        share,
        "a share above 0 and below 1",
    )?;
    limit(
        "accuracy_min",
        policy.accuracy_min,
        share_or_one,
        "a share above 0, at most 1",
    )?;
    limit("rmse_max", policy.rmse_max, positive, "a positive number")?;
    if policy.accuracy_min.is_some() && policy.rmse_max.is_some() {
        return Err(invalid(
            "rmse_max",
            "a model is a classifier (accuracy_min) or a regressor (rmse_max), not both",
        ));
    }
    if !Metric::ALL.iter().any(|m| policy.watches(*m)) {
        return Err(invalid("policy", "watches nothing"));
    }
    if let Some(url) = &policy.webhook
        && webhook_parts(url).is_none()
    {
        return Err(invalid(
            "webhook",
            "must be http://host[:port][/path] (no TLS, no credentials)",
        ));
    }
    Ok(super::deployment::decision(
        deployment_id,
        vec![RegistryEvent::AlertPolicySet(AlertPolicySet {
            deployment_id,
            project_id,
            policy,
        })],
    ))
}

/// A policy's limit, when set, must be one `fits` accepts.
fn limit(
    field: &'static str,
    value: Option<f64>,
    fits: impl Fn(f64) -> bool,
    what: &str,
) -> Result<(), DomainError> {
    match value {
        Some(x) if !fits(x) => Err(DomainError::Invalid {
            field,
            detail: format!("must be {what}"),
        }),
        _ => Ok(()),
    }
}

/// A webhook URL's host, port and path; None unless a plain `http://` URL.
pub fn webhook_parts(url: &str) -> Option<(String, u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') || path.chars().any(char::is_whitespace) {
        return None;
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (authority, 80),
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return None;
    }
    Some((host.to_string(), port, path.to_string()))
}

/// The alerts one evaluation raises and resolves: a crossed metric without an open alert is
/// raised, an open alert whose metric is no longer crossed (or no longer watched) is resolved.
/// `new_id` names raised alerts. None when nothing changes.
pub fn evaluate(
    state: &Registry,
    deployment_id: Uuid,
    window: (&str, &str),
    observations: &[Observation],
    mut new_id: impl FnMut() -> Uuid,
) -> Result<Option<Decision>, DomainError> {
    let d = super::deployment::find(state, deployment_id)?;
    let project_id = d.spec.project_id;
    let open: BTreeMap<Metric, &Alert> = state
        .alerts
        .values()
        .filter(|a| a.deployment_id == deployment_id && a.resolved.is_none())
        .map(|a| (a.metric, a))
        .collect();
    let evidence = |o: &Observation| Evidence {
        window_start: window.0.to_string(),
        window_end: window.1.to_string(),
        value: o.value,
        threshold: o.threshold,
    };
    let mut events = Vec::new();
    for o in observations {
        match (o.crossed, open.get(&o.metric)) {
            (true, None) => events.push(RegistryEvent::AlertRaised(AlertRaised {
                alert_id: new_id(),
                deployment_id,
                project_id,
                metric: o.metric,
                evidence: evidence(o),
            })),
            (false, Some(a)) => events.push(RegistryEvent::AlertResolved(AlertResolved {
                alert_id: a.alert_id,
                deployment_id,
                project_id,
                metric: o.metric,
                evidence: evidence(o),
            })),
            _ => {}
        }
    }
    // An open alert on a metric the policy no longer watches ends too.
    let watched = |m: Metric| d.alert_policy.as_ref().is_some_and(|p| p.watches(m));
    for (metric, a) in &open {
        if !watched(*metric) && !observations.iter().any(|o| o.metric == *metric) {
            events.push(RegistryEvent::AlertResolved(AlertResolved {
                alert_id: a.alert_id,
                deployment_id,
                project_id,
                metric: *metric,
                evidence: Evidence {
                    window_start: window.0.to_string(),
                    window_end: window.1.to_string(),
                    value: a.raised.value,
                    threshold: a.raised.threshold,
                },
            }));
        }
    }
    if events.is_empty() {
        return Ok(None);
    }
    Ok(Some(super::deployment::decision(deployment_id, events)))
}

/// Folds alert events into the registry's alerts.
pub fn apply(alerts: &mut BTreeMap<Uuid, Alert>, event: &RegistryEvent, stamp: &Stamp) {
    match event {
        RegistryEvent::AlertRaised(e) => {
            alerts.insert(
                e.alert_id,
                Alert {
                    alert_id: e.alert_id,
                    deployment_id: e.deployment_id,
                    metric: e.metric,
                    raised: e.evidence.clone(),
                    raised_at: stamp.clone(),
                    resolved: None,
                    resolved_at: None,
                },
            );
        }
        RegistryEvent::AlertResolved(e) => {
            if let Some(a) = alerts.get_mut(&e.alert_id) {
                a.resolved = Some(e.evidence.clone());
                a.resolved_at = Some(stamp.clone());
            }
        }
        _ => {}
    }
}
