//! Reproduction of recorded predictions over real HTTP, on models whose outputs really depend
//! on how they were run: a 100-tree forest (thread count) and a linear classifier (one row
//! per session run against many).

mod common;

use std::sync::Arc;

use common::{Server, create_user, register, s, score, score_as};
use serde_json::{Value, json};

/// `n` rows of `width` cells, deterministic, spread like standardized features times `scale`.
fn rows(n: usize, width: usize, scale: f64, seed: u64) -> Vec<Vec<String>> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            (0..width)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let u = (x >> 11) as f64 / (1u64 << 53) as f64;
                    format!("{}", ((u - 0.5) * 4.0 * scale) as f32)
                })
                .collect()
        })
        .collect()
}

/// Registers and deploys `file` in a new project: (deployment id, input field names).
async fn deploy(
    srv: &Server,
    file: &str,
    target: Option<&str>,
    retention: Value,
) -> (String, Vec<String>) {
    let t = &srv.admin_token;
    let pid = srv.project(t, file).await;
    let (mid, _) = register(srv, &pid, file, "onnx", target).await;
    let body = json!({"model_id": mid, "version": 1, "environment": "DEV", "retention": retention});
    let (st, d) = srv.call("POST", "/api/v1/deployments", Some(t), body).await;
    assert_eq!(st, 201, "{d}");
    let dep = s(&d["data"]["deployment_id"]);
    let r = srv
        .http
        .get(format!("{}/{dep}/model/sample_request", srv.base))
        .bearer_auth(t)
        .send()
        .await
        .unwrap();
    let sample: Value = r.json().await.unwrap();
    let fields = sample["fields"].as_array().unwrap().iter().map(s).collect();
    (dep, fields)
}

/// Scores `rows`; answers the request id from the receipt.
async fn scored(srv: &Server, dep: &str, fields: &[String], rows: &[Vec<String>]) -> String {
    let (st, headers, body) = score(srv, dep, json!({"fields": fields, "rows": rows})).await;
    assert_eq!(st, 200, "{body}");
    headers["provenant-request-id"]
        .to_str()
        .unwrap()
        .to_string()
}

async fn reproduce(srv: &Server, request: &str, body: Value) -> (u16, Value) {
    srv.call(
        "POST",
        &format!("/api/v1/predictions/{request}:reproduce"),
        Some(&srv.admin_token),
        body,
    )
    .await
}

