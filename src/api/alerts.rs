//! Alerts over HTTP, the evaluator that raises and resolves them as `system:monitor`, and
//! their delivery to a policy's webhook. Delivery runs apart from scoring and from the
//! evaluation: a webhook that is down delays nothing and is retried, then logged.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use chrono::Utc;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use super::AppState;
use super::accuracy::{Task, task};
use super::auth::{Principal, forbidden};
use super::command::Written;
use super::deployments::{not_found, readable};
use super::drift::{DriftQuery, compute};
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath};
use crate::domain::alert::{self, Alert, AlertPolicy, Metric, Observation, webhook_parts};
use crate::domain::deployment::{DeploymentSpec, DeploymentState};
use crate::domain::event::ProjectRole;
use crate::domain::{DomainError, may};
use crate::log::envelope::format_time;
use crate::projections::monitoring::Resolution;

/// Who evaluates alerts.
pub const MONITOR: &str = "system:monitor";
/// Webhook attempts per alert, the first included, and the wait before the second.
const ATTEMPTS: u32 = 4;
const FIRST_RETRY: Duration = Duration::from_millis(250);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// What one evaluation measured and what it appended.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Evaluation {
    pub window_start: String,
    pub window_end: String,
    pub observations: Vec<Observation>,
    /// The raised and resolved alerts' events; empty when nothing changed.
    pub written: Option<Written>,
}

impl AppState {
    /// Measures what the deployment's policy watches over its trailing window and raises or
    /// resolves alerts accordingly; raised and resolved alerts go to the webhook.
    pub async fn evaluate_alerts(&self, id: Uuid) -> Result<Evaluation, ApiError> {
        self.caught_up().await?;
        let policy = {
            let reg = self.registry.read();
            let d = reg.deployments.get(&id).ok_or_else(|| not_found(id))?;
            d.alert_policy.clone().ok_or_else(|| {
                ApiError::from(DomainError::Conflict(format!(
                    "deployment {id} has no alert policy"
                )))
            })?
        };
        let to = Utc::now();
        let from = to - chrono::Duration::minutes(i64::from(policy.window_minutes));
        let window = (format_time(from), format_time(to));
        let range = (Some(from.timestamp()), Some(to.timestamp()));
        let observations = self.observe(id, &policy, range, &window).await?;
        let decide =
            |r: &_| alert::evaluate(r, id, (&window.0, &window.1), &observations, Uuid::now_v7);
        let changes = decide(&self.registry.read())?;
        let written = match changes {
            None => None,
            Some(_) => Some(
                self.run_as(
                    MONITOR,
                    |r| {
                        decide(r)?.ok_or_else(|| {
                            DomainError::Conflict("the alerts changed meanwhile".into())
                        })
                    },
                    |_| None::<()>,
                )
                .await?,
            ),
        };
        if let (Some(w), Some(url)) = (&written, &policy.webhook) {
            for e in &w.events {
                let body = self.ledger.event(e.position)?.map(|event| {
                    let mut v = event.unsigned.payload.clone();
                    v["event_type"] = json!(event.unsigned.event_type);
                    v["position"] = json!(event.unsigned.position);
                    v
                });
                if let Some(body) = body {
                    tokio::spawn(deliver(url.clone(), body));
                }
            }
        }
        Ok(Evaluation {
            window_start: window.0,
            window_end: window.1,
            observations,
            written,
        })
    }

