//! Alerts over HTTP: a policy per deployment, evaluations that raise and resolve alerts with
//! their evidence, and delivery to a webhook that fails at first.

mod common;

use std::time::Duration;

use common::{
    Server, calm_wine, csv, deploy_again, deployed_wine, member, put_reference, s, score,
    score_rows, wine,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// A webhook receiver on loopback: answers 500 to the first request and 200 after, sending
/// each accepted body on.
async fn webhook() -> (String, mpsc::UnboundedReceiver<Value>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/provenant", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // `Connection: close` from the sender: read until it stops writing a full body.
            loop {
                let n = conn.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if body.len() >= length {
                        if first {
                            first = false;
                            conn.write_all(
                                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
                            )
                            .await
                            .unwrap();
                        } else {
                            conn.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                                .await
                                .unwrap();
                            tx.send(serde_json::from_str(body).unwrap()).unwrap();
                        }
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
        }
    });
    (url, rx)
}

async fn evaluate(srv: &Server, token: &str, dep: &str) -> (u16, Value) {
    srv.call(
        "POST",
        &format!("/api/v1/deployments/{dep}/alerts:evaluate"),
        Some(token),
        Value::Null,
    )
    .await
}

async fn alerts(srv: &Server, dep: &str) -> Vec<Value> {
    let (st, a) = srv
        .call(
            "GET",
            &format!("/api/v1/deployments/{dep}/alerts"),
            Some(&srv.admin_token),
            Value::Null,
        )
        .await;
    assert_eq!(st, 200, "{a}");
    a.as_array().unwrap().clone()
}

