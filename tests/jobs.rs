//! Batch scoring jobs over HTTP: files in, scored files out, every run recorded and
//! reproducible, refused rows reported one by one.

mod common;

use std::io::Cursor;
use std::time::Duration;

use common::{Server, create_user, csv, deployed_wine, s, score};
use polars::prelude::*;
use serde_json::{Value, json};

/// Distinct wine rows (`provenant bench batch` scores the same).
fn wine_rows(n: usize) -> (Vec<String>, Vec<Vec<f64>>) {
    provenant::bench::wine_rows(n).unwrap()
}

async fn post_file(
    srv: &Server,
    token: &str,
    deployment: &str,
    query: &str,
    content_type: &str,
    file: Vec<u8>,
) -> (u16, Value) {
    let path = format!("/api/v1/deployments/{deployment}/jobs{query}");
    srv.send_file("POST", &path, token, Some(content_type), file)
        .await
}

/// Polls a job until it has ended; answers its status.
async fn ended(srv: &Server, job: &str) -> Value {
    for _ in 0..6000 {
        let (st, j) = srv
            .call(
                "GET",
                &format!("/api/v1/jobs/{job}"),
                Some(&srv.admin_token),
                Value::Null,
            )
            .await;
        assert_eq!(st, 200, "{j}");
        if j["state"] != "Running" {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("job {job} did not end");
}

async fn download(srv: &Server, job: &str) -> (u16, Vec<u8>) {
    let r = srv
        .http
        .get(format!("{}/api/v1/jobs/{job}/output", srv.base))
        .bearer_auth(&srv.admin_token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_job_reports_refused_rows_and_its_outputs_equal_online_scoring() {
    let srv = Server::start().await;
    let (_, _, d) = deployed_wine(&srv, "jobs").await;
    let dep = s(&d["data"]["deployment_id"]);
    let (fields, values) = wine_rows(250);
    let mut rows: Vec<Vec<String>> = values
        .iter()
        .map(|r| r.iter().map(|v| v.to_string()).collect())
        .collect();
    rows[3][0] = "not a number".into();
    rows[120][5] = String::new(); // missing: a float column takes it as NaN
    rows[249][12] = "1e400x".into();
    let t = srv.admin_token.clone();
    let before = srv.size();
    let (st, j) = post_file(
        &srv,
        &t,
        &dep,
        "?batch_rows=100",
        "text/csv",
        csv(&fields, &rows),
    )
    .await;
    assert_eq!(st, 202, "{j}");
    assert_eq!(s(&j["events"][0]["event_type"]), "ScoringJobStarted");
    let job = s(&j["data"]["job_id"]);
    let status = ended(&srv, &job).await;
    assert_eq!(status["state"], "Completed", "{status}");
    assert_eq!(
        (
            &status["scored_rows"],
            &status["failed_rows"],
            &status["runs"]
        ),
        (&json!(248), &json!(2), &json!(3))
    );
    let errors = status["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["row"], 3);
    assert!(
        s(&errors[0]["reason"]).contains("\"not a number\" is not a Float32"),
        "{errors:?}"
    );
    assert_eq!(errors[1]["row"], 249);

    // The output: one row per input row, the refused ones empty, the others exactly what
    // online scoring answers for the same rows.
    let (st, bytes) = download(&srv, &job).await;
    assert_eq!(st, 200);
    let text = String::from_utf8(bytes).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 251);
    let empty = ",".repeat(lines[0].matches(',').count());
    assert_eq!(lines[1 + 3], empty);
    assert_eq!(lines[1 + 249], empty);
    let good: Vec<usize> = (0..250).filter(|i| *i != 3 && *i != 249).collect();
    let (st, _, online) = score(
        &srv,
        &dep,
        json!({"fields": fields, "rows": good.iter().map(|&i| &rows[i]).collect::<Vec<_>>()}),
    )
    .await;
    assert_eq!(st, 200, "{online}");
    assert_eq!(
        lines[0],
        online["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(s)
            .collect::<Vec<_>>()
            .join(",")
    );
    for (k, &i) in good.iter().enumerate() {
        let want: Vec<String> = online["score"][k]
            .as_array()
            .unwrap()
            .iter()
            .map(s)
            .collect();
        assert_eq!(lines[1 + i], want.join(","), "row {i}");
    }

    // The ledger: the start, three runs naming the job and their file rows, and the end.
    let events = srv.ledger.read_all(before, usize::MAX).unwrap();
    let types: Vec<&str> = events
        .iter()
        .map(|e| e.unsigned.event_type.as_str())
        .collect();
    assert_eq!(types[0], "ScoringJobStarted");
    assert_eq!(
        types
            .iter()
            .filter(|t| **t == "InferenceRunRecorded")
            .count(),
        4
    );
    assert!(types.contains(&"ScoringJobEnded"));
    let runs: Vec<&Value> = events
        .iter()
        .filter(|e| e.unsigned.event_type == "InferenceRunRecorded")
        .map(|e| &e.unsigned.payload)
        .filter(|p| !p["job"].is_null())
        .collect();
    assert_eq!(runs.len(), 3);
    let first = runs.iter().find(|r| r["job"]["first_row"] == 0).unwrap();
    assert_eq!(first["job"]["skipped_rows"], json!([3]));
    assert_eq!(first["row_count"], 99);
    assert_eq!(first["requests"], json!([]));

    // Every run of the job reproduces bit for bit.
    let (st, report) = srv
        .call(
            "POST",
            &format!("/api/v1/deployments/{dep}:reproduce"),
            Some(&t),
            json!({"from": before.to_string()}),
        )
        .await;
    assert_eq!(st, 200, "{report}");
    assert_eq!(
        (&report["runs"], &report["identical"]),
        (&json!(4), &json!(4)),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_job_requests_are_refused_with_a_code_and_append_nothing() {
    let srv = Server::start().await;
    let (pid, _, d) = deployed_wine(&srv, "jobs").await;
    let dep = s(&d["data"]["deployment_id"]);
    let t = srv.admin_token.clone();
    let (fields, values) = wine_rows(20);
    let rows: Vec<Vec<String>> = values
        .iter()
        .map(|r| r.iter().map(|v| v.to_string()).collect())
        .collect();
    let file = csv(&fields, &rows);
    let (_, viewer_t) = create_user(&srv, "vera", json!([])).await;
    let vera = srv.state.registry.read().usernames["vera"].to_string();
    let (st, _) = srv
        .call(
            "PUT",
            &format!("/api/v1/projects/{pid}/members/{vera}"),
            Some(&t),
            json!({"role": "viewer"}),
        )
        .await;
    assert_eq!(st, 200);
    let before = srv.size();
    type Case<'a> = (String, &'a str, Vec<u8>, &'a str, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            dep.clone(),
            "",
            file.clone(),
            "application/octet-stream",
            400,
            "unknown_format",
        ),
        (
            dep.clone(),
            "?input_format=parquet",
            file.clone(),
            "",
            400,
            "invalid_file",
        ),
        (
            dep.clone(),
            "",
            b"alcohol,hue\n1,2\n".to_vec(),
            "text/csv",
            400,
            "missing_columns",
        ),
        (
            dep.clone(),
            "",
            fields.join(",").into_bytes(),
            "text/csv",
            422,
            "invalid_field",
        ),
        (
            dep.clone(),
            "?batch_rows=0",
            file.clone(),
            "text/csv",
            422,
            "invalid_field",
        ),
        (
            dep.clone(),
            "?bogus=1",
            file.clone(),
            "text/csv",
            400,
            "invalid_query",
        ),
        (
            uuid::Uuid::nil().to_string(),
            "",
            file.clone(),
            "text/csv",
            404,
            "deployment_not_found",
        ),
    ];
    for (target, query, body, ct, want, code) in cases {
        let (st, e) = post_file(&srv, &t, &target, query, ct, body).await;
        assert_eq!(
            (st, s(&e["code"]).as_str()),
            (want, code),
            "{query} {ct}: {e}"
        );
        assert!(!s(&e["detail"]).is_empty());
    }
    let (st, e) = post_file(&srv, &viewer_t, &dep, "", "text/csv", file.clone()).await;
    assert_eq!((st, s(&e["code"]).as_str()), (403, "forbidden"), "{e}");
    let (st, e) = post_file(&srv, &t, &dep, "", "text/csv", vec![b'x'; 300 << 10]).await;
    assert_eq!((st, s(&e["code"]).as_str()), (413, "file_too_large"), "{e}");
    let (st, _) = srv
        .call(
            "POST",
            &format!("/api/v1/deployments/{dep}:pause"),
            Some(&t),
            json!({"reason": "maintenance"}),
        )
        .await;
    assert_eq!(st, 200);
    let paused = srv.size();
    let (st, e) = post_file(&srv, &t, &dep, "", "text/csv", file.clone()).await;
    assert_eq!((st, s(&e["code"]).as_str()), (409, "conflict"), "{e}");
    assert_eq!(srv.size(), paused, "a refused job appends nothing");
    assert_eq!(paused, before + 1, "only the pause was appended");
    let (st, e) = srv
        .call(
            "GET",
            &format!("/api/v1/jobs/{}", uuid::Uuid::nil()),
            Some(&t),
            Value::Null,
        )
        .await;
    assert_eq!((st, s(&e["code"]).as_str()), (404, "job_not_found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_fails_past_its_refused_rows_limit_and_a_cancelled_one_says_who() {
    let srv = Server::start_with(8 << 20).await;
    let (_, _, d) = deployed_wine(&srv, "jobs").await;
    let dep = s(&d["data"]["deployment_id"]);
    let t = srv.admin_token.clone();
    let (fields, values) = wine_rows(3000);
    let mut rows: Vec<Vec<String>> = values
        .iter()
        .map(|r| r.iter().map(|v| v.to_string()).collect())
        .collect();
    for r in rows.iter_mut().skip(1000).take(5) {
        r[2] = "?".into();
    }
    let (st, j) = post_file(
        &srv,
        &t,
        &dep,
        "?max_failed_rows=4&batch_rows=500",
        "text/csv",
        csv(&fields, &rows),
    )
    .await;
    assert_eq!(st, 202, "{j}");
    let job = s(&j["data"]["job_id"]);
    let status = ended(&srv, &job).await;
    assert_eq!(status["state"], "Failed", "{status}");
    assert!(
        s(&status["ended"]["detail"]).contains("5 rows refused, more than the job's limit of 4")
    );
    assert_eq!(
        status["scored_rows"], 1000,
        "the runs before the limit stand"
    );
    let (st, e) = download(&srv, &job).await;
    assert_eq!(st, 404, "{}", String::from_utf8_lossy(&e));

    // Cancelled between runs of one row each, with who asked.
    let (st, j) = post_file(
        &srv,
        &t,
        &dep,
        "?batch_rows=1",
        "text/csv",
        csv(&fields, &rows[..2000]),
    )
    .await;
    assert_eq!(st, 202, "{j}");
    let job = s(&j["data"]["job_id"]);
    let (st, c) = srv
        .call(
            "POST",
            &format!("/api/v1/jobs/{job}:cancel"),
            Some(&t),
            Value::Null,
        )
        .await;
    assert_eq!(st, 202, "{c}");
    let status = ended(&srv, &job).await;
    assert_eq!(status["state"], "Cancelled", "{status}");
    let root = srv.state.registry.read().usernames["root"].to_string();
    assert_eq!(s(&status["ended"]["cancelled_by"]), root);
    assert!(status["scored_rows"].as_u64().unwrap() < 2000);
    let (st, e) = srv
        .call(
            "POST",
            &format!("/api/v1/jobs/{job}:cancel"),
            Some(&t),
            Value::Null,
        )
        .await;
    assert_eq!((st, s(&e["code"]).as_str()), (409, "conflict"));
}

/// The figure of merit, as a test: a million rows from Parquet to Parquet, equal to
/// online scoring of the same rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_row_parquet_job_equals_online_scoring() {
    const ROWS: usize = 1_000_000;
    let srv = Server::start_with(256 << 20).await;
    let (_, _, d) = deployed_wine(&srv, "jobs").await;
    let dep = s(&d["data"]["deployment_id"]);
    let (fields, values) = wine_rows(ROWS);
    let columns: Vec<Column> = fields
        .iter()
        .enumerate()
        .map(|(j, f)| {
            Column::new(
                f.as_str().into(),
                values.iter().map(|r| r[j]).collect::<Vec<f64>>(),
            )
        })
        .collect();
    let mut df = DataFrame::new_infer_height(columns).unwrap();
    let mut file = Vec::new();
    ParquetWriter::new(&mut file).finish(&mut df).unwrap();
    let t = srv.admin_token.clone();
    let (st, j) = post_file(
        &srv,
        &t,
        &dep,
        "?batch_rows=4000",
        "application/vnd.apache.parquet",
        file,
    )
    .await;
    assert_eq!(st, 202, "{j}");
    let job = s(&j["data"]["job_id"]);
    let status = ended(&srv, &job).await;
    assert_eq!(status["state"], "Completed", "{status}");
    assert_eq!(status["scored_rows"], ROWS);
    let (st, bytes) = download(&srv, &job).await;
    assert_eq!(st, 200);
    let out = ParquetReader::new(Cursor::new(bytes)).finish().unwrap();
    assert_eq!(out.height(), ROWS);

    // Online scoring of the same rows, as the text a client sends for a float64 value.
    let names: Vec<String> = out
        .get_column_names()
        .iter()
        .map(|n| n.to_string())
        .collect();
    // Score requests stay under the server's 2 MB body limit.
    let chunk = 4_000;
    for start in (0..ROWS).step_by(chunk) {
        let rows: Vec<Vec<String>> = values[start..start + chunk]
            .iter()
            .map(|r| {
                r.iter()
                    .map(|v| ryu_js::Buffer::new().format(*v).to_string())
                    .collect()
            })
            .collect();
        let (st, _, online) = score(&srv, &dep, json!({"fields": fields, "rows": rows})).await;
        assert_eq!(st, 200, "{online}");
        let got: Vec<String> = online["fields"].as_array().unwrap().iter().map(s).collect();
        assert_eq!(got, names);
        let batch = out.slice(start as i64, chunk);
        for (j, name) in names.iter().enumerate() {
            let column = batch.column(name).unwrap();
            let want = |k: usize| s(&online["score"][k][j]);
            match column.dtype() {
                DataType::Float32 => {
                    for (k, v) in column.f32().unwrap().iter().enumerate() {
                        assert_eq!(
                            v,
                            Some(want(k).parse::<f32>().unwrap()),
                            "row {} {name}",
                            start + k
                        );
                    }
                }
                DataType::Int64 => {
                    for (k, v) in column.i64().unwrap().iter().enumerate() {
                        assert_eq!(
                            v,
                            Some(want(k).parse::<i64>().unwrap()),
                            "row {} {name}",
                            start + k
                        );
                    }
                }
                other => panic!("output {name} is a {other}"),
            }
        }
    }
}
