//! The production lifecycle over HTTP: updates in place under load, rollbacks, runtime
//! upgrades, A/B splits, a crashing challenger, promotion between environments, deletion.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use provenant::domain::routing;
use provenant::log::store::Direction;
use serde_json::{Value, json};

/// A fixture's rows and each row's probabilities, from the Python onnxruntime.
fn expected(file: &str) -> (Value, Vec<Value>, Vec<Vec<f64>>) {
    let e: Value = serde_json::from_slice(&fixture(file)).unwrap();
    let rows = e["rows"].as_array().unwrap().clone();
    let probs = e["outputs"]["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_f64().unwrap())
                .collect()
        })
        .collect();
    (e["fields"].clone(), rows, probs)
}

/// A score response's probabilities, row by row.
fn probabilities(body: &Value) -> Vec<Vec<f64>> {
    body["score"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().parse().unwrap())
                .collect()
        })
        .collect()
}

fn close(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
}

/// Registers `file` as the next version of `model` in `project`; answers the version.
async fn add_version(srv: &Server, project: &str, model: &str, file: &str) -> u32 {
    let t = &srv.admin_token;
    let spec = json!({"display_name": file, "parameters": {"target_column": "cultivar"},
        "artifacts": [{"file": file, "type": "onnx"}]});
    let (st, x) = srv
        .import(t, project, spec, vec![(file, fixture(file))])
        .await;
    assert_eq!(st, 201, "{x}");
    let (st, v) = srv
        .call(
            "POST",
            &format!("/api/v1/models/{model}/versions"),
            Some(t),
            json!({"experiment_id": x["data"]["experiment_id"]}),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    v["data"]["version"].as_u64().unwrap() as u32
}

async fn act(srv: &Server, token: &str, dep: &str, verb: &str, body: Value) -> (u16, Value) {
    srv.call(
        "POST",
        &format!("/api/v1/deployments/{dep}:{verb}"),
        Some(token),
        body,
    )
    .await
}

/// The deployment's inference runs, as stored.
fn runs(srv: &Server, dep: &str) -> Vec<Value> {
    srv.ledger
        .read_stream(
            &format!("deployment-{dep}"),
            0,
            Direction::Forward,
            usize::MAX,
        )
        .unwrap()
        .into_iter()
        .filter(|e| e.unsigned.event_type == "InferenceRunRecorded")
        .map(|e| e.unsigned.payload)
        .collect()
}

async fn get_deployment(srv: &Server, dep: &str) -> Value {
    let (st, d) = srv
        .call(
            "GET",
            &format!("/api/v1/deployments/{dep}"),
            Some(&srv.admin_token),
            Value::Null,
        )
        .await;
    assert_eq!(st, 200, "{d}");
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_update_in_place_under_load_fails_no_request_and_a_rollback_restores_the_artifact() {
    let srv = Server::start().await;
    let (pid, mid, d) = deployed_wine(&srv, "update").await;
    let dep = s(&d["data"]["deployment_id"]);
    let v1_blob = s(&d["data"]["spec"]["model_blob"]);
    let v2 = add_version(&srv, &pid, &mid, "wine_classifier_v2.onnx").await;
    let (fields, rows, v1_probs) = expected("wine_classifier.expected.json");
    let (_, _, v2_probs) = expected("wine_classifier_v2.expected.json");

    // Eight clients score without pause while the version changes under them.
    let stop = Arc::new(AtomicBool::new(false));
    let updated = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..8 {
        let (http, url, token) = (
            srv.http.clone(),
            format!("{}/{dep}/model/score", srv.base),
            srv.admin_token.clone(),
        );
        let (stop, updated, fields, rows) =
            (stop.clone(), updated.clone(), fields.clone(), rows.clone());
        clients.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                let row = rows[i % rows.len()].clone();
                let after = updated.load(Ordering::Relaxed);
                let r = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"fields": fields, "rows": [row]}))
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                seen.push((status, after, i % rows.len(), body));
                i += 1;
            }
            seen
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let t = &srv.admin_token;
    let (st, u) = act(
        &srv,
        t,
        &dep,
        "update",
        json!({"version": v2, "reason": "v2 passed validation"}),
    )
    .await;
    assert_eq!(st, 200, "{u}");
    assert_eq!(u["data"]["update"]["outcome"], "Applied", "{u}");
    let types: Vec<&str> = u["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["DeploymentUpdateStarted", "DeploymentUpdateEnded"]);
    updated.store(true, Ordering::Relaxed);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    let mut after = 0;
    for c in clients {
        for (status, sent_after, row, body) in c.await.unwrap() {
            assert_eq!(status, 200, "{body}");
            let p = &probabilities(&body)[0];
            // Before the switch either model may answer; once it is done, only version 2.
            if sent_after {
                assert!(close(p, &v2_probs[row]), "{p:?} after the update");
                after += 1;
            } else {
                assert!(close(p, &v1_probs[row]) || close(p, &v2_probs[row]));
            }
            total += 1;
        }
    }
    assert!(
        total > 50 && after > 5,
        "{total} requests, {after} after the update"
    );
    // Each run names the version that scored it, and both ran.
    let recorded = runs(&srv, &dep);
    let versions: std::collections::BTreeSet<u64> = recorded
        .iter()
        .map(|r| r["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions.into_iter().collect::<Vec<_>>(), [1, u64::from(v2)]);
    let d = get_deployment(&srv, &dep).await;
    assert_eq!(d["spec"]["version"], v2);
    let revisions = d["revisions"].as_array().unwrap();
    assert_eq!(revisions.len(), 2);

    // A runtime image version this server cannot run: the update rolls back, v2 keeps serving.
    let (st, w) = srv
        .call(
            "POST",
            "/api/v1/runtime-images/onnx-scorer/versions",
            Some(t),
            json!({"version": "0.2.0-ort9.9.9", "scorer_version": "0.2.0", "onnxruntime_version": "9.9.9"}),
        )
        .await;
    assert_eq!(st, 201, "{w}");
    let (st, u) = act(&srv, t, &dep, "upgrade", json!({"reason": "newer image"})).await;
    assert_eq!(st, 200, "{u}");
    assert_eq!(u["data"]["update"]["outcome"], "RolledBack", "{u}");
    assert!(
        s(&u["data"]["update"]["detail"]).contains("ONNX Runtime 9.9.9"),
        "{u}"
    );
    let (st, _, b) = score(&srv, &dep, json!({"fields": fields, "rows": [rows[0]]})).await;
    assert_eq!(st, 200);
    assert!(close(&probabilities(&b)[0], &v2_probs[0]));
    assert_eq!(
        get_deployment(&srv, &dep).await["spec"]["image_version"],
        "0.1.0-ort1.32.0"
    );

    // Rollback to the first configuration, by the position it took effect at.
    let first = revisions[0]["position"].as_u64().unwrap();
    let (st, r) = act(
        &srv,
        t,
        &dep,
        "rollback",
        json!({"position": first, "reason": "v2 complaints"}),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["data"]["update"]["outcome"], "Applied");
    assert_eq!(r["data"]["update"]["rollback_to"], first);
    assert_eq!(r["data"]["spec"]["model_blob"], v1_blob.as_str());
    assert_eq!(r["data"]["spec"]["version"], 1);
    let (st, h, b) = score(&srv, &dep, json!({"fields": fields, "rows": [rows[1]]})).await;
    assert_eq!(st, 200);
    assert!(close(&probabilities(&b)[0], &v1_probs[1]));
    // The run that answered names the restored artifact, and reproduces.
    let request = h["provenant-request-id"].to_str().unwrap();
    let (st, p) = srv
        .call(
            "GET",
            &format!("/api/v1/predictions/{request}"),
            Some(t),
            Value::Null,
        )
        .await;
    assert_eq!(st, 200, "{p}");
    assert_eq!(p["run"]["model_blob"], v1_blob.as_str());
    let (st, rep) = srv
        .call(
            "POST",
            &format!("/api/v1/predictions/{request}:reproduce"),
            Some(t),
            json!({}),
        )
        .await;
    assert_eq!(st, 200, "{rep}");
    assert_eq!(rep["verdict"], "identical", "{rep}");
    // And a run of version 2 from before the rollback still reproduces on its own spec.
    let old = runs(&srv, &dep)
        .into_iter()
        .find(|r| r["version"] == v2)
        .unwrap();
    let old_request = s(&old["requests"][0]["request_id"]);
    let (st, rep) = srv
        .call(
            "POST",
            &format!("/api/v1/predictions/{old_request}:reproduce"),
            Some(t),
            json!({}),
        )
        .await;
    assert_eq!(st, 200, "{rep}");
    assert_eq!(rep["verdict"], "identical", "{rep}");
    // Per-version metrics keep the three periods apart.
    let (st, m) = srv
        .call(
            "GET",
            &format!("/api/v1/deployments/{dep}/metrics"),
            Some(t),
            Value::Null,
        )
        .await;
    assert_eq!(st, 200, "{m}");
    let versions: Vec<u64> = m["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [1, u64::from(v2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ab_split_follows_its_weights_and_records_every_draw() {
    let srv = Server::start().await;
    let t = &srv.admin_token;
    let pid = srv.project(t, "ab").await;
    let (mid, _) = register(&srv, &pid, "wine_classifier.onnx", "onnx", Some("cultivar")).await;
    let v2 = add_version(&srv, &pid, &mid, "wine_classifier_v2.onnx").await;
    let body = json!({"environment": "DEV", "mode": "ab", "variants": {
        "a": {"model_id": mid, "version": 1, "weight": 3},
        "b": {"model_id": mid, "version": v2, "weight": 1},
    }});
    let (st, d) = srv.call("POST", "/api/v1/deployments", Some(t), body).await;
    assert_eq!(st, 201, "{d}");
    assert_eq!(d["data"]["state"], "Healthy", "{d}");
    let dep = s(&d["data"]["deployment_id"]);
    let (fields, rows, v1_probs) = expected("wine_classifier.expected.json");
    let (_, _, v2_probs) = expected("wine_classifier_v2.expected.json");

    const N: usize = 10_000;
    const CLIENTS: usize = 32;
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (http, url, token, fields, rows) = (
            srv.http.clone(),
            format!("{}/{dep}/model/score", srv.base),
            t.clone(),
            fields.clone(),
            rows.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for i in (c..N).step_by(CLIENTS) {
                let row = i % rows.len();
                let r = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"fields": fields, "rows": [rows[row]]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 200);
                let id = r.headers()["provenant-request-id"]
                    .to_str()
                    .unwrap()
                    .to_string();
                let body: Value = r.json().await.unwrap();
                seen.push((id, row, probabilities(&body)[0].clone()));
            }
            seen
        }));
    }
    let mut answered = std::collections::HashMap::new();
    for c in clients {
        for (id, row, p) in c.await.unwrap() {
            answered.insert(id, (row, p));
        }
    }
    assert_eq!(answered.len(), N);
    // Every request's variant is in its run's record, with the draw that chose it, and an
    // auditor recomputes the draw from the request id alone.
    let weights = [("a", 3u32), ("b", 1u32)];
    let mut per = std::collections::BTreeMap::<String, usize>::new();
    for run in runs(&srv, &dep) {
        let variant = s(&run["variant"]);
        let expect_version = if variant == "a" { 1 } else { u64::from(v2) };
        assert_eq!(run["version"], expect_version);
        for r in run["requests"].as_array().unwrap() {
            let id = s(&r["request_id"]);
            let draw = r["draw"].as_u64().unwrap();
            assert_eq!(draw, routing::draw(id.parse().unwrap(), 4));
            let chosen = routing::chosen(weights.iter().map(|w| w.1), draw).unwrap();
            assert_eq!(weights[chosen].0, variant);
            let (row, p) = &answered[&id];
            let want = if variant == "a" {
                &v1_probs[*row]
            } else {
                &v2_probs[*row]
            };
            assert!(close(p, want), "request {id} answered by {variant}");
            *per.entry(variant.clone()).or_default() += 1;
        }
    }
    // Within four standard deviations of a 75/25 split.
    let b = per.get("b").copied().unwrap_or(0) as f64;
    let sd = (N as f64 * 0.25 * 0.75).sqrt();
    assert!((b - N as f64 * 0.25).abs() < 4.0 * sd, "{per:?}");
    assert_eq!(per.values().sum::<usize>(), N);
    // Monitoring has each arm's own requests.
    let (st, m) = srv
        .call(
            "GET",
            &format!("/api/v1/deployments/{dep}/metrics"),
            Some(t),
            Value::Null,
        )
        .await;
    assert_eq!(st, 200, "{m}");
    for v in m["versions"].as_array().unwrap() {
        let served: u64 = v["windows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["requests"].as_u64().unwrap())
            .sum();
        assert_eq!(served as usize, per[&s(&v["variant"])], "{v}");
    }
    // Re-weighting is an update in place: 0/… is refused, 1:1 applies.
    let (st, e) = act(
        &srv,
        t,
        &dep,
        "update",
        json!({"reason": "even", "variants": {
        "a": {"model_id": mid, "version": 1, "weight": 0},
        "b": {"model_id": mid, "version": v2, "weight": 1}}}),
    )
    .await;
    assert_eq!(
        (st, e["code"].as_str()),
        (422, Some("invalid_field")),
        "{e}"
    );
    let (st, u) = act(
        &srv,
        t,
        &dep,
        "update",
        json!({"reason": "even", "variants": {
        "a": {"model_id": mid, "version": 1, "weight": 1},
        "b": {"model_id": mid, "version": v2, "weight": 1}}}),
    )
    .await;
    assert_eq!(st, 200, "{u}");
    assert_eq!(u["data"]["variants"]["a"]["weight"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crashing_challenger_never_fails_a_champion_request() {
    let srv = Server::start().await;
    let t = &srv.admin_token;
    let pid = srv.project(t, "shadow").await;
    let (mid, _) = register(&srv, &pid, "wine_classifier.onnx", "onnx", Some("cultivar")).await;
    // Scores one row; any run of more fails inside ONNX Runtime.
    let crash = add_version(&srv, &pid, &mid, "wine_challenger_one_row.onnx").await;
    let body = json!({"environment": "DEV", "mode": "champion_challenger", "variants": {
        "champion": {"model_id": mid, "version": 1},
        "challenger": {"model_id": mid, "version": crash, "shadow": true},
    }});
    let (st, d) = srv.call("POST", "/api/v1/deployments", Some(t), body).await;
    assert_eq!(st, 201, "{d}");
    assert_eq!(d["data"]["state"], "Healthy", "{d}");
    let dep = s(&d["data"]["deployment_id"]);
    let (fields, rows, probs) = expected("wine_classifier.expected.json");
    let settled = |want: u64| {
        let srv = &srv;
        let dep = dep.clone();
        async move {
            for _ in 0..500 {
                let live = &get_deployment(srv, &dep).await["live"]["shadows"]["challenger"];
                let done: u64 = ["scored", "failed", "dropped"]
                    .iter()
                    .map(|k| live[k].as_u64().unwrap())
                    .sum();
                if done >= want {
                    return live.clone();
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            panic!("the challenger's copies did not settle");
        }
    };
    // Five-row requests at once: the challenger fails on every copy.
    let mut many = Vec::new();
    for _ in 0..12 {
        let (http, url, token) = (
            srv.http.clone(),
            format!("{}/{dep}/model/score", srv.base),
            t.clone(),
        );
        let body = json!({"fields": fields, "rows": rows});
        many.push(tokio::spawn(async move {
            let r = http
                .post(&url)
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }));
    }
    for m in many {
        let (st, b) = m.await.unwrap();
        assert_eq!(st, 200, "{b}");
        let got = probabilities(&b);
        assert!(got.iter().zip(&probs).all(|(g, w)| close(g, w)));
    }
    let live = settled(12).await;
    assert_eq!(live["failed"], 12, "{live}");
    // One row at a time, each copy settled before the next: the challenger scores them.
    let mut singles = Vec::new();
    for i in 0..4 {
        let (st, h, b) = score(&srv, &dep, json!({"fields": fields, "rows": [rows[i]]})).await;
        assert_eq!(st, 200, "{b}");
        assert!(close(&probabilities(&b)[0], &probs[i]));
        singles.push(h["provenant-request-id"].to_str().unwrap().to_string());
        settled(13 + i as u64).await;
    }
    let live = settled(16).await;
    assert_eq!(
        (live["scored"].as_u64(), live["failed"].as_u64()),
        (Some(4), Some(12)),
        "{live}"
    );
    // The shadow runs are recorded beside the champion's, naming the same requests; a
    // request's prediction is the champion's run.
    let recorded = runs(&srv, &dep);
    let shadows: Vec<&Value> = recorded.iter().filter(|r| r["shadow"] == true).collect();
    assert_eq!(shadows.len(), 4);
    assert!(
        shadows
            .iter()
            .all(|r| r["variant"] == "challenger" && r["version"] == crash)
    );
    for (run, id) in shadows.iter().zip(&singles) {
        assert_eq!(&s(&run["requests"][0]["request_id"]), id);
        let (st, p) = srv
            .call(
                "GET",
                &format!("/api/v1/predictions/{id}"),
                Some(t),
                Value::Null,
            )
            .await;
        assert_eq!(st, 200, "{p}");
        assert_eq!(p["run"]["variant"], "champion");
    }
    let champion_runs = recorded.iter().filter(|r| r["shadow"] != true).count();
    assert!(champion_runs >= 5);
    // The deployment answered 16 requests; the challenger's four shadow runs count apart.
    let (_, m) = srv
        .call(
            "GET",
            &format!("/api/v1/deployments/{dep}/metrics"),
            Some(t),
            Value::Null,
        )
        .await;
    let sum = |windows: &Value| -> u64 {
        windows
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["requests"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(sum(&m["windows"]), 16);
    let challenger = m["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["shadow"] == true)
        .unwrap();
    assert_eq!(sum(&challenger["windows"]), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_and_every_change_follow_the_environment_rules() {
    let srv = Server::start().await;
    let t = &srv.admin_token;
    let (st, envs) = srv
        .call("GET", "/api/v1/environments", Some(t), Value::Null)
        .await;
    assert_eq!(st, 200);
    let names: Vec<&str> = envs
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["DEV", "PROD"]);
    let pid = srv.project(t, "promote").await;
    let (mid, _) = register(&srv, &pid, "wine_classifier.onnx", "onnx", Some("cultivar")).await;
    let (_, editor) = member(&srv, &pid, "ed", "editor").await;
    let (_, owner) = member(&srv, &pid, "olga", "owner").await;
    let single = |env: &str| json!({"model_id": mid, "version": 1, "environment": env});
    let before = srv.size();
    let (st, e) = srv
        .call("POST", "/api/v1/deployments", Some(&editor), single("PROD"))
        .await;
    assert_eq!((st, e["code"].as_str()), (403, Some("forbidden")), "{e}");
    let (st, e) = srv
        .call(
            "POST",
            "/api/v1/deployments",
            Some(&editor),
            single("STAGING"),
        )
        .await;
    assert_eq!(
        (st, e["code"].as_str()),
        (422, Some("invalid_field")),
        "{e}"
    );
    assert!(s(&e["detail"]).contains("DEV, PROD"));
    assert_eq!(srv.size(), before);
    let (st, d) = srv
        .call("POST", "/api/v1/deployments", Some(&editor), single("DEV"))
        .await;
    assert_eq!(st, 201, "{d}");
    let dev = s(&d["data"]["deployment_id"]);
    // Promotion: owners only into PROD, with a reason; the copy names its source.
    let before = srv.size();
    let refused = [
        (
            &editor,
            json!({"environment": "PROD", "reason": "ok"}),
            403,
            "forbidden",
        ),
        (&owner, json!({"environment": "PROD"}), 422, "invalid_field"),
        (&owner, json!({"reason": "no target"}), 422, "invalid_field"),
        (
            &owner,
            json!({"environment": "PROD", "reason": "x", "version": 2}),
            422,
            "invalid_body",
        ),
    ];
    for (token, body, status, code) in refused {
        let (st, e) = act(&srv, token, &dev, "promote", body.clone()).await;
        assert_eq!(
            (st, e["code"].as_str()),
            (status, Some(code)),
            "{body}: {e}"
        );
    }
    assert_eq!(srv.size(), before);
    let (st, p) = act(
        &srv,
        &owner,
        &dev,
        "promote",
        json!({"environment": "PROD", "reason": "passed review", "security": {"mode": "none"}}),
    )
    .await;
    assert_eq!(st, 201, "{p}");
    let prod = s(&p["data"]["deployment_id"]);
    assert_eq!(p["data"]["state"], "Healthy");
    assert_eq!(p["data"]["promoted_from"], dev.as_str());
    assert_eq!(p["data"]["spec"]["environment"], "PROD");
    assert_eq!(p["data"]["spec"]["security"]["mode"], "none");
    let source = get_deployment(&srv, &dev).await;
    for key in ["model_blob", "image_version", "runtime"] {
        assert_eq!(p["data"]["spec"][key], source["spec"][key], "{key}");
    }
    assert_eq!(p["data"]["history"][0]["reason"], "passed review");
    let (fields, rows, _) = expected("wine_classifier.expected.json");
    let (st, _, b) = score_as(&srv, &prod, None, json!({"fields": fields, "rows": rows})).await;
    assert_eq!(st, 200, "{b}");
    // In PROD the editor may not pause, stop or delete; the owner may.
    for (verb, body) in [
        ("pause", json!({"reason": "x"})),
        ("stop", json!({"reason": "x"})),
    ] {
        let (st, _) = act(&srv, &editor, &prod, verb, body).await;
        assert_eq!(st, 403, "{verb}");
    }
    let (st, _) = srv
        .call(
            "DELETE",
            &format!("/api/v1/deployments/{prod}"),
            Some(&editor),
            json!({"reason": "x"}),
        )
        .await;
    assert_eq!(st, 403);
    let (st, w) = act(
        &srv,
        &owner,
        &prod,
        "pause",
        json!({"reason": "maintenance"}),
    )
    .await;
    assert_eq!(st, 200, "{w}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_upgrades_are_listed_and_applied_to_many_deployments() {
    let srv = Server::start().await;
    let t = &srv.admin_token;
    let (pid, mid, d) = deployed_wine(&srv, "upgrades").await;
    let a = s(&d["data"]["deployment_id"]);
    let b = deploy_again(&srv, &mid, Value::Null).await;
    let (st, list) = srv
        .call("GET", "/api/v1/runtime-upgrades", Some(t), Value::Null)
        .await;
    assert_eq!((st, list.as_array().map(Vec::len)), (200, Some(0)));
    let declare = |version: &str| {
        srv.call(
            "POST",
            "/api/v1/runtime-images/onnx-scorer/versions",
            Some(t),
            json!({"version": version, "scorer_version": "0.2.0", "onnxruntime_version": "1.32.0", "intra_op_threads": 1}),
        )
    };
    assert_eq!(declare("0.2.0-ort1.32.0").await.0, 201);
    assert_eq!(declare("0.3.0-ort1.32.0").await.0, 201);
    let (st, w) = srv
        .call(
            "POST",
            "/api/v1/runtime-images/onnx-scorer/versions/0.3.0-ort1.32.0:disable",
            Some(t),
            json!({"reason": "broken build"}),
        )
        .await;
    assert_eq!(st, 200, "{w}");
    // Both deployments are offered the newest ACTIVE version; an outsider sees none.
    let (_, list) = srv
        .call("GET", "/api/v1/runtime-upgrades", Some(t), Value::Null)
        .await;
    let offered: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (s(&u["deployment_id"]), s(&u["available"])))
        .collect();
    let mut want = vec![
        (a.clone(), "0.2.0-ort1.32.0".to_string()),
        (b.clone(), "0.2.0-ort1.32.0".to_string()),
    ];
    want.sort();
    let mut offered_sorted = offered.clone();
    offered_sorted.sort();
    assert_eq!(offered_sorted, want);
    let (_, outsider) = create_user(&srv, "out", json!([])).await;
    let (_, none) = srv
        .call(
            "GET",
            "/api/v1/runtime-upgrades",
            Some(&outsider),
            Value::Null,
        )
        .await;
    assert_eq!(none.as_array().map(Vec::len), Some(0));
    // The DISABLED version cannot be chosen.
    let before = srv.size();
    let (st, e) = act(
        &srv,
        t,
        &a,
        "upgrade",
        json!({"reason": "x", "image_version": "0.3.0-ort1.32.0"}),
    )
    .await;
    assert_eq!((st, e["code"].as_str()), (409, Some("conflict")), "{e}");
    assert_eq!(srv.size(), before);
    // Many at once: each its own update; an unknown deployment is refused alone.
    let unknown = uuid::Uuid::now_v7().to_string();
    let (st, out) = srv
        .call(
            "POST",
            "/api/v1/runtime-upgrades",
            Some(t),
            json!({"deployment_ids": [a, unknown, b], "reason": "monthly image upgrade"}),
        )
        .await;
    assert_eq!(st, 200, "{out}");
    let outcomes: Vec<&str> = out
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["Applied", "refused", "Applied"]);
    assert_eq!(out[1]["error"]["code"], "deployment_not_found");
    for dep in [&a, &b] {
        assert_eq!(
            get_deployment(&srv, dep).await["spec"]["image_version"],
            "0.2.0-ort1.32.0"
        );
        let (fields, rows, _) = expected("wine_classifier.expected.json");
        let (st, _, _) = score(&srv, dep, json!({"fields": fields, "rows": rows})).await;
        assert_eq!(st, 200);
    }
    let (_, list) = srv
        .call("GET", "/api/v1/runtime-upgrades", Some(t), Value::Null)
        .await;
    assert_eq!(list.as_array().map(Vec::len), Some(0));
    let (st, e) = srv
        .call(
            "POST",
            "/api/v1/runtime-upgrades",
            Some(t),
            json!({"deployment_ids": [], "reason": "x"}),
        )
        .await;
    assert_eq!((st, e["code"].as_str()), (422, Some("invalid_field")));
    let _ = pid;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_deployment_stops_and_keeps_its_record() {
    let srv = Server::start().await;
    let t = &srv.admin_token;
    let (_, _, d) = deployed_wine(&srv, "delete").await;
    let dep = s(&d["data"]["deployment_id"]);
    let (st, _) = srv
        .call(
            "PUT",
            "/api/v1/endpoints/cellar",
            Some(t),
            json!({"deployment_id": dep, "reason": "app"}),
        )
        .await;
    assert_eq!(st, 200);
    let path = format!("/api/v1/deployments/{dep}");
    let before = srv.size();
    let (st, e) = srv
        .call("DELETE", &path, Some(t), json!({"reason": "retired"}))
        .await;
    assert_eq!((st, e["code"].as_str()), (409, Some("conflict")), "{e}");
    let (st, e) = srv.call("DELETE", &path, Some(t), json!({})).await;
    assert_eq!(st, 422, "{e}");
    assert_eq!(srv.size(), before);
    let (st, _) = srv
        .call(
            "DELETE",
            "/api/v1/endpoints/cellar",
            Some(t),
            json!({"reason": "moved"}),
        )
        .await;
    assert_eq!(st, 200);
    let (st, w) = srv
        .call("DELETE", &path, Some(t), json!({"reason": "retired"}))
        .await;
    assert_eq!(st, 200, "{w}");
    let types: Vec<&str> = w["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["DeploymentStateChanged", "DeploymentDeleted"]);
    assert_eq!(w["data"]["state"], "Stopped");
    // Out of the list and of service; its record stays.
    let (_, list) = srv
        .call("GET", "/api/v1/deployments", Some(t), Value::Null)
        .await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|x| x["deployment_id"] != dep.as_str())
    );
    assert_eq!(
        get_deployment(&srv, &dep).await["deleted"]["reason"],
        "retired"
    );
    let (st, _, _) = score(&srv, &dep, json!({"fields": [], "rows": []})).await;
    assert_eq!(st, 404);
    let before = srv.size();
    for (verb, body) in [
        ("resume", json!({"reason": "x"})),
        ("update", json!({"version": 1, "reason": "x"})),
    ] {
        let (st, e) = act(&srv, t, &dep, verb, body).await;
        assert_eq!(
            (st, e["code"].as_str()),
            (409, Some("conflict")),
            "{verb}: {e}"
        );
    }
    let (st, _) = srv
        .call("DELETE", &path, Some(t), json!({"reason": "again"}))
        .await;
    assert_eq!(st, 409);
    assert_eq!(srv.size(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lifecycle_requests_are_refused_and_append_nothing() {
    let srv = Server::start().await;
    let t = &srv.admin_token;
    let (pid, mid, d) = deployed_wine(&srv, "refusals").await;
    let dep = s(&d["data"]["deployment_id"]);
    let other = srv.project(t, "elsewhere").await;
    let (foreign, _) = register(
        &srv,
        &other,
        "wine_classifier.onnx",
        "onnx",
        Some("cultivar"),
    )
    .await;
    let (diabetes, _) = register(
        &srv,
        &pid,
        "diabetes_forest.onnx",
        "onnx",
        Some("progression"),
    )
    .await;
    let before = srv.size();
    let deploys = [
        (json!({"environment": "DEV"}), 422, "invalid_field"),
        (
            json!({"model_id": mid, "environment": "DEV"}),
            422,
            "invalid_field",
        ),
        (
            json!({"model_id": mid, "version": 1, "environment": "DEV", "variants": {}}),
            422,
            "invalid_field",
        ),
        (
            json!({"environment": "DEV", "mode": "ab", "variants": {"a": {"model_id": mid, "version": 1}}}),
            422,
            "invalid_field",
        ),
        (
            json!({"environment": "DEV", "mode": "ab", "variants": {"a": {"model_id": mid, "version": 1}, "b": {"model_id": foreign, "version": 1}}}),
            422,
            "invalid_field",
        ),
        (
            json!({"environment": "DEV", "mode": "ab", "variants": {"a": {"model_id": mid, "version": 1}, "b": {"model_id": diabetes, "version": 1}}}),
            422,
            "not_deployable",
        ),
        (
            json!({"environment": "DEV", "mode": "champion_challenger", "variants": {"champion": {"model_id": mid, "version": 1}, "c": {"model_id": mid, "version": 1, "shadow": true, "weight": 2}}}),
            422,
            "invalid_field",
        ),
        (
            json!({"environment": "DEV", "mode": "ab", "variants": {"a": {"model_id": mid, "version": 1, "colour": "red"}}}),
            422,
            "invalid_body",
        ),
        (
            json!({"model_id": mid, "version": 1, "environment": "DEV", "image_version": "9.9.9"}),
            404,
            "runtime_entity_not_found",
        ),
    ];
    for (body, status, code) in deploys {
        let (st, e) = srv
            .call("POST", "/api/v1/deployments", Some(t), body.clone())
            .await;
        assert_eq!(
            (st, e["code"].as_str()),
            (status, Some(code)),
            "{body}: {e}"
        );
    }
    let actions = [
        ("update", json!({"reason": "x"}), 422, "invalid_field"),
        (
            "update",
            json!({"version": 1, "reason": "same"}),
            409,
            "conflict",
        ),
        (
            "update",
            json!({"version": 9, "reason": "x"}),
            404,
            "version_not_found",
        ),
        ("update", json!({"version": 1}), 422, "invalid_field"),
        (
            "update",
            json!({"variant": "nope", "version": 1, "reason": "x"}),
            422,
            "invalid_field",
        ),
        (
            "update",
            json!({"version": 1, "variants": {}, "reason": "x"}),
            422,
            "invalid_field",
        ),
        (
            "update",
            json!({"environment": "PROD", "reason": "x"}),
            422,
            "invalid_body",
        ),
        ("rollback", json!({"reason": "x"}), 422, "invalid_field"),
        (
            "rollback",
            json!({"position": 0, "reason": "x"}),
            422,
            "invalid_field",
        ),
        ("upgrade", json!({"reason": "x"}), 409, "conflict"),
        (
            "upgrade",
            json!({"reason": "x", "image_version": "nope"}),
            409,
            "conflict",
        ),
        (
            "promote",
            json!({"environment": "DEV", "reason": "x"}),
            422,
            "invalid_field",
        ),
        (
            "promote",
            json!({"environment": "QA", "reason": "x"}),
            422,
            "invalid_field",
        ),
    ];
    for (verb, body, status, code) in actions {
        let (st, e) = act(&srv, t, &dep, verb, body.clone()).await;
        assert_eq!(
            (st, e["code"].as_str()),
            (status, Some(code)),
            ":{verb} {body}: {e}"
        );
    }
    assert_eq!(srv.size(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_ends_an_interrupted_update_and_serves_what_was_applied() {
    use provenant::domain::event::{DeploymentUpdateStarted, RegistryEvent};
    let srv = Server::start().await;
    let t = &srv.admin_token;
    let (pid, mid, d) = deployed_wine(&srv, "restart").await;
    let dep = s(&d["data"]["deployment_id"]);
    let v2 = add_version(&srv, &pid, &mid, "wine_classifier_v2.onnx").await;
    let (st, u) = act(
        &srv,
        t,
        &dep,
        "update",
        json!({"version": v2, "reason": "v2"}),
    )
    .await;
    assert_eq!(
        (st, u["data"]["update"]["outcome"].as_str()),
        (200, Some("Applied"))
    );
    // A rollback asked for, its loading cut short by a stop: the Started event alone.
    let first = get_deployment(&srv, &dep).await["revisions"][0].clone();
    let started = RegistryEvent::DeploymentUpdateStarted(DeploymentUpdateStarted {
        deployment_id: dep.parse().unwrap(),
        update_id: uuid::Uuid::now_v7(),
        kind: provenant::domain::deployment::UpdateKind::Rollback,
        mode: provenant::domain::deployment::Mode::Single,
        variants: serde_json::from_value(first["variants"].clone()).unwrap(),
        rollback_to: first["position"].as_u64(),
        reason: "back to v1".into(),
    });
    let new = provenant::api::command::new_event(&started, "system:test");
    srv.ledger
        .append(
            &format!("deployment-{dep}"),
            provenant::log::ExpectedVersion::Any,
            vec![new],
        )
        .await
        .unwrap();
    srv.state.registry.wait_for(srv.size()).await.unwrap();
    assert!(get_deployment(&srv, &dep).await["update"]["outcome"].is_null());
    // What `serve` does at start.
    srv.state.relaunch().await.unwrap();
    let d = get_deployment(&srv, &dep).await;
    assert_eq!(d["update"]["outcome"], "RolledBack", "{d}");
    assert_eq!(
        d["update"]["detail"],
        "the server stopped before the update was applied"
    );
    assert_eq!(
        (d["state"].as_str(), d["spec"]["version"].as_u64()),
        (Some("Healthy"), Some(u64::from(v2)))
    );
    let (fields, rows, _) = expected("wine_classifier.expected.json");
    let (_, _, v2_probs) = expected("wine_classifier_v2.expected.json");
    let (st, _, b) = score(&srv, &dep, json!({"fields": fields, "rows": [rows[0]]})).await;
    assert_eq!(st, 200);
    assert!(close(&probabilities(&b)[0], &v2_probs[0]));
}
