//! `provenant bench lifecycle`: what an A/B split and a challenger in the shadow cost the
//! scorer, beside a single deployment of the same model on the same server in the same run;
//! and how long an update in place takes while the deployment is under load, with every
//! request of that load checked to have been answered.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;

use super::score::{Load, demo, load};
use super::{Failure, Figures, percentile};
use crate::api::AppState;
use crate::api::deployments::{NewDeployment, SecurityRequest, VariantBody};
use crate::domain::deployment::{Mode, PRIMARY, VariantRequest};
use crate::domain::lifecycle::Change;

const FIXTURE: &str = include_str!("../../fixtures/models/wine_classifier.expected.json");
const V2: &[u8] = include_bytes!("../../fixtures/models/wine_classifier_v2.onnx");

/// Deploys `variants` in `mode` to DEV, open to anyone; answers the deployment's id.
async fn deploy(
    state: &AppState,
    admin: Uuid,
    mode: Mode,
    variants: BTreeMap<String, VariantBody>,
) -> Result<Uuid, Failure> {
    let request = NewDeployment {
        model_id: None,
        version: None,
        mode: Some(mode),
        variants: Some(variants),
        security: Some(SecurityRequest::None),
        ..NewDeployment::single(Uuid::nil(), 0, "DEV")
    };
    let written = state.deploy(admin, request).await.map_err(|e| e.detail)?;
    if written.data["state"] != "Healthy" {
        return Err(format!("a {mode:?} deployment did not load: {}", written.data).into());
    }
    Ok(written.data["deployment_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or("no deployment id")?)
}

fn variant(model_id: Uuid, version: u32, weight: u32, shadow: bool) -> VariantBody {
    VariantBody {
        model_id,
        version,
        runtime_id: None,
        image_version: None,
        weight: Some(weight),
        shadow,
    }
}

pub async fn lifecycle(seconds: f64, updates: usize, as_json: bool) -> Result<(), Failure> {
    let (_scratch, state, admin, model, single) = demo("lifecycle").await?;
    crate::demo::register(
        &state,
        admin,
        model,
        ("wine, stronger regularization", "wine_classifier_v2.onnx"),
        V2,
    )
    .await
    .map_err(|e| e.detail)?;
    let ab = deploy(
        &state,
        admin,
        Mode::Ab,
        BTreeMap::from([
            ("a".into(), variant(model, 1, 1, false)),
            ("b".into(), variant(model, 2, 1, false)),
        ]),
    )
    .await?;
    let champion = deploy(
        &state,
        admin,
        Mode::ChampionChallenger,
        BTreeMap::from([
            ("champion".into(), variant(model, 1, 1, false)),
            ("challenger".into(), variant(model, 2, 0, true)),
        ]),
    )
    .await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::api::serve(listener, state.clone(), async {
        let _ = stopped.await;
    }));

    let fixture: Value = serde_json::from_str(FIXTURE)?;
    let rows: Vec<Value> = serde_json::from_value(fixture["rows"].clone())?;
    let body = |n: usize| -> Result<Arc<Vec<u8>>, Failure> {
        let rows: Vec<&Value> = (0..n).map(|i| &rows[i % rows.len()]).collect();
        Ok(Arc::new(serde_json::to_vec(
            &json!({"fields": fixture["fields"], "rows": rows}),
        )?))
    };
    let (one, thousand) = (body(1)?, body(1000)?);
    let mut figures = Figures::new(
        "lifecycle",
        &format!("{seconds} s per run, wine classifier v1 and v2, runtime defaults"),
        as_json,
    );
    let mut measured: Vec<(&str, [f64; 3])> = Vec::new();
    for (mode, id) in [
        ("single", single),
        ("ab", ab),
        ("champion_challenger", champion),
    ] {
        let path = format!("/{id}/model/score");
        let mut got = [0.0; 3];
        for (i, c) in [16usize, 64].into_iter().enumerate() {
            let r = load(addr, &path, one.clone(), c, seconds).await?;
            figures.say(
                &format!("{mode}_1row_c{c}_requests_per_s"),
                r.per_sec,
                format!(
                    "{mode:>19}, 1-row requests, concurrency {c:>2}: {:>7.0} req/s  p50 {:.2} ms  p99 {:.2} ms",
                    r.per_sec, r.p50_ms, r.p99_ms
                ),
            );
            figures.say(&format!("{mode}_1row_c{c}_p99_ms"), r.p99_ms, String::new());
            got[i] = r.per_sec;
        }
        let r = load(addr, &path, thousand.clone(), 4, seconds).await?;
        got[2] = r.per_sec * 1000.0;
        figures.say(
            &format!("{mode}_1000row_rows_per_s"),
            got[2],
            format!(
                "{mode:>19}, 1000-row requests, concurrency  4: {:>7.0} rows/s  p99 {:.2} ms",
                got[2], r.p99_ms
            ),
        );
        measured.push((mode, got));
    }
    let base = measured[0].1;
    for (mode, got) in &measured[1..] {
        for (i, what) in ["1row_c16", "1row_c64", "1000row"].iter().enumerate() {
            figures.say(
                &format!("{mode}_vs_single_{what}"),
                got[i] / base[i],
                format!("{mode} / single, {what}: {:.2}x", got[i] / base[i]),
            );
        }
    }
    // Updates in place of the single deployment, v1 ⇄ v2, while 16 clients score it; `load`
    // fails on the first answer that is not 200.
    let path = format!("/{single}/model/score");
    let under = seconds * 2.0;
    let busy = {
        let one = one.clone();
        tokio::spawn(async move { load(addr, &path, one, 16, under).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut took = Vec::with_capacity(updates);
    for i in 0..updates {
        let change = Change::Variants {
            mode: Mode::Single,
            variants: BTreeMap::from([(
                PRIMARY.to_string(),
                VariantRequest {
                    model_id: model,
                    version: if i % 2 == 0 { 2 } else { 1 },
                    runtime_id: None,
                    image_version: None,
                    weight: 1,
                    shadow: false,
                },
            )]),
        };
        let started = Instant::now();
        let written = state
            .update(admin, single, change, format!("bench update {i}"))
            .await
            .map_err(|e| e.detail)?;
        if written.data["update"]["outcome"] != "Applied" {
            return Err(format!("update {i} was not applied: {}", written.data).into());
        }
        took.push(started.elapsed());
    }
    let Load { requests, .. } = busy.await??;
    took.sort();
    let (p50, max) = (percentile(&took, 0.5), percentile(&took, 1.0));
    figures.say(
        "update_in_place_p50_ms",
        p50,
        format!(
            "update in place (load, warm, record, switch) under 16 clients: p50 {p50:.2} ms  max {max:.2} ms over {updates} updates; {requests} requests in {under} s, none failed"
        ),
    );
    figures.say("update_in_place_max_ms", max, String::new());
    figures.finish();
    let _ = stop.send(());
    let _ = server.await;
    Ok(())
}