    /// The watched metrics over the window; a drift metric without reference data, a
    /// latency or error rate without requests, or an accuracy without actuals, is not
    /// observed (and an open alert on it stays open).
    async fn observe(
        &self,
        id: Uuid,
        policy: &AlertPolicy,
        range: (Option<i64>, Option<i64>),
        window: &(String, String),
    ) -> Result<Vec<Observation>, ApiError> {
        let mut out = Vec::new();
        if policy.input_drift || policy.prediction_drift {
            let q = DriftQuery {
                from: Some(window.0.clone()),
                to: Some(window.1.clone()),
            };
            match compute(self, id, range, q).await {
                Ok(r) => {
                    // Inputs not kept are judged by their bins' PSI when nothing else is.
                    let binned = r.inputs.columns.is_empty() && !r.binned.columns.is_empty();
                    let inputs = match binned {
                        true => (r.binned.drift_share, r.binned.dataset_drift),
                        false => (r.inputs.drift_share, r.inputs.dataset_drift),
                    };
                    let judged = [
                        (
                            Metric::InputDrift,
                            inputs,
                            binned || !r.inputs.columns.is_empty(),
                        ),
                        (
                            Metric::PredictionDrift,
                            (r.predictions.drift_share, r.predictions.dataset_drift),
                            !r.predictions.columns.is_empty(),
                        ),
                    ];
                    for (metric, (value, crossed), seen) in judged {
                        if policy.watches(metric) && seen {
                            out.push(Observation {
                                metric,
                                value,
                                threshold: r.thresholds.dataset_share,
                                crossed,
                            });
                        }
                    }
                }
                Err(e) if e.code == "reference_not_found" => {}
                Err(e) => return Err(e),
            }
        }
        let (Some(from), Some(to)) = range else {
            return Ok(out);
        };
        let w = self.registry.monitoring().summary(id, from, to);
        if let Some(limit) = policy.latency_p95_ms
            && let Some(p95) = w.latency_us.quantile(0.95).filter(|_| w.requests > 0)
        {
            let ms = p95 as f64 / 1e3;
            out.push(Observation {
                metric: Metric::LatencyP95Ms,
                value: ms,
                threshold: limit,
                crossed: ms > limit,
            });
        }
        if let Some(limit) = policy.error_rate {
            // Answered requests are the projection's; refused ones are counted live.
            let refused = self.errors.between(id, from, to);
            let requests = w.requests + refused.all;
            if requests > 0 {
                let rate = refused.server as f64 / requests as f64;
                out.push(Observation {
                    metric: Metric::ErrorRate,
                    value: rate,
                    threshold: limit,
                    crossed: rate > limit,
                });
            }
        }
        if policy.accuracy_min.is_some() || policy.rmse_max.is_some() {
            let r = super::accuracy::compute(self, id, range, Resolution::Day).await?;
            let judged = [
                (Metric::Accuracy, policy.accuracy_min, r.total.accuracy),
                (Metric::Rmse, policy.rmse_max, r.total.rmse),
            ];
            for (metric, limit, value) in judged {
                if let (Some(threshold), Some(value)) = (limit, value) {
                    out.push(Observation {
                        metric,
                        value,
                        threshold,
                        crossed: match metric {
                            Metric::Accuracy => value < threshold,
                            _ => value > threshold,
                        },
                    });
                }
            }
        }
        Ok(out)
    }

    /// Evaluates every deployment with a policy that is not stopped, every `interval`, for
    /// as long as the process runs; a failed evaluation is logged and tried next time.
    pub fn spawn_alert_evaluator(&self, interval: Duration) {
        let state = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let ids: Vec<Uuid> = state
                    .registry
                    .read()
                    .deployments
                    .values()
                    .filter(|d| d.alert_policy.is_some() && d.state != DeploymentState::Stopped)
                    .map(|d| d.deployment_id)
                    .collect();
                for id in ids {
                    if let Err(e) = state.evaluate_alerts(id).await {
                        eprintln!("alerts of deployment {id}: {}: {}", e.code, e.detail);
                    }
                }
            }
        });
    }
}

/// POSTs an alert to a webhook, retrying with doubling waits; gives up after `ATTEMPTS`.
async fn deliver(url: String, body: Value) {
    let mut wait = FIRST_RETRY;
    for attempt in 1..=ATTEMPTS {
        match tokio::time::timeout(ATTEMPT_TIMEOUT, post(&url, &body)).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) if attempt == ATTEMPTS => {
                eprintln!("webhook {url}: gave up after {ATTEMPTS} attempts: {e}")
            }
            Err(_) if attempt == ATTEMPTS => {
                eprintln!("webhook {url}: gave up after {ATTEMPTS} attempts: timed out")
            }
            _ => {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
    }
}

/// One HTTP/1.1 POST of `body` as JSON; Ok on a 2xx answer.
async fn post(url: &str, body: &Value) -> Result<(), String> {
    let (host, port, path) = webhook_parts(url).ok_or("not an http:// URL")?;
    let mut stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| e.to_string())?;
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: provenant\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    stream
        .read_exact(&mut head)
        .await
        .map_err(|e| e.to_string())?;
    // "HTTP/1.1 200"
    match head.get(9) {
        Some(b'2') => Ok(()),
        _ => Err(format!(
            "answered {:?}",
            String::from_utf8_lossy(&head[9..]).trim()
        )),
    }
}

