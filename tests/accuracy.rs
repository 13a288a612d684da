//! Actuals and accuracy over HTTP: true outcomes joined to scored rows by request id, late
//! actuals updating the past, and bad actuals refused with nothing appended.

mod common;

use common::{Server, deploy_again, deployed_wine, member, s, score, wine};
use serde_json::{Value, json};

/// A scored request: its id and each row's class probabilities.
async fn scored(
    srv: &Server,
    dep: &str,
    fields: &[String],
    rows: &[Vec<String>],
) -> (String, Vec<Vec<f64>>) {
    let (st, headers, body) = score(srv, dep, json!({"fields": fields, "rows": rows})).await;
    assert_eq!(st, 200, "{body}");
    let id = headers["provenant-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let probabilities = body["score"]
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
        .collect();
    (id, probabilities)
}

fn argmax(p: &[f64]) -> usize {
    (0..p.len()).fold(0, |best, i| if p[i] > p[best] { i } else { best })
}

async fn post_actuals(srv: &Server, token: &str, dep: &str, actuals: Value) -> (u16, Value) {
    srv.call(
        "POST",
        &format!("/api/v1/deployments/{dep}/actuals"),
        Some(token),
        json!({ "actuals": actuals }),
    )
    .await
}

async fn post_file(
    srv: &Server,
    token: &str,
    dep: &str,
    content_type: &str,
    file: Vec<u8>,
) -> (u16, Value) {
    let path = format!("/api/v1/deployments/{dep}/actuals");
    srv.send_file("POST", &path, token, Some(content_type), file)
        .await
}

async fn accuracy(srv: &Server, dep: &str) -> Value {
    let (st, a) = srv
        .call(
            "GET",
            &format!("/api/v1/deployments/{dep}/accuracy"),
            Some(&srv.admin_token),
            Value::Null,
        )
        .await;
    assert_eq!(st, 200, "{a}");
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actuals_join_predictions_and_late_ones_update_the_past() {
    let srv = Server::start().await;
    let t = srv.admin_token.clone();
    let (_, _, d) = deployed_wine(&srv, "accuracy").await;
    let dep = s(&d["data"]["deployment_id"]);
    let (fields, rows) = wine(0, 30, &[]);
    let mut requests = Vec::new();
    for chunk in rows.chunks(10) {
        requests.push(scored(&srv, &dep, &fields, chunk).await);
    }
    // Rows 0..20 get their predicted class as the actual, rows 20..30 the next class.
    let mut actuals = Vec::new();
    let (mut loss, mut confusion) = (0.0, vec![vec![0u64; 3]; 3]);
    for (k, (id, probabilities)) in requests.iter().enumerate() {
        for (row, p) in probabilities.iter().enumerate() {
            let predicted = argmax(p);
            let actual = if k < 2 {
                predicted
            } else {
                (predicted + 1) % 3
            };
            let sum: f64 = p.iter().sum();
            loss -= (p[actual] / sum)
                .clamp(f64::EPSILON, 1.0 - f64::EPSILON)
                .ln();
            confusion[actual][predicted] += 1;
            actuals.push(json!({"request_id": id, "row": row, "actual": actual.to_string()}));
        }
    }

    // The first request's actuals only: ten rows, all right.
    let (st, w) = post_actuals(&srv, &t, &dep, json!(actuals[..10])).await;
    assert_eq!(st, 200, "{w}");
    assert_eq!(w["events"][0]["event_type"], "ActualsRecorded");
    let early = accuracy(&srv, &dep).await;
    assert_eq!(
        (&early["task"], &early["classes"]),
        (&json!("classification"), &json!(["0", "1", "2"]))
    );
    assert_eq!(
        (&early["total"]["rows"], &early["total"]["accuracy"]),
        (&json!(10), &json!(1.0))
    );
    assert_eq!(early["windows"].as_array().unwrap().len(), 1);

    // The rest arrive late, as a CSV file: the same window now holds thirty rows.
    let mut file = String::from("request_id,row,actual\n");
    for a in &actuals[10..] {
        file += &format!("{},{},{}\n", s(&a["request_id"]), a["row"], s(&a["actual"]));
    }
    let (st, w) = post_file(&srv, &t, &dep, "text/csv", file.into_bytes()).await;
    assert_eq!(st, 200, "{w}");
    assert_eq!(w["data"]["recorded"], 20);
    let late = accuracy(&srv, &dep).await;
    let total = &late["total"];
    assert_eq!(total["rows"], 30);
    assert!(
        (total["accuracy"].as_f64().unwrap() - 20.0 / 30.0).abs() < 1e-12,
        "{late}"
    );
    assert!(
        (total["log_loss"].as_f64().unwrap() - loss / 30.0).abs() < 1e-9,
        "{late}"
    );
    assert_eq!(total["confusion"], json!(confusion));
    assert!(total["auc"].as_f64().unwrap() > 0.0);
    assert_eq!(late["windows"][0]["rows"], 30);
    assert_eq!(
        (&late["unretained"], &late["unmatched"]),
        (&json!(0), &json!(0))
    );

    // A later actual for a row replaces the earlier one.
    let wrong = json!([{"request_id": requests[0].0, "row": 0, "actual": ((argmax(&requests[0].1[0]) + 1) % 3).to_string()}]);
    assert_eq!(post_actuals(&srv, &t, &dep, wrong).await.0, 200);
    let replaced = accuracy(&srv, &dep).await;
    assert!((replaced["total"]["accuracy"].as_f64().unwrap() - 19.0 / 30.0).abs() < 1e-12);
    // An actual that is no class counts as unmatched.
    let odd = json!([{"request_id": requests[0].0, "row": 1, "actual": "merlot"}]);
    assert_eq!(post_actuals(&srv, &t, &dep, odd).await.0, 200);
    let odd = accuracy(&srv, &dep).await;
    assert_eq!(
        (&odd["total"]["rows"], &odd["unmatched"]),
        (&json!(29), &json!(1))
    );

    // A hash-only deployment keeps no outputs to join: its actuals are counted as unseen.
    let (_, model, _) = deployed_wine(&srv, "blind").await;
    let blind = deploy_again(&srv, &model, json!({"mode": "hashes"})).await;
    let (id, _) = scored(&srv, &blind, &fields, &rows[..3]).await;
    let three = json!([0, 1, 2].map(|r| json!({"request_id": id, "row": r, "actual": "1"})));
    assert_eq!(post_actuals(&srv, &t, &blind, three).await.0, 200);
    let report = accuracy(&srv, &blind).await;
    assert_eq!(
        (&report["unretained"], &report["total"]["rows"]),
        (&json!(3), &json!(0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_actuals_are_refused_and_append_nothing() {
    let srv = Server::start().await;
    let t = srv.admin_token.clone();
    let (pid, model, d) = deployed_wine(&srv, "refused actuals").await;
    let dep = s(&d["data"]["deployment_id"]);
    let other = deploy_again(&srv, &model, Value::Null).await;
    let (_, viewer_t) = member(&srv, &pid, "vik", "viewer").await;
    let (fields, rows) = wine(0, 4, &[]);
    let (id, _) = scored(&srv, &dep, &fields, &rows).await;
    let (elsewhere, _) = scored(&srv, &other, &fields, &rows[..1]).await;
    let one = |request: &str, row: u64, actual: &str| json!([{"request_id": request, "row": row, "actual": actual}]);
    let before = srv.size();
    for (token, actuals, status, code) in [
        (&t, json!([]), 422, "invalid_field"),
        (&t, one(&id, 4, "1"), 422, "invalid_field"),
        (&t, one(&elsewhere, 0, "1"), 422, "invalid_field"),
        (
            &t,
            one(&uuid::Uuid::now_v7().to_string(), 0, "1"),
            422,
            "invalid_field",
        ),
        (&t, one(&id, 0, "  "), 422, "invalid_field"),
        (
            &t,
            json!([{"request_id": id, "row": 0}]),
            422,
            "invalid_body",
        ),
        (&viewer_t, one(&id, 0, "1"), 403, "forbidden"),
    ] {
        let (st, e) = post_actuals(&srv, token, &dep, actuals.clone()).await;
        assert_eq!(
            (st, s(&e["code"]).as_str()),
            (status, code),
            "{actuals}: {e}"
        );
        assert!(!s(&e["detail"]).is_empty());
    }
    for (file, status, code) in [
        (
            format!("request_id,actual\n{id},1\n"),
            400,
            "missing_columns",
        ),
        (
            format!("request_id,row,actual\n{id},first,1\n"),
            400,
            "invalid_file",
        ),
        (
            "request_id,row,actual\nnot-an-id,0,1\n".to_string(),
            400,
            "invalid_file",
        ),
        (
            format!("request_id,row,actual\n{id},9,1\n"),
            422,
            "invalid_field",
        ),
    ] {
        let (st, e) = post_file(&srv, &t, &dep, "text/csv", file.clone().into_bytes()).await;
        assert_eq!((st, s(&e["code"]).as_str()), (status, code), "{file}: {e}");
    }
    let (st, e) = post_actuals(
        &srv,
        &t,
        &uuid::Uuid::now_v7().to_string(),
        one(&id, 0, "1"),
    )
    .await;
    assert_eq!(
        (st, s(&e["code"]).as_str()),
        (404, "deployment_not_found"),
        "{e}"
    );
    assert_eq!(srv.size(), before, "a refused actual appended");
    let (st, e) = srv
        .call(
            "GET",
            &format!("/api/v1/deployments/{dep}/accuracy?resolution=week"),
            Some(&t),
            Value::Null,
        )
        .await;
    assert_eq!((st, s(&e["code"]).as_str()), (400, "invalid_query"), "{e}");
}
