//! Service-level monitoring over real HTTP: a deployment's windows (REST and GraphQL), the
//! Prometheus endpoint, and the projection rebuilt from the log equal to the live one.

mod common;

use common::{Server, create_user, deployed_wine, s, score};
use provenant::projections::Views;
use provenant::projections::replay::{Until, replay_into};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scored_requests_show_in_windows_counters_and_a_rebuilt_projection() {
    let srv = Server::start().await;
    let t = srv.admin_token.clone();
    let (_, _, d) = deployed_wine(&srv, "monitoring").await;
    let dep = s(&d["data"]["deployment_id"]);
    let wine: Value = serde_json::from_str(
        &std::fs::read_to_string("fixtures/models/wine_classifier.expected.json").unwrap(),
    )
    .unwrap();
    let all = wine["rows"].as_array().unwrap();
    // 12 requests of 1, 2 or 3 rows: 24 rows; then refused requests.
    let mut rows = 0;
    for i in 0..12 {
        let n = 1 + i % 3;
        rows += n;
        let body = json!({"fields": wine["fields"], "rows": all[..n]});
        let (st, _, b) = score(&srv, &dep, body).await;
        assert_eq!(st, 200, "{b}");
    }
    let mut refused = std::collections::BTreeMap::new();
    for body in [
        json!({"fields": ["nope"], "rows": [["1"]]}),
        json!({"fields": wine["fields"], "rows": [["x"]]}),
        json!({"rows": 7}),
    ] {
        let (st, _, _) = score(&srv, &dep, body).await;
        *refused.entry(st).or_insert(0) += 1;
    }
    let refused: Vec<Value> = refused
        .iter()
        .map(|(status, count)| json!({"status": status, "count": count}))
        .collect();
    assert_eq!(refused.len(), 2, "400s and a 422: {refused:?}");

    let path = format!("/api/v1/deployments/{dep}/metrics");
    let (st, m) = srv.call("GET", &path, Some(&t), Value::Null).await;
    assert_eq!(st, 200, "{m}");
    let windows = m["windows"].as_array().unwrap();
    let sum = |key: &str| {
        windows
            .iter()
            .map(|w| w[key].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!((sum("requests"), sum("rows")), (12, rows as u64));
    assert!(sum("runs") >= 1 && sum("runs") <= 12);
    let w = &windows[0];
    assert!(w["latency_ms"]["p50"].as_f64().unwrap() > 0.0, "{w}");
    assert!(w["latency_ms"]["p99"].as_f64().unwrap() <= w["latency_ms"]["max"].as_f64().unwrap());
    assert_eq!(m["errors"], json!(refused));
    // By window too: the minutes they came in, summed by status, are the same counts.
    let mut by_window = std::collections::BTreeMap::new();
    for w in m["error_windows"].as_array().unwrap() {
        for e in w["errors"].as_array().unwrap() {
            *by_window.entry(e["status"].as_u64().unwrap()).or_insert(0) +=
                e["count"].as_u64().unwrap();
        }
    }
    let by_window: Vec<Value> = by_window
        .iter()
        .map(|(status, count)| json!({"status": status, "count": count}))
        .collect();
    assert_eq!(json!(by_window), json!(refused), "{m}");

    // Rolled up to a day, the same totals in one window.
    let (_, day) = srv
        .call(
            "GET",
            &format!("{path}?resolution=day"),
            Some(&t),
            Value::Null,
        )
        .await;
    assert_eq!(day["windows"].as_array().unwrap().len(), 1);
    assert_eq!(day["windows"][0]["requests"], 12);
    assert_eq!(day["windows"][0]["rows"], rows);
    assert_eq!(day["error_windows"][0]["errors"], json!(refused));
    assert_eq!(day["error_windows"][0]["start"], day["windows"][0]["start"]);
    // A range before any run holds nothing.
    let (_, none) = srv
        .call(
            "GET",
            &format!("{path}?to=2000-01-01T00:00:00Z"),
            Some(&t),
            Value::Null,
        )
        .await;
    assert_eq!(none["windows"], json!([]));

    // GraphQL answers the same windows.
    let (st, g) = srv
        .graphql(
            &t,
            "query($id: ID!) { deployment(id: $id) { metrics(resolution: \"day\") { windows { requests rows latencyMs { p50 max } } errors { status count } errorWindows { errors { status count } } } } }",
            json!({"id": dep}),
        )
        .await;
    assert_eq!(st, 200, "{g}");
    let gm = &g["data"]["deployment"]["metrics"];
    assert_eq!(gm["windows"][0]["requests"], 12);
    assert_eq!(gm["windows"][0]["rows"], rows);
    assert_eq!(gm["errors"], json!(refused));
    assert_eq!(gm["errorWindows"][0]["errors"], json!(refused));

    // Prometheus: counters and an exact latency histogram per deployment.
    let (st, text) = srv.call("GET", "/metrics", Some(&t), Value::Null).await;
    assert_eq!(st, 200);
    let text = text.as_str().unwrap();
    let labels = format!("deployment=\"{dep}\",environment=\"DEV\"");
    for line in [
        format!("provenant_scoring_requests_total{{{labels}}} 12"),
        format!("provenant_scoring_rows_total{{{labels}}} {rows}"),
        format!("provenant_scoring_request_latency_seconds_bucket{{{labels},le=\"+Inf\"}} 12"),
        format!("provenant_scoring_request_latency_seconds_count{{{labels}}} 12"),
        format!(
            "provenant_scoring_errors_total{{{labels},status=\"400\"}} {}",
            refused[0]["count"]
        ),
        format!("provenant_ledger_events {}", srv.size()),
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    // Cumulative buckets never decrease.
    let buckets: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with("provenant_scoring_request_latency_seconds_bucket"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(buckets.len(), 13);
    assert!(buckets.windows(2).all(|p| p[0] <= p[1]), "{buckets:?}");

    // Rebuilt from the log, the projection equals the live one.
    let snap = srv.ledger.snapshot().unwrap();
    let mut views = Views::default();
    replay_into(&snap, Until::End, Some(&mut views), &mut |_, _| {}).unwrap();
    assert_eq!(views.monitoring, *srv.state.registry.monitoring());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_refuse_bad_arguments_and_outsiders() {
    let srv = Server::start().await;
    let t = srv.admin_token.clone();
    let (_, _, d) = deployed_wine(&srv, "private").await;
    let dep = s(&d["data"]["deployment_id"]);
    let path = format!("/api/v1/deployments/{dep}/metrics");
    for (query, status, code) in [
        ("?resolution=week", 400, "invalid_query"),
        ("?from=yesterday", 400, "invalid_argument"),
        ("?bucket=1", 400, "invalid_query"),
    ] {
        let (st, e) = srv
            .call("GET", &format!("{path}{query}"), Some(&t), Value::Null)
            .await;
        assert_eq!((st, s(&e["code"]).as_str()), (status, code), "{query}: {e}");
        assert!(!s(&e["detail"]).is_empty());
    }
    let unknown = "/api/v1/deployments/00000000-0000-7000-8000-000000000000/metrics";
    let (st, e) = srv.call("GET", unknown, Some(&t), Value::Null).await;
    assert_eq!((st, s(&e["code"]).as_str()), (404, "deployment_not_found"));

    // Someone outside the project may not read its metrics; only admins and auditors read
    // /metrics; nobody unauthenticated reads either.
    let (_, outsider) = create_user(&srv, "outsider", json!([])).await;
    let (st, _) = srv.call("GET", &path, Some(&outsider), Value::Null).await;
    assert_eq!(st, 403);
    let (st, e) = srv
        .call("GET", "/metrics", Some(&outsider), Value::Null)
        .await;
    assert_eq!((st, s(&e["code"]).as_str()), (403, "forbidden"));
    let (_, auditor) = create_user(&srv, "auditor", json!(["auditor"])).await;
    let (st, _) = srv
        .call("GET", "/metrics", Some(&auditor), Value::Null)
        .await;
    assert_eq!(st, 200);
    assert_eq!(srv.call("GET", "/metrics", None, Value::Null).await.0, 401);
    assert_eq!(srv.call("GET", &path, None, Value::Null).await.0, 401);
    let (st, g) = srv
        .graphql(
            &t,
            "query($id: ID!) { deployment(id: $id) { metrics(resolution: \"fortnight\") { resolution } } }",
            json!({"id": dep}),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(
        g["errors"][0]["extensions"]["code"], "invalid_argument",
        "{g}"
    );
}