/// `PUT /api/v1/deployments/{deployment_id}/alert-policy`: what to alert on (editors).
#[utoipa::path(put, path = "/api/v1/deployments/{deployment_id}/alert-policy", tag = "deployments", request_body = AlertPolicy, responses((status = 200, body = Written), (status = 403, description = "not an editor of the deployment's project"), (status = 404, description = "`deployment_not_found`"), (status = 422, description = "`invalid_field`, `invalid_body`")))]
pub async fn put_policy(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(policy): ApiJson<AlertPolicy>,
) -> Result<Json<Written>, ApiError> {
    // The decider's refusals come first; then what it cannot see: the model's outputs.
    let spec = {
        let reg = s.registry.read();
        alert::set_policy(&reg, p.user_id, id, policy.clone())?;
        reg.deployments.get(&id).map(|d| d.spec.clone())
    };
    if let Some(spec) = spec.filter(|_| policy.accuracy_min.is_some() || policy.rmse_max.is_some())
    {
        fits_outputs(&s, &policy, spec).await?;
    }
    let written = s
        .run(
            p.user_id,
            |r| alert::set_policy(r, p.user_id, id, policy),
            |r| r.deployments.get(&id).and_then(|d| d.alert_policy.clone()),
        )
        .await?;
    Ok(Json(written))
}

/// An accuracy threshold must be the model's kind: `accuracy_min` a classifier's (one
/// probability output per class of the target), `rmse_max` a regressor's (one output).
async fn fits_outputs(
    s: &AppState,
    policy: &AlertPolicy,
    spec: DeploymentSpec,
) -> Result<(), ApiError> {
    let state = s.clone();
    let target = spec.target_column.clone();
    let fields = tokio::task::spawn_blocking(move || {
        state
            .serving
            .model_of(state.onnx, &state.blobs, &spec)
            .map(|m| {
                m.output_schema()
                    .into_iter()
                    .map(|c| c.name)
                    .collect::<Vec<_>>()
            })
    })
    .await
    .map_err(|e| super::jobs::internal("internal", e))?
    .map_err(|e| super::jobs::internal("model_unavailable", e))?;
    let kind = match task(&fields, target.as_deref()) {
        Some(Task::Classification(..)) => Some("classifier"),
        Some(Task::Regression(_)) => Some("regressor"),
        None => None,
    };
    let (field, needs) = match policy.accuracy_min {
        Some(_) => ("accuracy_min", "classifier"),
        None => ("rmse_max", "regressor"),
    };
    let detail = match kind {
        Some(k) if k == needs => return Ok(()),
        Some(k) => format!("needs a {needs}; the deployment's model is a {k} (outputs {fields:?})"),
        None => format!(
            "needs a {needs}; the deployment's outputs {fields:?} are neither one probability per class of the target nor one value"
        ),
    };
    Err(ApiError::from(DomainError::Invalid { field, detail }))
}

/// `GET /api/v1/deployments/{deployment_id}/alerts`: its alerts, open and resolved, oldest
/// first, each with its evidence.
#[utoipa::path(get, path = "/api/v1/deployments/{deployment_id}/alerts", tag = "deployments", responses((status = 200, body = Vec<Alert>), (status = 403, description = "not a reader of the deployment's project"), (status = 404, description = "`deployment_not_found`")))]
pub async fn list(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Vec<Alert>>, ApiError> {
    let reg = s.registry.read();
    readable(&reg, &p, id, "reading the alerts of deployment")?;
    let mut alerts: Vec<Alert> = reg
        .alerts
        .values()
        .filter(|a| a.deployment_id == id)
        .cloned()
        .collect();
    alerts.sort_by_key(|a| a.raised_at.position);
    Ok(Json(alerts))
}

/// `POST /api/v1/deployments/{deployment_id}/alerts:evaluate`: evaluates the policy now, as
/// the server does every minute (editors).
#[utoipa::path(post, path = "/api/v1/deployments/{deployment_id}/alerts:evaluate", tag = "deployments", responses((status = 200, body = Evaluation), (status = 403, description = "not an editor of the deployment's project"), (status = 404, description = "`deployment_not_found`"), (status = 409, description = "`conflict`: no alert policy")))]
pub async fn evaluate(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Evaluation>, ApiError> {
    {
        let reg = s.registry.read();
        let d = reg.deployments.get(&id).ok_or_else(|| not_found(id))?;
        if !may(&reg, p.user_id, d.spec.project_id, ProjectRole::Editor) {
            return Err(forbidden(format!(
                "evaluating deployment {id}'s alerts needs the editor role in its project"
            )));
        }
    }
    s.evaluate_alerts(id).await.map(Json)
}