async fn set_policy(srv: &Server, token: &str, dep: &str, policy: Value) -> (u16, Value) {
    srv.call(
        "PUT",
        &format!("/api/v1/deployments/{dep}/alert-policy"),
        Some(token),
        policy,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shifted_distribution_raises_drift_alerts_and_an_unshifted_one_does_not() {
    let srv = Server::start().await;
    let t = srv.admin_token.clone();
    let (_, model, d) = deployed_wine(&srv, "alerts").await;
    let shifted_dep = s(&d["data"]["deployment_id"]);
    let calm_dep = deploy_again(&srv, &model, Value::Null).await;
    let (fields, reference) = wine(0, 600, &[]);
    let (st, _) = put_reference(
        &srv,
        &t,
        &model,
        "",
        Some("text/csv"),
        csv(&fields, &reference),
    )
    .await;
    assert_eq!(st, 200);

    let (url, mut delivered) = webhook().await;
    let watch = json!({"window_minutes": 60, "input_drift": true, "prediction_drift": true});
    let mut hooked = watch.clone();
    hooked["webhook"] = json!(url);
    let (st, p) = set_policy(&srv, &t, &shifted_dep, hooked).await;
    assert_eq!(st, 200, "{p}");
    assert_eq!(p["events"][0]["event_type"], "AlertPolicySet");
    assert_eq!(set_policy(&srv, &t, &calm_dep, watch).await.0, 200);

    let (_, shifted) = wine(600, 1200, &[1.4; 10]);
    score_rows(&srv, &shifted_dep, &fields, &shifted).await;
    score_rows(&srv, &calm_dep, &fields, &calm_wine()).await;

    // The shifted deployment: both watched metrics crossed, one alert each, with evidence.
    let (st, e) = evaluate(&srv, &t, &shifted_dep).await;
    assert_eq!(st, 200, "{e}");
    let observed = e["observations"].as_array().unwrap();
    assert_eq!(observed.len(), 2, "{e}");
    assert!(observed.iter().all(|o| o["crossed"] == true), "{e}");
    let events = e["written"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{e}");
    assert!(events.iter().all(|w| w["event_type"] == "AlertRaised"));
    let raised = alerts(&srv, &shifted_dep).await;
    assert_eq!(raised.len(), 2);
    let input = raised
        .iter()
        .find(|a| a["metric"] == "input_drift")
        .unwrap();
    assert_eq!(input["raised"]["threshold"], 0.5);
    let share = input["raised"]["value"].as_f64().unwrap();
    assert!((share - 10.0 / 13.0).abs() < 1e-12, "{input}");
    assert_eq!(input["raised"]["window_start"], e["window_start"]);
    assert_eq!(input["raised_at"]["actor"], "system:monitor");
    assert!(input["resolved"].is_null());

    // Evaluated again: still crossed, already open, nothing new.
    let (st, again) = evaluate(&srv, &t, &shifted_dep).await;
    assert_eq!((st, &again["written"]), (200, &Value::Null), "{again}");
    assert_eq!(alerts(&srv, &shifted_dep).await.len(), 2);

    // The unshifted deployment: observed, not crossed, no alert.
    let (st, calm) = evaluate(&srv, &t, &calm_dep).await;
    assert_eq!(st, 200, "{calm}");
    let observed = calm["observations"].as_array().unwrap();
    assert_eq!(observed.len(), 2, "{calm}");
    assert!(observed.iter().all(|o| o["crossed"] == false), "{calm}");
    assert!(calm["written"].is_null());
    assert!(alerts(&srv, &calm_dep).await.is_empty());

    // A hash-only deployment of the same rows: its inputs are judged by their bins' PSI.
    let blind_dep = deploy_again(&srv, &model, json!({"mode": "hashes"})).await;
    let inputs_only = json!({"window_minutes": 60, "input_drift": true});
    assert_eq!(set_policy(&srv, &t, &blind_dep, inputs_only).await.0, 200);
    score_rows(&srv, &blind_dep, &fields, &shifted).await;
    let (st, blind) = evaluate(&srv, &t, &blind_dep).await;
    assert_eq!(st, 200, "{blind}");
    let observed = blind["observations"].as_array().unwrap();
    assert_eq!(observed.len(), 1, "{blind}");
    assert_eq!(
        (&observed[0]["metric"], &observed[0]["crossed"]),
        (&json!("input_drift"), &json!(true)),
        "{blind}"
    );
    let share = observed[0]["value"].as_f64().unwrap();
    assert!((share - 10.0 / 13.0).abs() < 1e-12, "{blind}");
    assert_eq!(blind["written"]["events"][0]["event_type"], "AlertRaised");

    // The webhook failed the first delivery; the retry brings both alerts.
    let mut bodies = Vec::new();
    while bodies.len() < 2 {
        let b = tokio::time::timeout(Duration::from_secs(20), delivered.recv())
            .await
            .expect("webhook deliveries")
            .unwrap();
        bodies.push(b);
    }
    let mut metrics: Vec<String> = bodies.iter().map(|b| s(&b["metric"])).collect();
    metrics.sort();
    assert_eq!(metrics, ["input_drift", "prediction_drift"]);
    assert!(
        bodies
            .iter()
            .all(|b| b["event_type"] == "AlertRaised" && b["position"].is_u64())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_alerts_resolve_and_bad_policies_append_nothing() {
    let srv = Server::start().await;
    let t = srv.admin_token.clone();
    let (pid, _, d) = deployed_wine(&srv, "latency").await;
    let dep = s(&d["data"]["deployment_id"]);
    let (_, viewer_t) = member(&srv, &pid, "val", "viewer").await;

    let before = srv.size();
    let (st, e) = evaluate(&srv, &t, &dep).await;
    assert_eq!((st, s(&e["code"]).as_str()), (409, "conflict"), "{e}");
    for (token, policy, status, code) in [
        (
            &t,
            json!({"window_minutes": 0, "input_drift": true}),
            422,
            "invalid_field",
        ),
        (
            &t,
            json!({"window_minutes": 1441, "input_drift": true}),
            422,
            "invalid_field",
        ),
        (&t, json!({"window_minutes": 5}), 422, "invalid_field"),
        (
            &t,
            json!({"window_minutes": 5, "latency_p95_ms": -1.0}),
            422,
            "invalid_field",
        ),
        (
            &t,
            json!({"window_minutes": 5, "input_drift": true, "webhook": "https://example.org/x"}),
            422,
            "invalid_field",
        ),
        (
            &t,
            json!({"window_minutes": 5, "input_drift": true, "webhook": "http://u:p@host/x"}),
            422,
            "invalid_field",
        ),
        (
            &t,
            json!({"window_minutes": 5, "drift": true}),
            422,
            "invalid_body",
        ),
        (
            &viewer_t,
            json!({"window_minutes": 5, "input_drift": true}),
            403,
            "forbidden",
        ),
    ] {
        let (st, e) = set_policy(&srv, token, &dep, policy.clone()).await;
        assert_eq!(
            (st, s(&e["code"]).as_str()),
            (status, code),
            "{policy}: {e}"
        );
        assert!(!s(&e["detail"]).is_empty());
    }
    let nobody = uuid::Uuid::now_v7().to_string();
    let (st, e) = set_policy(
        &srv,
        &t,
        &nobody,
        json!({"window_minutes": 5, "input_drift": true}),
    )
    .await;
    assert_eq!(
        (st, s(&e["code"]).as_str()),
        (404, "deployment_not_found"),
        "{e}"
    );
    let (st, e) = evaluate(&srv, &viewer_t, &dep).await;
    assert_eq!((st, s(&e["code"]).as_str()), (403, "forbidden"), "{e}");
    assert_eq!(srv.size(), before, "a refused policy appended");

    // Any real request is slower than a microsecond: raised.
    let (st, _) = set_policy(
        &srv,
        &t,
        &dep,
        json!({"window_minutes": 5, "latency_p95_ms": 0.001}),
    )
    .await;
    assert_eq!(st, 200);
    let (fields, rows) = wine(0, 20, &[]);
    for r in rows.chunks(5) {
        let (st, _, b) = score(&srv, &dep, json!({"fields": fields, "rows": r})).await;
        assert_eq!(st, 200, "{b}");
    }
    let (st, e) = evaluate(&srv, &t, &dep).await;
    assert_eq!(st, 200, "{e}");
    assert_eq!(e["observations"][0]["metric"], "latency_p95_ms");
    assert_eq!(e["written"]["events"][0]["event_type"], "AlertRaised");
    // A limit of a thousand seconds: resolved, with the evidence that resolved it.
    let (st, _) = set_policy(
        &srv,
        &t,
        &dep,
        json!({"window_minutes": 5, "latency_p95_ms": 1e6}),
    )
    .await;
    assert_eq!(st, 200);
    let (st, e) = evaluate(&srv, &t, &dep).await;
    assert_eq!(st, 200, "{e}");
    assert_eq!(e["written"]["events"][0]["event_type"], "AlertResolved");
    let all = alerts(&srv, &dep).await;
    assert_eq!(all.len(), 1);
    let resolved = &all[0]["resolved"];
    assert_eq!(resolved["threshold"], 1e6);
    assert!(resolved["value"].as_f64().unwrap() < 1e6);
    assert_eq!(all[0]["raised"]["threshold"], 0.001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_rate_and_accuracy_alerts_raise_and_resolve() {
    let srv = Server::start().await;
    let t = srv.admin_token.clone();
    let (_, _, d) = deployed_wine(&srv, "errors").await;
    let dep = s(&d["data"]["deployment_id"]);

    // Limits out of range, and a regressor's limit on a classifier: refused, nothing appended.
    let before = srv.size();
    for (policy, field) in [
        (
            json!({"window_minutes": 5, "error_rate": 1.0}),
            "error_rate",
        ),
        (
            json!({"window_minutes": 5, "error_rate": 0.0}),
            "error_rate",
        ),
        (
            json!({"window_minutes": 5, "accuracy_min": 1.5}),
            "accuracy_min",
        ),
        (json!({"window_minutes": 5, "rmse_max": 0.0}), "rmse_max"),
        (
            json!({"window_minutes": 5, "accuracy_min": 0.9, "rmse_max": 1.0}),
            "rmse_max",
        ),
        (json!({"window_minutes": 5, "rmse_max": 1.0}), "rmse_max"),
    ] {
        let (st, e) = set_policy(&srv, &t, &dep, policy.clone()).await;
        assert_eq!(
            (st, s(&e["code"]).as_str()),
            (422, "invalid_field"),
            "{policy}: {e}"
        );
        assert!(s(&e["detail"]).starts_with(field), "{policy}: {e}");
    }
    assert_eq!(srv.size(), before, "a refused policy appended");
    let (st, w) = set_policy(
        &srv,
        &t,
        &dep,
        json!({"window_minutes": 5, "error_rate": 0.2, "accuracy_min": 0.9}),
    )
    .await;
    assert_eq!(st, 200, "{w}");

    // Nothing scored yet: neither metric is observed, nothing is raised.
    let (st, e) = evaluate(&srv, &t, &dep).await;
    assert_eq!(st, 200, "{e}");
    assert_eq!(e["observations"], json!([]), "{e}");

    // Four answered, two refused as bad (the caller's), two refused while paused (the
    // server's): two server errors in eight requests.
    let (fields, rows) = wine(0, 4, &[]);
    let mut answered = Vec::new();
    for r in &rows {
        let (st, headers, b) = score(&srv, &dep, json!({"fields": fields, "rows": [r]})).await;
        assert_eq!(st, 200, "{b}");
        let id = headers["provenant-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        let p: Vec<f64> = b["score"][0]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().parse().unwrap())
            .collect();
        let predicted = (0..3).fold(0, |m, i| if p[i] > p[m] { i } else { m });
        answered.push((id, predicted));
    }
    for _ in 0..2 {
        let (st, _, _) = score(&srv, &dep, json!({"fields": ["nope"], "rows": [["1"]]})).await;
        assert_eq!(st, 400);
    }
    let pause = |action: &'static str| {
        let (srv, t, dep) = (&srv, &t, &dep);
        async move {
            let (st, b) = srv
                .call(
                    "POST",
                    &format!("/api/v1/deployments/{dep}:{action}"),
                    Some(t),
                    json!({"reason": "maintenance"}),
                )
                .await;
            assert_eq!(st, 200, "{b}");
        }
    };
    pause("pause").await;
    for r in &rows[..2] {
        let (st, _, _) = score(&srv, &dep, json!({"fields": fields, "rows": [r]})).await;
        assert_eq!(st, 503);
    }
    pause("resume").await;

    // Every actual another class than predicted: accuracy 0.
    // Each row's actual: its predicted class moved on by `shift`.
    let actuals = |shift: usize| {
        let rows: Vec<Value> = answered
            .iter()
            .map(|(id, p)| json!({"request_id": id, "row": 0, "actual": ((p + shift) % 3).to_string()}))
            .collect();
        json!({ "actuals": rows })
    };
    let path = format!("/api/v1/deployments/{dep}/actuals");
    let (st, w) = srv.call("POST", &path, Some(&t), actuals(1)).await;
    assert_eq!(st, 200, "{w}");

    let (st, e) = evaluate(&srv, &t, &dep).await;
    assert_eq!(st, 200, "{e}");
    let observed = |e: &Value, metric: &str| {
        e["observations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["metric"] == metric)
            .cloned()
            .unwrap_or_else(|| panic!("{metric} not observed: {e}"))
    };
    let rate = observed(&e, "error_rate");
    assert_eq!(
        (&rate["value"], &rate["threshold"], &rate["crossed"]),
        (&json!(0.25), &json!(0.2), &json!(true)),
        "{e}"
    );
    let acc = observed(&e, "accuracy");
    assert_eq!(
        (&acc["value"], &acc["threshold"], &acc["crossed"]),
        (&json!(0.0), &json!(0.9), &json!(true)),
        "{e}"
    );
    let raised: Vec<&str> = e["written"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(raised, ["AlertRaised", "AlertRaised"], "{e}");
    // Evaluated again with nothing changed: nothing more is raised.
    let (_, again) = evaluate(&srv, &t, &dep).await;
    assert!(again["written"].is_null(), "{again}");

    // The actuals corrected (each replaces the last for its row), and a higher limit on
    // errors: both resolve, each with the evidence that resolved it.
    let (st, _) = srv.call("POST", &path, Some(&t), actuals(0)).await;
    assert_eq!(st, 200);
    let (st, _) = set_policy(
        &srv,
        &t,
        &dep,
        json!({"window_minutes": 5, "error_rate": 0.5, "accuracy_min": 0.9}),
    )
    .await;
    assert_eq!(st, 200);
    let (_, e) = evaluate(&srv, &t, &dep).await;
    assert_eq!(e["written"]["events"].as_array().unwrap().len(), 2, "{e}");
    let all = alerts(&srv, &dep).await;
    let by = |metric: &str| all.iter().find(|a| a["metric"] == metric).unwrap().clone();
    assert_eq!(by("accuracy")["resolved"]["value"], 1.0);
    assert_eq!(by("error_rate")["resolved"]["threshold"], 0.5);
    assert!(all.iter().all(|a| !a["resolved"].is_null()));
}