fn max_diff(report: &Value) -> f64 {
    report["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["max_abs_diff"].as_f64().unwrap())
        .fold(0.0, f64::max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_runs_reproduce_bit_for_bit_and_wrong_settings_are_caught() {
    let srv = Server::start().await;
    let full = json!({"mode": "full", "days": 30});

    // The forest: 64 rows in one run, recorded with one intra-op thread.
    let (forest, fields) = deploy(&srv, "diabetes_forest.onnx", None, full.clone()).await;
    let request = scored(&srv, &forest, &fields, &rows(64, fields.len(), 0.05, 1)).await;
    let (st, r) = reproduce(&srv, &request, json!({})).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["verdict"], "identical", "{r}");
    assert_eq!(r["run_output_identical"], true);
    assert_eq!(r["recorded_output_hash"], r["reproduced_output_hash"]);
    assert_eq!(r["input"], "retained");
    assert_eq!(r["overridden"], false);
    assert_eq!(
        (r["row_count"].as_u64(), r["run_rows"].as_u64()),
        (Some(64), Some(64))
    );
    assert_eq!(r["settings"]["intra_op_threads"], 1);
    assert_eq!(r["differing_rows"], json!([]));
    assert_eq!(max_diff(&r), 0.0);
    // Two threads split the trees and sum them in another order.
    let (st, r) = reproduce(
        &srv,
        &request,
        json!({"overrides": {"intra_op_threads": 2}}),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["verdict"], "different", "{r}");
    assert_eq!(r["overridden"], true);
    assert_eq!(r["run_output_identical"], false);
    let d = max_diff(&r);
    assert!(
        d > 0.0 && d < 1e-3,
        "a summation-order difference, not a different model: {d}"
    );
    assert!(!r["differing_rows"].as_array().unwrap().is_empty());

    // The linear classifier: one run of 64 rows against 64 runs of one row.
    let (wine, fields) = deploy(&srv, "wine_classifier.onnx", Some("cultivar"), full).await;
    let request = scored(&srv, &wine, &fields, &rows(64, fields.len(), 1.0, 2)).await;
    let (_, r) = reproduce(&srv, &request, json!({})).await;
    assert_eq!(r["verdict"], "identical", "{r}");
    let (_, r) = reproduce(&srv, &request, json!({"overrides": {"rows_per_run": 1}})).await;
    assert_eq!(r["verdict"], "different", "{r}");
    assert!(max_diff(&r) > 0.0 && max_diff(&r) < 1e-5, "{r}");

    // Concurrent requests share runs; each reproduces its own rows of the shared run.
    let srv = Arc::new(srv);
    let tasks: Vec<_> = rows(32, fields.len(), 1.0, 3)
        .into_iter()
        .map(|row| {
            let (srv, wine, fields) = (srv.clone(), wine.clone(), fields.clone());
            tokio::spawn(async move { scored(&srv, &wine, &fields, &[row]).await })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    let mut shared = 0;
    for id in &ids {
        let (st, r) = reproduce(&srv, id, json!({})).await;
        assert_eq!(st, 200, "{r}");
        assert_eq!(r["verdict"], "identical", "{r}");
        assert_eq!(r["row_count"], 1);
        shared += usize::from(r["run_rows"].as_u64().unwrap() > 1);
        let (st, p) = srv
            .call(
                "GET",
                &format!("/api/v1/predictions/{id}"),
                Some(&srv.admin_token),
                Value::Null,
            )
            .await;
        assert_eq!(st, 200, "{p}");
        assert_eq!(p["run_position"], r["run_position"]);
        assert_eq!(p["request"]["row_offset"], r["row_offset"]);
        assert_eq!(p["run"]["input_blob"].as_str().map(str::len), Some(64));
    }
    assert!(
        shared > 0,
        "concurrent requests were coalesced into shared runs"
    );

    // The forest's whole history, then a range that starts after its only run, over HTTP.
    let path = format!("/api/v1/deployments/{forest}:reproduce");
    let range = |body: Value| srv.call("POST", &path, Some(&srv.admin_token), body);
    let (st, r) = range(json!({})).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(
        (r["runs"].clone(), r["identical"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(r["exceptions"], json!([]));
    let (_, r) = range(json!({"from": srv.size().to_string()})).await;
    assert_eq!(r["runs"], 0);
    let (st, r) = range(json!({"from": "yesterday"})).await;
    assert_eq!((st, r["code"].clone()), (400, json!("invalid_body")));
    let (_, outsider) = create_user(&srv, "range-outsider", json!([])).await;
    let (st, _) = srv.call("POST", &path, Some(&outsider), json!({})).await;
    assert_eq!(st, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashes_only_runs_take_a_resubmitted_input_only_if_it_is_the_recorded_one() {
    let srv = Server::start().await;
    let (dep, fields) = deploy(
        &srv,
        "wine_classifier.onnx",
        Some("cultivar"),
        json!({"mode": "hashes"}),
    )
    .await;
    let table = rows(3, fields.len(), 1.0, 4);
    let request = scored(&srv, &dep, &fields, &table).await;
    let (_, outsider) = create_user(&srv, "out", json!([])).await;
    let before = srv.size();

    let (st, r) = reproduce(&srv, &request, json!({})).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(
        (r["verdict"].as_str(), r["reason"].as_str()),
        (Some("not_reproducible"), Some("input_not_retained")),
        "{r}"
    );

    let mut wrong = table.clone();
    wrong[1][0] = "0.5".into();
    let (st, r) = reproduce(
        &srv,
        &request,
        json!({"input": {"fields": fields, "rows": wrong}}),
    )
    .await;
    assert_eq!(
        (st, r["code"].as_str()),
        (422, Some("input_hash_mismatch")),
        "{r}"
    );

    let (st, r) = reproduce(
        &srv,
        &request,
        json!({"input": {"fields": fields, "rows": table}}),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["verdict"], "identical", "{r}");
    assert_eq!(r["input"], "resubmitted");
    assert_eq!(
        r["columns"],
        Value::Null,
        "outputs were not kept: only hashes compare"
    );

    // Bad requests: unknown request, unknown verb, bad override, not a reader.
    let (st, r) = reproduce(&srv, &uuid::Uuid::nil().to_string(), json!({})).await;
    assert_eq!(
        (st, r["code"].as_str()),
        (404, Some("prediction_not_found"))
    );
    let (st, r) = srv
        .call(
            "POST",
            &format!("/api/v1/predictions/{request}:replay"),
            Some(&srv.admin_token),
            json!({}),
        )
        .await;
    assert_eq!((st, r["code"].as_str()), (400, Some("invalid_action")));
    let (st, r) = reproduce(
        &srv,
        &request,
        json!({"overrides": {"execution_mode": "fast"}}),
    )
    .await;
    assert_eq!((st, r["code"].as_str()), (422, Some("bad_override")), "{r}");
    let (st, r) = reproduce(&srv, &request, json!({"overrides": {"threads": 2}})).await;
    assert_eq!(
        (st, r["code"].as_str()),
        (422, Some("invalid_body")),
        "unknown override keys: {r}"
    );
    let (st, _, _) = score_as(
        &srv,
        &dep,
        Some(&outsider),
        json!({"fields": fields, "rows": table}),
    )
    .await;
    assert_eq!(st, 403, "the deployment takes project members' tokens only");
    let (st, r) = srv
        .call(
            "POST",
            &format!("/api/v1/predictions/{request}:reproduce"),
            Some(&outsider),
            json!({}),
        )
        .await;
    assert_eq!((st, r["code"].as_str()), (403, Some("forbidden")), "{r}");
    assert_eq!(srv.size(), before, "reproduction appends nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_version_report_shows_history_volume_checks_and_verification() {
    let srv = Server::start().await;
    let admin = *srv.state.registry.read().usernames.get("root").unwrap();
    let (model, deployment) = provenant::demo::seed(&srv.state, admin).await.unwrap();
    let t = &srv.admin_token;
    let (_, sample) = srv
        .call(
            "GET",
            &format!("/{deployment}/model/sample_request"),
            Some(t),
            Value::Null,
        )
        .await;
    for _ in 0..3 {
        let (st, _, _) = score(&srv, &deployment.to_string(), sample.clone()).await;
        assert_eq!(st, 200);
    }
    let v = format!("/api/v1/models/{model}/versions/1");
    let (st, _) = srv
        .call(
            "PUT",
            &format!("{v}/stage"),
            Some(t),
            json!({"stage": "Staging", "annotation": "validated on holdout"}),
        )
        .await;
    assert_eq!(st, 200);
    let (st, _) = srv
        .call(
            "POST",
            &format!("{v}/comments"),
            Some(t),
            json!({"text": "<script>alert(1)</script> reviewed"}),
        )
        .await;
    assert_eq!(st, 201);

    let r = srv
        .http
        .get(format!("{}{v}/report", srv.base))
        .bearer_auth(t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = r.text().await.unwrap();
    for want in [
        "wine-classifier v1",
        "validated on holdout",
        "&lt;script&gt;alert(1)&lt;/script&gt; reviewed",
        "onnx-runtime on onnx-scorer",
        "3 inference runs, 3 requests, 3 rows",
        "<svg",
        "class=\"ok\">identical",
        "Intact: root",
        "— provenant/",
    ] {
        assert!(html.contains(want), "the report lacks {want:?}");
    }
    assert!(!html.contains("<script>"), "user text is escaped");
    assert_eq!(
        html.matches("class=\"ok\">identical").count(),
        3,
        "every run spot-checked"
    );
    let (st, r) = srv
        .call(
            "GET",
            &format!("/api/v1/models/{model}/versions/9/report"),
            Some(t),
            Value::Null,
        )
        .await;
    assert_eq!((st, r["code"].as_str()), (404, Some("not_found")), "{r}");
}
