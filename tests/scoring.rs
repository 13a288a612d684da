//! Deployments and the H2O-compatible scorer over real HTTP: deploy the fixture classifier,
//! score it bit for bit as the onnxruntime Python package does, check every receipt against
//! the ledger, and the contract's edge cases.

mod common;

use common::{Server, deployed_wine, register, s, score, score_as};
use provenant::log::{envelope, keys};
use serde_json::{Value, json};

/// The fixture's rows and the onnxruntime Python package's outputs on them.
fn wine_expected() -> Value {
    let text = std::fs::read_to_string("fixtures/models/wine_classifier.expected.json").unwrap();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_classifier_scores_like_onnxruntime_and_every_prediction_is_recorded() {
    let srv = Server::start().await;
    let t = srv.admin_token.clone();
    let (_, _, d) = deployed_wine(&srv, "scoring").await;
    let xid = s(&d["data"]["spec"]["experiment_id"]);
    assert_eq!(s(&d["data"]["state"]), "Healthy");
    let history: Vec<String> = d["data"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| s(&h["to"]))
        .collect();
    assert_eq!(history, ["Preparing", "Launching", "Healthy"]);
    assert_eq!(
        s(&d["data"]["spec"]["runtime"]["onnxruntime_version"]),
        "1.32.0"
    );
    assert_eq!(s(&d["data"]["spec"]["runtime_id"]), "onnx-runtime");
    let dep = s(&d["data"]["deployment_id"]);
    let get = |path: String| {
        let http = srv.http.clone();
        let url = format!("{}/{dep}/{path}", srv.base);
        let token = srv.admin_token.clone();
        async move {
            let r = http.get(url).bearer_auth(token).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(get("readyz".into()).await, (200, "ready".into()));
    assert_eq!(get("model/id".into()).await, (200, xid.clone()));
    let (_, caps) = get("model/capabilities".into()).await;
    assert_eq!(caps, "[\"SCORE\"]");
    let (_, schema) = get("model/schema".into()).await;
    let schema: Value = serde_json::from_str(&schema).unwrap();
    assert_eq!(schema["properties"]["scoringType"], "CLASSIFICATION");
    let outputs: Vec<String> = schema["schema"]["outputFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| s(&f["name"]))
        .collect();
    assert_eq!(outputs, ["cultivar.0", "cultivar.1", "cultivar.2"]);
    let (_, doc) = get("openapi.json".into()).await;
    assert_eq!(
        serde_json::from_str::<Value>(&doc).unwrap()["servers"][0]["url"],
        "."
    );
    assert_eq!(get("docs".into()).await.0, 200);

    // The sample request scores as is.
    let (_, sample) = get("model/sample_request".into()).await;
    let (st, _, body) = score(&srv, &dep, serde_json::from_str(&sample).unwrap()).await;
    assert_eq!(st, 200, "{body}");

    // The fixture rows, with an extra id column the client always sends: bit for bit.
    let expected = wine_expected();
    let mut fields = expected["fields"].as_array().unwrap().clone();
    fields.insert(0, json!("ID"));
    let rows: Vec<Value> = expected["rows"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut row = r.as_array().unwrap().clone();
            row.insert(0, json!(format!("row-{i}")));
            Value::Array(row)
        })
        .collect();
    let (st, headers, body) = score(
        &srv,
        &dep,
        json!({"fields": fields, "rows": rows, "idField": "ID"}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        body["fields"],
        json!(["ID", "cultivar.0", "cultivar.1", "cultivar.2"])
    );
    for (i, row) in body["score"].as_array().unwrap().iter().enumerate() {
        assert_eq!(s(&row[0]), format!("row-{i}"));
        for class in 0..3 {
            let got: f32 = s(&row[1 + class]).parse().unwrap();
            let want = expected["outputs"]["probabilities"][i][class]
                .as_f64()
                .unwrap();
            assert_eq!(f64::from(got), want, "row {i} class {class}");
        }
    }

    // The receipt names a durable event signed by the ledger key, recording this run.
    let header = |n: &str| headers.get(n).unwrap().to_str().unwrap().to_string();
    let position: u64 = header("provenant-event-position").parse().unwrap();
    let event = srv.ledger.event(position).unwrap().unwrap();
    assert_eq!(event.hash.to_hex(), header("provenant-event-hash"));
    assert_eq!(hex::encode(event.signature), header("provenant-signature"));
    let (_, keys_doc) = srv
        .call("GET", "/api/v1/ledger/keys", Some(&t), Value::Null)
        .await;
    let public = keys::parse_public(keys_doc["keys"][0]["public_key"].as_str().unwrap()).unwrap();
    assert!(keys::verify_strict(
        &public,
        &envelope::signing_message(&event.hash),
        &event.signature
    ));
    let run = &event.unsigned.payload;
    assert_eq!(
        (
            event.unsigned.event_type.as_str(),
            run["row_count"].as_u64()
        ),
        ("InferenceRunRecorded", Some(5))
    );
    assert_eq!(event.unsigned.schema_version, 5);
    assert_eq!(run["variant"], "primary");
    assert_eq!(s(&run["session"]["ort_version"]), "1.32.0");
    // The recorded input is a typed table of exactly the values the session saw.
    let input = srv
        .state
        .blobs
        .get(&envelope::Digest::from_hex(run["input_blob"].as_str().unwrap()).unwrap())
        .unwrap();
    assert!(input.starts_with(provenant::runtime::typed::MAGIC));
    assert_same_values(&input, &expected);
    let output = srv
        .state
        .blobs
        .get(&envelope::Digest::from_hex(run["output_blob"].as_str().unwrap()).unwrap())
        .unwrap();
    let output: Value = serde_json::from_slice(&output).unwrap();
    assert_eq!(
        output["rows"][0],
        Value::Array(body["score"][0].as_array().unwrap()[1..].to_vec())
    );

    // Contract edge cases: empty rows, field options, and errors that append nothing.
    let names = expected["fields"].clone();
    let one_row = expected["rows"][0].clone();
    let (st, _, empty) = score(&srv, &dep, json!({"fields": names, "rows": []})).await;
    assert_eq!(
        (
            st,
            empty["score"].clone(),
            empty["fields"].as_array().map(Vec::len)
        ),
        (200, json!([]), Some(3))
    );
    let (_, _, bare) = score(&srv, &dep, json!({"fields": names, "rows": [one_row], "noFieldNamesInOutput": true, "somethingElse": 1})).await;
    assert!(
        bare.get("fields").is_none() && bare["score"].as_array().map(Vec::len) == Some(1),
        "{bare}"
    );
    let (_, _, copied) = score(
        &srv,
        &dep,
        json!({"fields": names, "rows": [one_row], "includeFieldsInOutput": ["hue", "ash"]}),
    )
    .await;
    assert_eq!(
        copied["fields"].as_array().unwrap()[..2],
        [json!("hue"), json!("ash")]
    );
    // Number cells are read as JSON writes them: the same answer as their text.
    let numbers: Vec<Value> = one_row
        .as_array()
        .unwrap()
        .iter()
        .map(|c| serde_json::from_str(c.as_str().unwrap()).unwrap())
        .collect();
    let (_, _, as_text) = score(&srv, &dep, json!({"fields": names, "rows": [one_row]})).await;
    let (st, _, as_numbers) = score(&srv, &dep, json!({"fields": names, "rows": [numbers]})).await;
    assert_eq!((st, &as_numbers["score"]), (200, &as_text["score"]));
    // Fields in another order than the schema's, and one it does not take, score the same.
    let mut fields_reversed: Vec<Value> = names.as_array().unwrap().iter().rev().cloned().collect();
    let mut row_reversed: Vec<Value> = one_row.as_array().unwrap().iter().rev().cloned().collect();
    fields_reversed.push(json!("not_a_feature"));
    row_reversed.push(json!("ignored"));
    let (st, _, reordered) = score(
        &srv,
        &dep,
        json!({"fields": fields_reversed, "rows": [row_reversed]}),
    )
    .await;
    assert_eq!((st, &reordered["score"]), (200, &as_text["score"]));
    let before = srv.size();
    let mut nested = one_row.as_array().unwrap().clone();
    nested[3] = json!(["2.5"]);
    let mut short = one_row.as_array().unwrap().clone();
    short.pop();
    let mut dup = names.as_array().unwrap().clone();
    dup[1] = dup[0].clone();
    let mut bad_value = one_row.as_array().unwrap().clone();
    bad_value[2] = json!("twelve");
    for (body, status) in [
        (json!({"fields": names, "rows": [short]}), 400),
        (json!({"fields": dup, "rows": [one_row]}), 400),
        (
            json!({"fields": names.as_array().unwrap()[1..].to_vec(), "rows": []}),
            400,
        ),
        (json!({"fields": names, "rows": [bad_value]}), 400),
        (json!({"fields": names, "rows": [one_row, nested]}), 400),
        (
            json!({"fields": names, "rows": [one_row], "requestShapleyValueType": "ORIGINAL"}),
            501,
        ),
        (
            json!({"fields": names, "rows": [one_row], "requestPredictionIntervals": true}),
            501,
        ),
        (json!({"rows": []}), 422),
        (json!({"fields": names, "rows": [one_row, "x"]}), 422),
    ] {
        let (st, _, r) = score(&srv, &dep, body.clone()).await;
        assert_eq!(st, status, "{body}: {r}");
        assert!(r["code"].is_string() && r["detail"].is_string(), "{r}");
    }
    let r = srv
        .http
        .post(format!("{}/{dep}/model/contribution", srv.base))
        .bearer_auth(&t)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 501);
    assert_eq!(srv.size(), before, "refused requests record no run");

    // Stopped: the scorer is gone, the reason recorded.
    let (st, stopped) = srv
        .call(
            "POST",
            &format!("/api/v1/deployments/{dep}:stop"),
            Some(&t),
            json!({"reason": "replaced"}),
        )
        .await;
    assert_eq!(
        (st, s(&stopped["data"]["state"])),
        (200, "Stopped".into()),
        "{stopped}"
    );
    let (st, _, r) = score(&srv, &dep, json!({"fields": names, "rows": [one_row]})).await;
    assert_eq!(
        (st, r["code"].as_str()),
        (404, Some("deployment_not_serving"))
    );
    let (st, _, r) = score(
        &srv,
        "not-a-deployment",
        json!({"fields": names, "rows": []}),
    )
    .await;
    assert_eq!(
        (st, r["code"].as_str()),
        (404, Some("deployment_not_found"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_that_cannot_run_here_are_refused_at_deploy_time() {
    let srv = Server::start().await;
    let t = srv.admin_token.clone();
    let pid = srv.project(&t, "refusals").await;
    let (mojo, _) = register(&srv, &pid, "pipeline.mojo", "dai/mojo_pipeline", None).await;
    let before = srv.size();
    let (st, r) = srv
        .call(
            "POST",
            "/api/v1/deployments",
            Some(&t),
            json!({"model_id": mojo, "version": 1, "environment": "DEV"}),
        )
        .await;
    assert_eq!(
        (st, r["code"].as_str()),
        (422, Some("not_deployable")),
        "{r}"
    );
    assert!(s(&r["detail"]).contains("dai/mojo_pipeline"), "{r}");
    assert_eq!(srv.size(), before);

    // The ONNX runtime disabled by an admin: refused, naming it.
    let (wine, _) = register(&srv, &pid, "wine_classifier.onnx", "onnx", Some("cultivar")).await;
    srv.call(
        "POST",
        "/api/v1/runtimes/onnx-runtime:disable",
        Some(&t),
        json!({"reason": "maintenance"}),
    )
    .await;
    let before = srv.size();
    let (st, r) = srv
        .call(
            "POST",
            "/api/v1/deployments",
            Some(&t),
            json!({"model_id": wine, "version": 1, "environment": "PROD"}),
        )
        .await;
    assert_eq!((st, r["code"].as_str()), (409, Some("conflict")), "{r}");
    assert!(s(&r["detail"]).contains("onnx-runtime is DISABLED"), "{r}");
    assert_eq!(srv.size(), before);
    // DEPRECATED is allowed, with the warning recorded.
    srv.call(
        "POST",
        "/api/v1/runtimes/onnx-runtime:deprecate",
        Some(&t),
        json!({"reason": "moving on"}),
    )
    .await;
    let (st, d) = srv
        .call(
            "POST",
            "/api/v1/deployments",
            Some(&t),
            json!({"model_id": wine, "version": 1, "environment": "PROD"}),
        )
        .await;
    assert_eq!(st, 201, "{d}");
    assert_eq!(
        d["data"]["spec"]["warnings"],
        json!(["runtime onnx-runtime is DEPRECATED"])
    );
    let (st, r) = srv
        .call(
            "POST",
            "/api/v1/deployments",
            Some(&t),
            json!({"model_id": wine, "version": 1, "environment": "no spaces"}),
        )
        .await;
    assert_eq!(
        (st, r["code"].as_str()),
        (422, Some("invalid_field")),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_requests_get_their_own_rows_back() {
    let srv = Server::start().await;
    let t = srv.admin_token.clone();
    let (_, _, d) = deployed_wine(&srv, "batching").await;
    assert_eq!(
        d["data"]["spec"]["settings"]["batch_workers"], 1,
        "H2O's default: one batching worker"
    );
    let dep = s(&d["data"]["deployment_id"]);

    // Distinct rows: the five fixture rows scaled, so every request's answer is its own.
    let expected = wine_expected();
    let fields = expected["fields"].clone();
    let base: Vec<Vec<f64>> = expected["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|c| s(c).parse().unwrap())
                .collect()
        })
        .collect();
    let request_rows = |k: usize| -> Vec<Vec<String>> {
        (0..1 + k % 3)
            .map(|j| {
                base[(k + j) % 5]
                    .iter()
                    .map(|v| format!("{}", v * (1.0 + k as f64 / 100.0)))
                    .collect()
            })
            .collect()
    };
    // Each request alone first, to know its answer.
    let mut alone = Vec::new();
    for k in 0..40 {
        let (st, _, body) = score(
            &srv,
            &dep,
            json!({"fields": fields, "rows": request_rows(k)}),
        )
        .await;
        assert_eq!(st, 200, "{body}");
        alone.push(body["score"].clone());
    }
    // Then all at once: coalesced into shared runs, each must get back exactly its rows.
    let mut tasks = Vec::new();
    for k in 0..40 {
        let (http, url, body) = (
            srv.http.clone(),
            format!("{}/{dep}/model/score", srv.base),
            json!({"fields": fields, "rows": request_rows(k)}),
        );
        let token = t.clone();
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            let offset: u64 = r.headers()["provenant-row-offset"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            let position: u64 = r.headers()["provenant-event-position"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            (r.json::<Value>().await.unwrap(), offset, position)
        }));
    }
    let mut shared = 0;
    for (k, task) in tasks.into_iter().enumerate() {
        let (body, offset, position) = task.await.unwrap();
        let got = body["score"].as_array().unwrap();
        let want = alone[k].as_array().unwrap();
        assert_eq!(got.len(), want.len(), "request {k}");
        for (g, w) in got.iter().zip(want) {
            for (a, b) in g.as_array().unwrap().iter().zip(w.as_array().unwrap()) {
                let (a, b): (f64, f64) = (s(a).parse().unwrap(), s(b).parse().unwrap());
                assert!((a - b).abs() <= 1e-6, "request {k}: {a} vs {b}");
            }
        }
        // The run's record says where this request's rows are.
        let run = srv
            .ledger
            .event(position)
            .unwrap()
            .unwrap()
            .unsigned
            .payload;
        let mine = run["requests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["row_offset"] == offset)
            .unwrap();
        assert_eq!(mine["row_count"].as_u64(), Some(got.len() as u64));
        let requests = run["requests"].as_array().unwrap();
        let covered: u64 = requests
            .iter()
            .map(|r| r["row_count"].as_u64().unwrap())
            .sum();
        assert_eq!(
            covered,
            run["row_count"].as_u64().unwrap(),
            "the requests partition the run"
        );
        shared += usize::from(requests.len() > 1);
    }
    assert!(shared > 0, "some requests shared a run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_security_option_admits_only_its_callers() {
    let srv = Server::start().await;
    let t = srv.admin_token.clone();
    let pid = srv.project(&t, "security").await;
    let (mid, _) = register(&srv, &pid, "wine_classifier.onnx", "onnx", Some("cultivar")).await;
    let deploy = |security: Value| {
        let body =
            json!({"model_id": mid, "version": 1, "environment": "DEV", "security": security});
        async {
            srv.call("POST", "/api/v1/deployments", Some(&srv.admin_token), body)
                .await
        }
    };
    let srv_ref = &srv;
    let sample = |d: String| async move {
        let r = srv_ref
            .http
            .get(format!("{}/{d}/model/sample_request", srv_ref.base))
            .bearer_auth(&srv_ref.admin_token)
            .send()
            .await
            .unwrap();
        r.json::<Value>().await.unwrap()
    };
    let (_, open) = deploy(json!({"mode": "none"})).await;
    let open = s(&open["data"]["deployment_id"]);
    let body = sample(open.clone()).await;
    assert_eq!(score_as(&srv, &open, None, body.clone()).await.0, 200);

    let (st, r) = deploy(json!({"mode": "passphrase", "passphrase": "short"})).await;
    assert_eq!((st, r["code"].as_str()), (422, Some("invalid_field")));
    let (_, guarded) =
        deploy(json!({"mode": "passphrase", "passphrase": "correct horse battery staple"})).await;
    let stored = guarded["data"]["spec"]["security"]["hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        stored.starts_with("$argon2") && !stored.contains("horse"),
        "only the hash is kept"
    );
    let guarded = s(&guarded["data"]["deployment_id"]);
    let (st, _, r) = score_as(&srv, &guarded, None, body.clone()).await;
    assert_eq!((st, r["code"].as_str()), (401, Some("unauthenticated")));
    let (st, _, r) = score_as(
        &srv,
        &guarded,
        Some("wrong horse battery staple"),
        body.clone(),
    )
    .await;
    assert_eq!((st, r["code"].as_str()), (401, Some("invalid_passphrase")));
    for _ in 0..2 {
        let (st, _, r) = score_as(
            &srv,
            &guarded,
            Some("correct horse battery staple"),
            body.clone(),
        )
        .await;
        assert_eq!(st, 200, "{r}");
    }

    // The default: Provenant tokens of the project's members.
    let (_, tokened) = deploy(Value::Null).await;
    assert_eq!(
        tokened["data"]["spec"]["security"],
        json!({"mode": "token", "role": "viewer"})
    );
    let tokened = s(&tokened["data"]["deployment_id"]);
    let (_, u) = srv
        .call(
            "POST",
            "/api/v1/users",
            Some(&t),
            json!({"username": "outsider"}),
        )
        .await;
    let uid = s(&u["data"]["user_id"]);
    let (_, tk) = srv
        .call(
            "POST",
            &format!("/api/v1/users/{uid}/tokens"),
            Some(&t),
            json!({"name": "x"}),
        )
        .await;
    let outsider = s(&tk["data"]["token"]);
    let (st, _, r) = score_as(&srv, &tokened, Some(&outsider), body.clone()).await;
    assert_eq!((st, r["code"].as_str()), (403, Some("forbidden")));
    srv.call(
        "PUT",
        &format!("/api/v1/projects/{pid}/members/{uid}"),
        Some(&t),
        json!({"role": "viewer"}),
    )
    .await;
    let (st, _, r) = score_as(&srv, &tokened, Some(&outsider), body.clone()).await;
    assert_eq!(st, 200, "{r}");
    let position: u64 = {
        let (_, h, _) = score_as(&srv, &tokened, Some(&outsider), body).await;
        h["provenant-event-position"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let run = srv
        .ledger
        .event(position)
        .unwrap()
        .unwrap()
        .unsigned
        .payload;
    assert_eq!(
        run["requests"][0]["caller"],
        json!(uid),
        "the run names its caller"
    );
    // Deployments of the same model version share its loaded model and sessions.
    let model_of = |d: &str| {
        srv.state
            .serving
            .get(&d.parse().unwrap())
            .unwrap()
            .model
            .clone()
    };
    assert!(std::sync::Arc::ptr_eq(
        &model_of(&open),
        &model_of(&tokened)
    ));
    assert!(std::sync::Arc::ptr_eq(
        &model_of(&open),
        &model_of(&guarded)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_prediction_leaves_without_a_durable_record() {
    let srv = Server::start().await;
    let t = srv.admin_token.clone();
    let (_, _, d) = deployed_wine(&srv, "durability").await;
    let dep = s(&d["data"]["deployment_id"]);
    let expected = wine_expected();
    let body = json!({"fields": expected["fields"], "rows": [expected["rows"][0]]});

    // Load from many tasks; the ledger fails its commits for a while in the middle.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (http, url, body, token) = (
            srv.http.clone(),
            format!("{}/{dep}/model/score", srv.base),
            body.clone(),
            t.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for _ in 0..30 {
                let r = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let receipt = r
                    .headers()
                    .get("provenant-event-position")
                    .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
                let hash = r
                    .headers()
                    .get("provenant-event-hash")
                    .map(|v| v.to_str().unwrap().to_string());
                let body: Value = r.json().await.unwrap();
                outcomes.push((status, receipt, hash, body));
            }
            outcomes
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(40)).await;
    srv.ledger.fail_commits(true);
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    srv.ledger.fail_commits(false);
    let mut answered = 0;
    let mut refused = 0;
    for task in tasks {
        for (status, receipt, hash, body) in task.await.unwrap() {
            match status {
                200 => {
                    // Every answer names a durable event of its run.
                    let event = srv
                        .ledger
                        .event(receipt.unwrap())
                        .unwrap()
                        .expect("the receipt's event exists");
                    assert_eq!(Some(event.hash.to_hex()), hash);
                    assert_eq!(event.unsigned.event_type, "InferenceRunRecorded");
                    answered += 1;
                }
                503 => {
                    assert_eq!(body["code"], "recording_failed", "{body}");
                    assert!(receipt.is_none());
                    refused += 1;
                }
                other => panic!("unexpected {other}: {body}"),
            }
        }
    }
    assert!(refused > 0, "the failure was felt");
    assert!(answered > 0, "scoring recovered");
    // As many requests were recorded as were answered: none answered unrecorded.
    let recorded: usize = srv
        .ledger
        .read_all(0, usize::MAX)
        .unwrap()
        .iter()
        .filter(|e| e.unsigned.event_type == "InferenceRunRecorded")
        .map(|e| e.unsigned.payload["requests"].as_array().unwrap().len())
        .sum();
    assert_eq!(recorded, answered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_hashes_and_purges_blobs_by_policy_with_a_record() {
    let srv = Server::start().await;
    let t = srv.admin_token.clone();
    let pid = srv.project(&t, "retention").await;
    let (mid, _) = register(&srv, &pid, "wine_classifier.onnx", "onnx", Some("cultivar")).await;
    let expected = wine_expected();
    let deploy = |retention: Value| {
        let body =
            json!({"model_id": mid, "version": 1, "environment": "DEV", "retention": retention});
        async {
            srv.call("POST", "/api/v1/deployments", Some(&srv.admin_token), body)
                .await
        }
    };
    let run_of = |headers: &reqwest::header::HeaderMap| {
        let position: u64 = headers["provenant-event-position"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        srv.ledger
            .event(position)
            .unwrap()
            .unwrap()
            .unsigned
            .payload
    };
    let blob = |h: &Value| envelope::Digest::from_hex(h.as_str().unwrap()).unwrap();

    // Hashes only: the ledger holds the hashes of exactly what was scored; no blob is stored.
    let (_, hashed) = deploy(json!({"mode": "hashes"})).await;
    let hashed = s(&hashed["data"]["deployment_id"]);
    let one = json!({"fields": expected["fields"], "rows": [expected["rows"][1]]});
    let (st, headers, _) = score(&srv, &hashed, one.clone()).await;
    assert_eq!(st, 200);
    let run = run_of(&headers);
    assert!(!srv.state.blobs.contains(&blob(&run["input_blob"])));
    // The hash is the one a deployment keeping its data stores the same row under.
    let (st, full) = deploy(json!({"mode": "full", "days": 30})).await;
    assert_eq!(st, 201, "{full}");
    let full = s(&full["data"]["deployment_id"]);
    let (st, headers, _) = score(&srv, &full, one.clone()).await;
    assert_eq!(st, 200);
    let kept_run = run_of(&headers);
    assert_eq!(run["input_blob"], kept_run["input_blob"]);
    let stored = srv.state.blobs.get(&blob(&kept_run["input_blob"])).unwrap();
    assert_same_values(&stored, &one);

    // Full retention of 0 days: everything recorded so far is past its time.
    let (_, kept) = deploy(json!({"mode": "full", "days": 0})).await;
    let kept = s(&kept["data"]["deployment_id"]);
    let two = json!({"fields": expected["fields"], "rows": [expected["rows"][2]]});
    let (_, h1, _) = score(&srv, &kept, two.clone()).await;
    let old = run_of(&h1);
    assert!(srv.state.blobs.contains(&blob(&old["input_blob"])));
    let (st, purged) = srv
        .call(
            "POST",
            &format!("/api/v1/deployments/{kept}:purge"),
            Some(&t),
            Value::Null,
        )
        .await;
    assert_eq!(st, 200, "{purged}");
    assert_eq!(purged["data"]["purged"], 2, "{purged}");
    let event = srv
        .ledger
        .event(purged["events"][0]["position"].as_u64().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(event.unsigned.event_type, "PredictionDataPurged");
    assert!(
        !srv.state.blobs.contains(&blob(&old["input_blob"])),
        "purged"
    );
    assert!(!srv.state.blobs.contains(&blob(&old["output_blob"])));
    // Nothing left to purge appends nothing; a hashes-only deployment has nothing to purge.
    let before = srv.size();
    let (st, again) = srv
        .call(
            "POST",
            &format!("/api/v1/deployments/{kept}:purge"),
            Some(&t),
            Value::Null,
        )
        .await;
    assert_eq!((st, again["data"]["purged"].as_u64()), (200, Some(0)));
    assert_eq!(srv.size(), before);
    let (st, r) = srv
        .call(
            "POST",
            &format!("/api/v1/deployments/{hashed}:purge"),
            Some(&t),
            Value::Null,
        )
        .await;
    assert_eq!((st, r["code"].as_str()), (409, Some("conflict")));
    // Only admins apply a policy.
    let (_, u) = srv
        .call("POST", "/api/v1/users", Some(&t), json!({"username": "ed"}))
        .await;
    let uid = s(&u["data"]["user_id"]);
    srv.call(
        "PUT",
        &format!("/api/v1/projects/{pid}/members/{uid}"),
        Some(&t),
        json!({"role": "owner"}),
    )
    .await;
    let (_, tk) = srv
        .call(
            "POST",
            &format!("/api/v1/users/{uid}/tokens"),
            Some(&t),
            json!({"name": "x"}),
        )
        .await;
    let (st, _) = srv
        .call(
            "POST",
            &format!("/api/v1/deployments/{kept}:purge"),
            Some(&s(&tk["data"]["token"])),
            Value::Null,
        )
        .await;
    assert_eq!(st, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_deployment_answers_503_until_resumed() {
    let srv = Server::start().await;
    let t = srv.admin_token.clone();
    let (pid, _, d) = deployed_wine(&srv, "pausing").await;
    let dep = s(&d["data"]["deployment_id"]);
    let wine = wine_expected();
    let body = json!({"fields": wine["fields"], "rows": wine["rows"]});
    assert_eq!(score(&srv, &dep, body.clone()).await.0, 200);
    let (viewer, viewer_t) = common::create_user(&srv, "viewer", json!([])).await;
    let (st, _) = srv
        .call(
            "PUT",
            &format!("/api/v1/projects/{pid}/members/{viewer}"),
            Some(&t),
            json!({"role": "viewer"}),
        )
        .await;
    assert_eq!(st, 200);
    let action = |verb: &str| format!("/api/v1/deployments/{dep}:{verb}");

    // Refused moves append nothing.
    let before = srv.size();
    for (token, verb, body, status, code) in [
        (&t, "pause", json!({}), 422, "invalid_field"),
        (&viewer_t, "pause", json!({"reason": "x"}), 403, "forbidden"),
        (
            &t,
            "resume",
            json!({"reason": "not paused"}),
            409,
            "conflict",
        ),
        (&t, "nap", json!({"reason": "x"}), 400, "invalid_action"),
    ] {
        let (st, e) = srv.call("POST", &action(verb), Some(token), body).await;
        assert_eq!((st, s(&e["code"]).as_str()), (status, code), "{verb}: {e}");
    }
    assert_eq!(srv.size(), before);

    let (st, w) = srv
        .call(
            "POST",
            &action("pause"),
            Some(&t),
            json!({"reason": "maintenance window"}),
        )
        .await;
    assert_eq!(st, 200, "{w}");
    assert_eq!(s(&w["data"]["state"]), "Paused");
    let (st, _, e) = score(&srv, &dep, body.clone()).await;
    assert_eq!((st, s(&e["code"]).as_str()), (503, "deployment_paused"));
    let (st, _) = srv
        .call(
            "POST",
            &action("pause"),
            Some(&t),
            json!({"reason": "twice"}),
        )
        .await;
    assert_eq!(st, 409);

    let (st, w) = srv
        .call(
            "POST",
            &action("resume"),
            Some(&t),
            json!({"reason": "window over"}),
        )
        .await;
    assert_eq!(st, 200, "{w}");
    assert_eq!(s(&w["data"]["state"]), "Healthy");
    assert_eq!(score(&srv, &dep, body).await.0, 200);
    let reasons: Vec<(String, String)> = w["data"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (s(&h["to"]), s(&h["reason"])))
        .skip(3)
        .collect();
    assert_eq!(
        reasons,
        [
            ("Paused".into(), "maintenance window".into()),
            ("Healthy".into(), "window over".into())
        ]
    );
    // The refused request while paused is counted by the monitoring.
    let (_, m) = srv
        .call(
            "GET",
            &format!("/api/v1/deployments/{dep}/metrics"),
            Some(&t),
            Value::Null,
        )
        .await;
    assert_eq!(m["errors"], json!([{"status": 503, "count": 1}]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_is_re_pointed_under_load_without_a_failed_request() {
    let srv = Server::start().await;
    let t = srv.admin_token.clone();
    let (_, mid, a) = deployed_wine(&srv, "endpoints").await;
    let a = s(&a["data"]["deployment_id"]);
    let (st, b) = srv
        .call(
            "POST",
            "/api/v1/deployments",
            Some(&t),
            json!({"model_id": mid, "version": 1, "environment": "PROD"}),
        )
        .await;
    assert_eq!(st, 201, "{b}");
    let b = s(&b["data"]["deployment_id"]);
    let (_, _, other) = deployed_wine(&srv, "elsewhere").await;
    let other = s(&other["data"]["deployment_id"]);
    let point = |name: &str, d: &str, reason: &str| {
        let path = format!("/api/v1/endpoints/{name}");
        let body = json!({"deployment_id": d, "reason": reason});
        let (srv, t) = (&srv, &t);
        async move { srv.call("PUT", &path, Some(t), body).await }
    };

    // Refused: a bad name, another project's deployment, no reason; nothing appended.
    assert_eq!(point("churn", &a, "first").await.0, 200);
    let before = srv.size();
    for (name, d, reason, status, code) in [
        ("Churn", &a, "x", 422, "invalid_field"),
        (a.as_str(), &a, "x", 422, "invalid_field"),
        ("churn", &other, "x", 409, "conflict"),
        ("churn", &a, "again", 409, "conflict"),
        ("churn", &b, " ", 422, "invalid_field"),
    ] {
        let (st, e) = point(name, d, reason).await;
        assert_eq!(
            (st, s(&e["code"]).as_str()),
            (status, code),
            "{name} {d}: {e}"
        );
    }
    assert_eq!(srv.size(), before);

    // Scoring through the endpoint while it is re-pointed back and forth: every request
    // answers, from one deployment or the other.
    let wine = wine_expected();
    let body = json!({"fields": wine["fields"], "rows": wine["rows"]});
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    let (stop, answered) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU32::new(0)),
    );
    let load = {
        let url = format!("{}/churn/model/score", srv.base);
        let (http, t, stop, answered) =
            (srv.http.clone(), t.clone(), stop.clone(), answered.clone());
        tokio::spawn(async move {
            let mut statuses = std::collections::BTreeMap::new();
            while !stop.load(Ordering::Relaxed) {
                let r = http
                    .post(&url)
                    .bearer_auth(&t)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                *statuses.entry(r.status().as_u16()).or_insert(0u32) += 1;
                answered.fetch_add(1, Ordering::Relaxed);
            }
            statuses
        })
    };
    for i in 0..6 {
        // Each switch lands between answered requests.
        let seen = answered.load(Ordering::Relaxed);
        while answered.load(Ordering::Relaxed) < seen + 2 && !load.is_finished() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let target = if i % 2 == 0 { &b } else { &a };
        let (st, e) = point("churn", target, &format!("switch {i}")).await;
        assert_eq!(st, 200, "{e}");
    }
    let seen = answered.load(Ordering::Relaxed);
    while answered.load(Ordering::Relaxed) < seen + 2 && !load.is_finished() {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let statuses = load.await.unwrap();
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        [200],
        "{statuses:?}"
    );
    assert!(statuses[&200] >= 14, "{statuses:?}");

    // It serves `b` now: the run that answers through it is b's.
    let (st, e) = point("churn", &b, "to b").await;
    assert_eq!(st, 200, "{e}");
    let (st, headers, _) = score(
        &srv,
        "churn",
        json!({"fields": wine["fields"], "rows": wine["rows"]}),
    )
    .await;
    assert_eq!(st, 200);
    let request = headers["provenant-request-id"].to_str().unwrap();
    let (st, p) = srv
        .call(
            "GET",
            &format!("/api/v1/predictions/{request}"),
            Some(&t),
            Value::Null,
        )
        .await;
    assert_eq!(st, 200, "{p}");
    assert_eq!(s(&p["run"]["deployment_id"]), b, "{p}");
    let (st, e) = srv
        .call("GET", "/api/v1/endpoints/churn", Some(&t), Value::Null)
        .await;
    assert_eq!(st, 200);
    assert_eq!(e["history"].as_array().unwrap().len(), 8);
    assert_eq!(s(&e["deployment_id"]), b);

    let (st, _) = srv
        .call(
            "DELETE",
            "/api/v1/endpoints/churn",
            Some(&t),
            json!({"reason": "retired"}),
        )
        .await;
    assert_eq!(st, 200);
    let (st, _, e) = score(
        &srv,
        "churn",
        json!({"fields": wine["fields"], "rows": wine["rows"]}),
    )
    .await;
    assert_eq!((st, s(&e["code"]).as_str()), (404, "deployment_not_found"));
    let (st, e) = srv
        .call(
            "DELETE",
            "/api/v1/endpoints/churn",
            Some(&t),
            json!({"reason": "again"}),
        )
        .await;
    assert_eq!(
        (st, e["code"].as_str().unwrap_or_default()),
        (404, "endpoint_not_found"),
        "{e}"
    );
}

/// A stored input table holds `table`'s fields, and each of its cells parses to the float the
/// same cell of `table` parses to.
fn assert_same_values(stored: &[u8], table: &Value) {
    let (fields, cells) = provenant::runtime::typed::read(stored).unwrap();
    assert_eq!(json!(fields), table["fields"]);
    let rows = table["rows"].as_array().unwrap();
    assert_eq!(cells.len(), rows.len());
    for (r, row) in rows.iter().enumerate() {
        for (c, cell) in row.as_array().unwrap().iter().enumerate() {
            let want: f32 = s(cell).trim().parse().unwrap();
            let got: f32 = cells.cell(r, c).parse().unwrap();
            assert_eq!(got.to_bits(), want.to_bits(), "row {r} column {c}");
        }
    }
}
