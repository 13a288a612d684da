//! Runtime management through the real binary: `provenant serve` restarted on the same data
//! dir with changed bootstrap files, and the ceiling rule checked over HTTP each time.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

/// A running `provenant serve`.
struct Serve {
    child: Child,
    base: String,
    http: reqwest::Client,
}

/// Starts the server on `data` with `bootstrap`; answers it once it listens, with the admin
/// token when this start created one.
fn serve(data: &Path, bootstrap: &Path) -> (Serve, Option<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_provenant"))
        .args(["serve", "--no-demo", "--addr", "127.0.0.1:0", "--data"])
        .arg(data)
        .arg("--bootstrap")
        .arg(bootstrap)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut token = None;
    let base = loop {
        let line = lines
            .next()
            .expect("the server stopped before listening")
            .unwrap();
        if line.starts_with("pvn_") {
            token = Some(line);
        } else if let Some(rest) = line.strip_prefix("provenant listening on ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (
        Serve {
            child,
            base,
            http: reqwest::Client::new(),
        },
        token,
    )
}

impl Serve {
    async fn call(&self, method: &str, path: &str, token: &str, body: Value) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if !body.is_null() {
            req = req.json(&body);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn effective(&self, token: &str, runtime: &str) -> String {
        let (_, r) = self
            .call(
                "GET",
                &format!("/api/v1/runtimes/{runtime}"),
                token,
                Value::Null,
            )
            .await;
        r["effective"].as_str().unwrap_or_default().to_string()
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn catalog(runtimes: &[(&str, &str)]) -> String {
    let mut s = String::from(
        "runtime_images:\n  - id: img\n    name: Image\n    versions:\n      - version: \"1.0\"\n        scorer_version: \"1\"\nruntimes:\n",
    );
    for (id, state) in runtimes {
        s += &format!(
            "  - id: {id}\n    name: {id}\n    image_id: img\n    model_types: [onnx]\n    state: {state}\n"
        );
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ceiling_rule_holds_across_restarts_with_changed_bootstrap_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("bootstrap.yaml");
    let reason = json!({"reason": "audit finding 7"});

    std::fs::write(
        &file,
        catalog(&[
            ("kept", "ACTIVE"),
            ("dropped", "ACTIVE"),
            ("capped", "DEPRECATED"),
        ]),
    )
    .unwrap();
    let (srv, token) = serve(&data, &file);
    let t = token.expect("the first start prints the admin token");
    // Bootstrapped ACTIVE, the user deprecates: allowed.
    let (st, r) = srv
        .call(
            "POST",
            "/api/v1/runtimes/kept:deprecate",
            &t,
            reason.clone(),
        )
        .await;
    assert_eq!(
        (st, r["data"]["effective"].as_str()),
        (200, Some("DEPRECATED")),
        "{r}"
    );
    // The user disables, later enables: allowed where the platform allows ACTIVE...
    for (action, want) in [("disable", "DISABLED"), ("enable", "ACTIVE")] {
        let (st, r) = srv
            .call(
                "POST",
                &format!("/api/v1/runtimes/dropped:{action}"),
                &t,
                reason.clone(),
            )
            .await;
        assert_eq!(
            (st, r["data"]["effective"].as_str()),
            (200, Some(want)),
            "{r}"
        );
    }
    // ...and refused above a DEPRECATED platform ceiling, naming it.
    srv.call(
        "POST",
        "/api/v1/runtimes/capped:disable",
        &t,
        reason.clone(),
    )
    .await;
    let (st, r) = srv
        .call("POST", "/api/v1/runtimes/capped:enable", &t, reason.clone())
        .await;
    assert_eq!(
        (st, r["code"].as_str()),
        (409, Some("state_ceiling")),
        "{r}"
    );
    assert!(r["detail"].as_str().unwrap().contains("DEPRECATED"), "{r}");
    let (st, _) = srv
        .call(
            "POST",
            "/api/v1/runtimes/capped:deprecate",
            &t,
            reason.clone(),
        )
        .await;
    assert_eq!(st, 200);
    // Bootstrap-managed entities cannot be deleted through the API.
    let (st, r) = srv
        .call("DELETE", "/api/v1/runtimes/kept", &t, reason.clone())
        .await;
    assert_eq!(
        (st, r["code"].as_str()),
        (409, Some("bootstrap_managed")),
        "{r}"
    );
    srv.stop();

    // Restart: the same file cannot re-enable what the user deprecated; a file without
    // `dropped` disables it (the platform's ceiling), and the user cannot enable it.
    std::fs::write(
        &file,
        catalog(&[("kept", "ACTIVE"), ("capped", "DEPRECATED")]),
    )
    .unwrap();
    let (srv, token) = serve(&data, &file);
    assert!(token.is_none(), "only the first start creates an admin");
    assert_eq!(srv.effective(&t, "kept").await, "DEPRECATED");
    assert_eq!(srv.effective(&t, "dropped").await, "DISABLED");
    let (_, r) = srv
        .call("GET", "/api/v1/runtimes/dropped", &t, Value::Null)
        .await;
    assert_eq!(
        (r["deleted"].clone(), r["bootstrap"]["reason"].as_str()),
        (Value::Null, Some("removed from the bootstrap file"))
    );
    let (st, r) = srv
        .call(
            "POST",
            "/api/v1/runtimes/dropped:enable",
            &t,
            reason.clone(),
        )
        .await;
    assert_eq!(
        (st, r["code"].as_str()),
        (409, Some("state_ceiling")),
        "{r}"
    );
    assert!(
        r["detail"].as_str().unwrap().contains("system:bootstrap"),
        "{r}"
    );
    let size = |srv: &Serve| {
        let srv_base = srv.base.clone();
        let http = srv.http.clone();
        let t = t.clone();
        async move {
            let r = http
                .get(format!("{srv_base}/api/v1/ledger/head"))
                .bearer_auth(&t)
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()["size"].as_u64().unwrap()
        }
    };
    let before = size(&srv).await;
    srv.stop();

    // A malformed file stops the start, names the line, and appends nothing.
    std::fs::write(&file, "runtimes:\n  - id: x\n    name: [oops\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_provenant"))
        .args(["serve", "--no-demo", "--addr", "127.0.0.1:0", "--data"])
        .arg(&data)
        .arg("--bootstrap")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 3"), "{stderr}");
    let after = provenant::log::read_only(&data).unwrap().size().unwrap();
    assert_eq!(after, before, "a refused start appends nothing");

    // Putting `dropped` back restores the platform's ACTIVE; the user's own states stay.
    std::fs::write(
        &file,
        catalog(&[
            ("kept", "ACTIVE"),
            ("dropped", "ACTIVE"),
            ("capped", "DEPRECATED"),
        ]),
    )
    .unwrap();
    let (srv, _) = serve(&data, &file);
    assert!(size(&srv).await > before, "this start applied the file");
    assert_eq!(srv.effective(&t, "dropped").await, "ACTIVE");
    assert_eq!(srv.effective(&t, "kept").await, "DEPRECATED");
    srv.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_runtime_commands_are_refused_and_append_nothing() {
    let srv = common::Server::start().await;
    let t = srv.admin_token.clone();
    let why = json!({"reason": "why"});
    srv.call(
        "POST",
        "/api/v1/runtime-images",
        Some(&t),
        json!({"image_id": "gone", "name": "Gone"}),
    )
    .await;
    srv.call(
        "DELETE",
        "/api/v1/runtime-images/gone",
        Some(&t),
        why.clone(),
    )
    .await;
    let cases: Vec<(&str, &str, Value, u16, &str)> = vec![
        (
            "GET",
            "/api/v1/runtimes/nope",
            Value::Null,
            404,
            "runtime_entity_not_found",
        ),
        (
            "POST",
            "/api/v1/runtimes/nope:disable",
            why.clone(),
            404,
            "runtime_entity_not_found",
        ),
        (
            "POST",
            "/api/v1/runtimes/onnx-runtime:sleep",
            why.clone(),
            400,
            "invalid_action",
        ),
        (
            "POST",
            "/api/v1/runtimes/onnx-runtime",
            why.clone(),
            400,
            "invalid_action",
        ),
        (
            "POST",
            "/api/v1/runtime-images/onnx-scorer/versions/0.1.0-ort1.32.0:enable",
            why.clone(),
            400,
            "invalid_action",
        ),
        (
            "POST",
            "/api/v1/runtimes/onnx-runtime:disable",
            json!({}),
            422,
            "invalid_body",
        ),
        (
            "POST",
            "/api/v1/runtimes/onnx-runtime:disable",
            json!({"reason": " "}),
            422,
            "invalid_field",
        ),
        (
            "POST",
            "/api/v1/runtimes/onnx-runtime:enable",
            why.clone(),
            409,
            "conflict",
        ),
        (
            "DELETE",
            "/api/v1/runtimes/onnx-runtime",
            why.clone(),
            409,
            "bootstrap_managed",
        ),
        (
            "PATCH",
            "/api/v1/runtime-images/onnx-scorer",
            json!({"name": "Renamed"}),
            409,
            "bootstrap_managed",
        ),
        (
            "POST",
            "/api/v1/runtime-images",
            json!({"image_id": "Bad Id", "name": "x"}),
            422,
            "invalid_field",
        ),
        (
            "POST",
            "/api/v1/runtime-images",
            json!({"image_id": "onnx-scorer", "name": "x"}),
            409,
            "already_exists",
        ),
        (
            "POST",
            "/api/v1/runtime-images/onnx-scorer/versions",
            json!({"version": "2", "scorer_version": "2", "execution_mode": "turbo"}),
            422,
            "invalid_field",
        ),
        (
            "POST",
            "/api/v1/runtimes",
            json!({"runtime_id": "r", "name": "R", "image_id": "missing", "model_types": ["onnx"]}),
            404,
            "runtime_entity_not_found",
        ),
        (
            "POST",
            "/api/v1/runtimes",
            json!({"runtime_id": "r", "name": "R", "image_id": "onnx-scorer", "model_types": []}),
            422,
            "invalid_field",
        ),
        (
            "POST",
            "/api/v1/runtime-images/gone:disable",
            why.clone(),
            404,
            "runtime_entity_not_found",
        ),
        (
            "DELETE",
            "/api/v1/runtime-images/gone",
            why.clone(),
            404,
            "runtime_entity_not_found",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let before = srv.size();
        let (st, r) = srv.call(method, path, Some(&t), body.clone()).await;
        assert_eq!(
            (st, r["code"].as_str()),
            (status, Some(code)),
            "{method} {path} {body}: {r}"
        );
        assert_eq!(srv.size(), before, "{method} {path} appended");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_deployments_are_loaded_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("bootstrap.yaml");
    std::fs::write(&file, provenant::runtime::bootstrap::DEFAULT).unwrap();
    // The first start seeds and deploys the demo model.
    let mut child = Command::new(env!("CARGO_BIN_EXE_provenant"))
        .args(["serve", "--addr", "127.0.0.1:0", "--data"])
        .arg(&data)
        .arg("--bootstrap")
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut admin = None;
    let url = loop {
        let line = lines.next().expect("no scoring URL printed").unwrap();
        if line.starts_with("pvn_") {
            admin = Some(line);
        } else if let Some(u) = line.strip_prefix("demo scoring URL: ") {
            break u.to_string();
        }
    };
    let admin = admin.expect("the first start prints the admin's token");
    let http = reqwest::Client::new();
    let sample: Value = http
        .get(url.replace("/model/score", "/model/sample_request"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let score_sample = |url: String| {
        let (http, sample) = (http.clone(), sample.clone());
        async move {
            let r = http.post(&url).json(&sample).send().await.unwrap();
            // Only answered (recorded) requests carry one.
            let request = r
                .headers()
                .get("provenant-request-id")
                .map(|h| h.to_str().unwrap().to_string())
                .unwrap_or_default();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap(),
                request,
            )
        }
    };
    let (st, first, request) = score_sample(url.clone()).await;
    assert_eq!(st, 200, "{first}");
    // A long batch job (runs of one row) is under way when the server is killed.
    let deployment = url.split('/').nth(3).unwrap().to_string();
    let base = url.split('/').take(3).collect::<Vec<_>>().join("/");
    let cells = |v: &Value| -> String {
        v.as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let csv = |rows: usize, bad: Option<usize>| {
        let mut text = cells(&sample["fields"]);
        for i in 0..rows {
            text.push('\n');
            text.push_str(&if Some(i) == bad {
                cells(&sample["rows"][0]).replacen('0', "x", 1)
            } else {
                cells(&sample["rows"][0])
            });
        }
        text
    };
    let started: Value = http
        .post(format!(
            "{base}/api/v1/deployments/{deployment}/jobs?batch_rows=1"
        ))
        .bearer_auth(&admin)
        .header("content-type", "text/csv")
        .body(csv(20_000, None))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job = started["data"]["job_id"].as_str().unwrap().to_string();
    let job_status = |base: String| {
        let (http, job, admin) = (http.clone(), job.clone(), admin.clone());
        async move {
            http.get(format!("{base}/api/v1/jobs/{job}"))
                .bearer_auth(admin)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    while job_status(base.clone()).await["runs"].as_u64() < Some(3) {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let _ = child.kill();
    let _ = child.wait();

    let (srv, token) = serve(&data, &file);
    assert!(token.is_none());
    // The restart recorded the job's end, with what its recorded runs scored.
    let interrupted = job_status(srv.base.clone()).await;
    assert_eq!(interrupted["state"], "Failed", "{interrupted}");
    assert!(
        interrupted["ended"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("interrupted")
    );
    let job_runs = interrupted["runs"].as_u64().unwrap();
    // Live counts count durable runs only, so the three seen before the kill are recorded.
    assert!((3..20_000).contains(&job_runs), "{interrupted}");
    assert_eq!(interrupted["scored_rows"].as_u64(), Some(job_runs));
    let url = format!("{}/{deployment}/model/score", srv.base);
    let (st, again, _) = score_sample(url).await;
    assert_eq!(st, 200, "{again}");
    assert_eq!(
        again["score"], first["score"],
        "the same model answers the same"
    );
    srv.stop();

    // Offline, the first prediction (made before the restart) reproduces from the data dir.
    let out = Command::new(env!("CARGO_BIN_EXE_provenant"))
        .args(["reproduce", "--data"])
        .arg(&data)
        .arg(&request)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(report["verdict"], "identical");
    assert_eq!(report["request_id"], request.as_str());
    let what_if = Command::new(env!("CARGO_BIN_EXE_provenant"))
        .args(["reproduce", "--data"])
        .arg(&data)
        .arg(report["run_position"].to_string())
        .args(["--overrides", r#"{"intra_op_threads": 2}"#])
        .output()
        .unwrap();
    let what_if: Value = serde_json::from_slice(&what_if.stdout).unwrap();
    assert_eq!(what_if["overridden"], true, "{what_if}");
    assert_eq!(
        what_if["request_id"],
        Value::Null,
        "a whole run by its position"
    );
    let bad = Command::new(env!("CARGO_BIN_EXE_provenant"))
        .args(["reproduce", "--data"])
        .arg(&data)
        .arg("not-a-target")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let out = Command::new(env!("CARGO_BIN_EXE_provenant"))
        .args(["reproduce", "--data"])
        .arg(&data)
        .args(["--deployment", &deployment])
        .output()
        .unwrap();
    let range: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{range}");
    assert_eq!(
        (range["runs"].as_u64(), range["identical"].as_u64()),
        (Some(2 + job_runs), Some(2 + job_runs)),
        "both scorings, before and after the restart, and the interrupted job's runs: {range}"
    );

    // A batch job from the CLI on the stopped server's data dir, Parquet out.
    let input = dir.path().join("rows.csv");
    let output = dir.path().join("scores.parquet");
    std::fs::write(&input, csv(50, Some(7))).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_provenant"))
        .args(["score", "--data"])
        .arg(&data)
        .args(["--deployment", &deployment, "--batch-rows", "20", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .output()
        .unwrap();
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{summary}");
    assert_eq!(
        (
            summary["scored_rows"].as_u64(),
            summary["failed_rows"].as_u64()
        ),
        (Some(49), Some(1)),
        "{summary}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("row 7: "));
    use polars::prelude::SerReader;
    let scores = polars::prelude::ParquetReader::new(std::fs::File::open(&output).unwrap())
        .finish()
        .unwrap();
    assert_eq!(scores.height(), 50);
    let missing = Command::new(env!("CARGO_BIN_EXE_provenant"))
        .args(["score", "--data"])
        .arg(&data)
        .args(["--deployment", &deployment, "--input"])
        .arg(dir.path().join("rows.txt"))
        .arg("--output")
        .arg(&output)
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));

    // Replayed from the log, verified first, the registry shows the deployment Healthy
    // again; as of its first start's scoring, it was too.
    let out = Command::new(env!("CARGO_BIN_EXE_provenant"))
        .args(["replay", "--verify", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let registry: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(registry["deployments"][&deployment]["state"], "Healthy");
    let out = Command::new(env!("CARGO_BIN_EXE_provenant"))
        .args(["replay", "--data"])
        .arg(&data)
        .arg("--to")
        .arg(report["run_position"].to_string())
        .output()
        .unwrap();
    let then: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        then["applied"],
        report["run_position"].as_u64().unwrap() + 1
    );
    assert!(then["applied"].as_u64() < registry["applied"].as_u64());

    // A paused deployment is loaded again at a restart but stays paused until resumed.
    let (srv, _) = serve(&data, &file);
    let action = |verb: &str| format!("/api/v1/deployments/{deployment}:{verb}");
    let (st, r) = srv
        .call(
            "POST",
            &action("pause"),
            &admin,
            json!({"reason": "overnight"}),
        )
        .await;
    assert_eq!(st, 200, "{r}");
    srv.stop();
    let (srv, _) = serve(&data, &file);
    let url = format!("{}/{deployment}/model/score", srv.base);
    for (method, path) in [("GET", "model/sample_request"), ("POST", "model/score")] {
        let (st, paused) = srv
            .call(
                method,
                &format!("/{deployment}/{path}"),
                &admin,
                json!({"fields": [], "rows": []}),
            )
            .await;
        assert_eq!((st, &paused["code"]), (503, &json!("deployment_paused")));
    }
    let (st, r) = srv
        .call(
            "POST",
            &action("resume"),
            &admin,
            json!({"reason": "morning"}),
        )
        .await;
    assert_eq!(st, 200, "{r}");
    let (st, resumed, _) = score_sample(url).await;
    assert_eq!(st, 200, "{resumed}");
    assert_eq!(resumed["score"], first["score"]);
    srv.stop();
}
