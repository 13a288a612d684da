//! The registry over real HTTP: the full story, the authorization matrix, and bad inputs.

mod common;

use std::collections::BTreeSet;

use common::{Server, TEST_MAX_ARTIFACT, create_user, fixture, s, score};
use provenant::domain::RegistryEvent;
use provenant::log::{GENESIS_EVENT, ROTATION_EVENT};
use provenant::projections::registry::fold;
use serde_json::{Value, json};

fn columns(schema: &Value) -> Vec<(String, String)> {
    schema
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (s(&c["name"]), s(&c["type"])))
        .collect()
}

/// Checks every stored payload against `schemas/<event_type>.json`; answers the types seen.
fn validate_payloads(srv: &Server) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for e in srv.ledger.read_all(0, usize::MAX).unwrap() {
        let u = &e.unsigned;
        let text = std::fs::read_to_string(format!("schemas/{}.json", u.event_type))
            .unwrap_or_else(|_| panic!("no schema for {}", u.event_type));
        let schema: Value = serde_json::from_str(&text).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&u.payload)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "{} at {}: {errors:?}",
            u.event_type,
            u.position
        );
        seen.insert(u.event_type.clone());
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_full_registry_story() {
    let srv = Server::start().await;
    let root = srv.admin_token.clone();
    let (alice, alice_t) = create_user(&srv, "alice", json!([])).await;
    let (bob, bob_t) = create_user(&srv, "bob", json!([])).await;
    let (carol, carol_t) = create_user(&srv, "carol", json!([])).await;
    let (_aud, aud_t) = create_user(&srv, "audrey", json!(["auditor"])).await;
    let (mallory, mallory_t) = create_user(&srv, "mallory", json!([])).await;

    // A project, shared and re-shared; every mutation answers its events' positions and hashes.
    let (st, p) = srv
        .call(
            "POST",
            "/api/v1/projects",
            Some(&alice_t),
            json!({"name": "Wine quality", "description": "red wines"}),
        )
        .await;
    assert_eq!(st, 201, "{p}");
    let pid = s(&p["data"]["project_id"]);
    let ev = &p["events"][0];
    assert_eq!(
        (s(&ev["event_type"]), ev["hash"].as_str().map(str::len)),
        ("ProjectCreated".into(), Some(64))
    );
    let stored = srv
        .ledger
        .event(ev["position"].as_u64().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(stored.hash.to_hex(), s(&ev["hash"]));
    let project = format!("/api/v1/projects/{pid}");
    for (user, role) in [
        (&bob, "editor"),
        (&carol, "editor"),
        (&carol, "viewer"),
        (&mallory, "viewer"),
    ] {
        let (st, r) = srv
            .call(
                "PUT",
                &format!("{project}/members/{user}"),
                Some(&alice_t),
                json!({"role": role}),
            )
            .await;
        assert_eq!(st, 200, "{r}");
    }
    let (st, _) = srv
        .call(
            "DELETE",
            &format!("{project}/members/{mallory}"),
            Some(&alice_t),
            Value::Null,
        )
        .await;
    assert_eq!(st, 200);
    let (st, r) = srv
        .call(
            "DELETE",
            &format!("{project}/members/{alice}"),
            Some(&alice_t),
            Value::Null,
        )
        .await;
    assert_eq!(
        (st, s(&r["code"])),
        (409, "conflict".into()),
        "the last owner stays"
    );
    let (st, _) = srv
        .call(
            "PATCH",
            &project,
            Some(&bob_t),
            json!({"description": "red wines, 3 cultivars"}),
        )
        .await;
    assert_eq!(st, 200);
    let (st, _) = srv
        .call(
            "POST",
            &format!("{project}/comments"),
            Some(&carol_t),
            json!({"text": "Please add the data sheet."}),
        )
        .await;
    assert_eq!(st, 201);

    // Experiments from real artifacts; the processor proposes their schemas.
    let (st, x1) = srv
        .import(&bob_t, &pid, json!({"display_name": "wine logistic", "tags": ["baseline"], "parameters": {"target_column": "cultivar"},
            "metadata": {"source_model_version": {"type": "string", "value": "7"}, "trained_rows": {"type": "int64", "value": 178}},
            "artifacts": [{"file": "wine_classifier.onnx", "type": "onnx"}]}), vec![("wine_classifier.onnx", fixture("wine_classifier.onnx"))])
        .await;
    assert_eq!(st, 201, "{x1}");
    let x1 = &x1["data"];
    let wine_columns = [
        "alcohol",
        "malic_acid",
        "ash",
        "alcalinity_of_ash",
        "magnesium",
        "total_phenols",
        "flavanoids",
        "nonflavanoid_phenols",
        "proanthocyanins",
        "color_intensity",
        "hue",
        "od280_od315_of_diluted_wines",
        "proline",
    ];
    let expected_inputs: Vec<(String, String)> = wine_columns
        .iter()
        .map(|c| (c.to_string(), "Float32".into()))
        .collect();
    assert_eq!(
        columns(&x1["metadata"]["input_schema"]["value"]),
        expected_inputs
    );
    assert_eq!(
        columns(&x1["metadata"]["output_schema"]["value"]),
        [
            ("label", "Int64"),
            ("probabilities.0", "Float32"),
            ("probabilities.1", "Float32"),
            ("probabilities.2", "Float32")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let ing = &x1["artifacts"][0]["ingestion"];
    assert_eq!(
        (ing["deployable"].as_bool(), s(&ing["model_type"])),
        (Some(true), "onnx".into())
    );
    assert_eq!(
        (
            s(&ing["details"]["producer"]),
            ing["details"]["opsets"]["ai.onnx"].as_u64()
        ),
        ("skl2onnx".into(), Some(17))
    );
    assert_eq!(
        s(&x1["artifacts"][0]["blob_hash"]),
        blake3::hash(&fixture("wine_classifier.onnx"))
            .to_hex()
            .to_string()
    );
    let x1_id = s(&x1["experiment_id"]);

    let (st, x2) = srv
        .import(&bob_t, &pid, json!({"display_name": "wine mlflow", "artifacts": [{"file": "wine_mlflow.zip", "type": "python/mlflow"}]}), vec![("wine_mlflow.zip", fixture("wine_mlflow.zip"))])
        .await;
    assert_eq!(st, 201, "{x2}");
    let x2 = &x2["data"];
    assert_eq!(
        columns(&x2["metadata"]["input_schema"]["value"]),
        expected_inputs
    );
    assert_eq!(
        columns(&x2["metadata"]["output_schema"]["value"]),
        ["class.class_0", "class.class_1", "class.class_2"]
            .map(|c| (c.to_string(), "Float32".to_string()))
    );
    let ing = &x2["artifacts"][0]["ingestion"];
    assert_eq!(
        (ing["deployable"].as_bool(), s(&ing["model_type"])),
        (Some(true), "onnx".into())
    );
    assert_eq!(s(&ing["details"]["schema_source"]), "mlflow_signature");
    let inner =
        provenant::log::envelope::Digest::from_hex(ing["model_blob"].as_str().unwrap()).unwrap();
    assert!(
        srv.state.blobs.contains(&inner),
        "the MLflow zip's ONNX model is a blob of its own"
    );
    let x2_id = s(&x2["experiment_id"]);

    let (st, x3) = srv
        .import(&bob_t, &pid, json!({"display_name": "diabetes forest", "artifacts": [{"file": "forest.onnx", "type": "onnx"}]}), vec![("forest.onnx", fixture("diabetes_forest.onnx"))])
        .await;
    assert_eq!(st, 201, "{x3}");
    let x3 = &x3["data"];
    let diabetes = [
        "age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6",
    ];
    assert_eq!(
        columns(&x3["metadata"]["input_schema"]["value"]),
        diabetes.map(|c| (c.to_string(), "Float32".to_string()))
    );
    assert_eq!(
        columns(&x3["metadata"]["output_schema"]["value"]),
        [("variable".to_string(), "Float32".to_string())]
    );
    let x3_id = s(&x3["experiment_id"]);

    let (st, x4) = srv
        .import(&bob_t, &pid, json!({"display_name": "legacy mojo", "artifacts": [{"file": "pipeline.mojo", "type": "dai/mojo_pipeline"}]}), vec![("pipeline.mojo", b"PK not really a mojo".to_vec())])
        .await;
    assert_eq!(st, 201, "{x4}");
    let ing = &x4["data"]["artifacts"][0]["ingestion"];
    assert_eq!(ing["deployable"].as_bool(), Some(false));
    assert!(s(&ing["reason"]).contains("dai/mojo_pipeline"));
    let x4_id = s(&x4["data"]["experiment_id"]);

    // Experiment housekeeping.
    let xp = |id: &str| format!("/api/v1/experiments/{id}");
    for (m, path, body) in [
        (
            "PATCH",
            format!("{}/metadata", xp(&x3_id)),
            json!({"entries": {"owner_team": {"type": "string", "value": "clinical"}}}),
        ),
        (
            "POST",
            format!("{}/tags", xp(&x3_id)),
            json!({"tag": "regression"}),
        ),
        (
            "POST",
            format!("{}/tags", xp(&x3_id)),
            json!({"tag": "tmp"}),
        ),
        ("DELETE", format!("{}/tags/tmp", xp(&x3_id)), Value::Null),
        ("DELETE", xp(&x4_id), json!({"reason": "cannot run here"})),
        ("POST", format!("{}/restore", xp(&x4_id)), Value::Null),
        ("DELETE", xp(&x4_id), Value::Null),
    ] {
        let (st, r) = srv.call(m, &path, Some(&bob_t), body).await;
        assert!(st == 200 || st == 201, "{m} {path}: {st} {r}");
    }
    let (_, r) = srv
        .call(
            "POST",
            &format!("{}/comments", xp(&x1_id)),
            Some(&aud_t),
            json!({"text": "Audit: training data lineage checked."}),
        )
        .await;
    assert!(r["data"]["comment_id"].is_string(), "auditors comment: {r}");
    let (_, list) = srv
        .call(
            "GET",
            &format!("{project}/experiments?tag=baseline"),
            Some(&carol_t),
            Value::Null,
        )
        .await;
    assert_eq!(
        (
            list["total"].as_u64(),
            s(&list["items"][0]["experiment_id"])
        ),
        (Some(1), x1_id.clone())
    );
    let (_, list) = srv
        .call(
            "GET",
            &format!("{project}/experiments?limit=2"),
            Some(&carol_t),
            Value::Null,
        )
        .await;
    assert_eq!(
        (list["total"].as_u64(), list["next_offset"].as_u64()),
        (Some(3), Some(2)),
        "the deleted one is hidden"
    );
    let (_, list) = srv
        .call(
            "GET",
            &format!("{project}/experiments?include_deleted=true&offset=2"),
            Some(&carol_t),
            Value::Null,
        )
        .await;
    assert_eq!(
        (
            list["items"].as_array().map(Vec::len),
            list["next_offset"].clone()
        ),
        (Some(2), Value::Null)
    );

    // The registered model: v1 and v2, staged, aliased, commented.
    let (st, m) = srv
        .call(
            "POST",
            &format!("{project}/models"),
            Some(&bob_t),
            json!({"name": "wine-classifier"}),
        )
        .await;
    assert_eq!(st, 201, "{m}");
    let model = format!("/api/v1/models/{}", s(&m["data"]["model_id"]));
    for (x, note) in [(&x1_id, "first model"), (&x2_id, "MLflow packaging")] {
        let (st, v) = srv
            .call(
                "POST",
                &format!("{model}/versions"),
                Some(&bob_t),
                json!({"experiment_id": x, "annotation": note}),
            )
            .await;
        assert_eq!(st, 201, "{v}");
    }
    let (st, r) = srv
        .call(
            "POST",
            &format!("{model}/versions"),
            Some(&bob_t),
            json!({"experiment_id": x1_id}),
        )
        .await;
    assert_eq!((st, s(&r["code"])), (409, "already_exists".into()));
    for (stage, why) in [
        ("Staging", "passed offline validation"),
        ("Production", "approved by the model risk board"),
    ] {
        let (st, r) = srv
            .call(
                "PUT",
                &format!("{model}/versions/1/stage"),
                Some(&bob_t),
                json!({"stage": stage, "annotation": why}),
            )
            .await;
        assert_eq!(st, 200, "{r}");
    }
    let (st, _) = srv
        .call(
            "PUT",
            &format!("{model}/aliases/champion"),
            Some(&bob_t),
            json!({"version": 1, "annotation": "current best"}),
        )
        .await;
    assert_eq!(st, 200);
    let (st, _) = srv
        .call(
            "PUT",
            &format!("{model}/aliases/challenger"),
            Some(&bob_t),
            json!({"version": 2, "annotation": "shadow it"}),
        )
        .await;
    assert_eq!(st, 200);
    let (st, _) = srv
        .call(
            "DELETE",
            &format!("{model}/aliases/challenger"),
            Some(&bob_t),
            json!({"annotation": "shadow ended"}),
        )
        .await;
    assert_eq!(st, 200);
    let (st, _) = srv
        .call(
            "POST",
            &format!("{model}/versions/2/comments"),
            Some(&carol_t),
            json!({"text": "Same model, MLflow packaging."}),
        )
        .await;
    assert_eq!(st, 201);
    let (_, prod) = srv
        .call(
            "GET",
            &format!("{model}/versions?stage=Production"),
            Some(&carol_t),
            Value::Null,
        )
        .await;
    assert_eq!(
        (prod["total"].as_u64(), prod["items"][0]["version"].as_u64()),
        (Some(1), Some(1))
    );
    let (_, v1) = srv
        .call(
            "GET",
            &format!("{model}/versions/1"),
            Some(&aud_t),
            Value::Null,
        )
        .await;
    assert_eq!(
        (
            v1["stage_history"].as_array().map(Vec::len),
            v1["aliases"].clone()
        ),
        (Some(2), json!(["champion"]))
    );
    let (st, _) = srv
        .call(
            "POST",
            &format!("{}/versions", model),
            Some(&bob_t),
            json!({"experiment_id": x3_id}),
        )
        .await;
    assert_eq!(st, 201);
    let (st, _) = srv
        .call(
            "DELETE",
            &format!("{model}/versions/3"),
            Some(&bob_t),
            json!({"annotation": "wrong model family"}),
        )
        .await;
    assert_eq!(st, 200);

    // Tokens and roles: a revoked token stops working at once.
    let (_, t) = srv
        .call(
            "POST",
            &format!("/api/v1/users/{mallory}/tokens"),
            Some(&mallory_t),
            json!({"name": "laptop", "expires_at": "2999-01-01T00:00:00Z"}),
        )
        .await;
    let laptop = s(&t["data"]["token"]);
    let laptop_id = s(&t["data"]["token_id"]);
    let (st, _) = srv
        .call("GET", "/api/v1/me", Some(&laptop), Value::Null)
        .await;
    assert_eq!(st, 200);
    let (st, _) = srv
        .call(
            "DELETE",
            &format!("/api/v1/users/{mallory}/tokens/{laptop_id}"),
            Some(&mallory_t),
            json!({"reason": "lost"}),
        )
        .await;
    assert_eq!(st, 200);
    let (st, r) = srv
        .call("GET", "/api/v1/me", Some(&laptop), Value::Null)
        .await;
    assert_eq!((st, s(&r["code"])), (401, "token_revoked".into()));
    let (st, _) = srv
        .call(
            "POST",
            &format!("/api/v1/users/{carol}/roles"),
            Some(&root),
            json!({"role": "auditor"}),
        )
        .await;
    assert_eq!(st, 200);
    let (st, _) = srv
        .call(
            "DELETE",
            &format!("/api/v1/users/{carol}/roles/auditor"),
            Some(&root),
            Value::Null,
        )
        .await;
    assert_eq!(st, 200);

    // Who sees what.
    let (_, mine) = srv
        .call("GET", "/api/v1/projects", Some(&mallory_t), Value::Null)
        .await;
    assert_eq!(mine["total"].as_u64(), Some(0));
    let (_, all) = srv
        .call(
            "GET",
            "/api/v1/projects?name=WINE",
            Some(&aud_t),
            Value::Null,
        )
        .await;
    assert_eq!(all["total"].as_u64(), Some(1));

    // The project's events tab: every event of the project, its experiments and its model, in order.
    let (_, events) = srv
        .call(
            "GET",
            &format!("{project}/events?limit=500"),
            Some(&carol_t),
            Value::Null,
        )
        .await;
    let items = events["items"].as_array().unwrap();
    let positions: Vec<u64> = items
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(s(&items[0]["event_type"]), "ProjectCreated");
    assert!(
        items
            .iter()
            .all(|e| !s(&e["event_type"]).starts_with("User")
                && !s(&e["event_type"]).starts_with("ApiToken"))
    );
    assert_eq!(items.len() as u64, events["total"].as_u64().unwrap());

    // An API-managed runtime: created, deprecated, deleted; the experiment's compatible runtimes.
    let (st, r) = srv
        .call(
            "POST",
            "/api/v1/runtime-images",
            Some(&root),
            json!({"image_id": "custom-scorer", "name": "Custom"}),
        )
        .await;
    assert_eq!(st, 201, "{r}");
    let (st, r) = srv
        .call(
            "POST",
            "/api/v1/runtime-images/custom-scorer:deprecate",
            Some(&root),
            json!({"reason": "superseded"}),
        )
        .await;
    assert_eq!(
        (st, s(&r["data"]["effective"])),
        (200, "DEPRECATED".into()),
        "{r}"
    );
    let (st, r) = srv
        .call(
            "DELETE",
            "/api/v1/runtime-images/custom-scorer",
            Some(&root),
            json!({"reason": "unused"}),
        )
        .await;
    assert_eq!(st, 200, "{r}");
    let (_, fits) = srv
        .call(
            "GET",
            &format!("{}/runtimes", xp(&x1_id)),
            Some(&carol_t),
            Value::Null,
        )
        .await;
    assert_eq!(s(&fits[0]["model_type"]), "onnx");
    assert_eq!(s(&fits[0]["runtimes"][0]["runtime_id"]), "onnx-runtime");
    let (_, fits) = srv
        .call(
            "GET",
            &format!("{}/runtimes", xp(&x4_id)),
            Some(&carol_t),
            Value::Null,
        )
        .await;
    assert_eq!(
        (s(&fits[0]["model_type"]), fits[0]["deployable"].as_bool()),
        ("dai_mojo_pipeline".into(), Some(false))
    );
    assert_eq!(fits[0]["runtimes"][0]["available"].as_bool(), Some(false));

    // Deployed and scored once, then stopped: the deployment and inference run events.
    let (st, d) = srv.call("POST", "/api/v1/deployments", Some(&bob_t), json!({"model_id": model.trim_start_matches("/api/v1/models/"), "version": 1, "environment": "DEV", "retention": {"mode": "full", "days": 0}})).await;
    assert_eq!(st, 201, "{d}");
    let dep = s(&d["data"]["deployment_id"]);
    let r = srv
        .http
        .get(format!("{}/{dep}/model/sample_request", srv.base))
        .bearer_auth(&bob_t)
        .send()
        .await
        .unwrap();
    let sample: Value = r.json().await.unwrap();
    let r = srv
        .http
        .post(format!("{}/{dep}/model/score", srv.base))
        .bearer_auth(&carol_t)
        .json(&sample)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r_id = r.headers()["provenant-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    // A batch job over two copies of the sample row: one run of two rows.
    let fields: Vec<String> = serde_json::from_value(sample["fields"].clone()).unwrap();
    let row: Vec<String> = serde_json::from_value(sample["rows"][0].clone()).unwrap();
    let file = format!(
        "{}\n{}\n{}\n",
        fields.join(","),
        row.join(","),
        row.join(",")
    );
    let r = srv
        .http
        .post(format!("{}/api/v1/deployments/{dep}/jobs", srv.base))
        .bearer_auth(&bob_t)
        .header("content-type", "text/csv")
        .body(file.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let job = s(&r.json::<Value>().await.unwrap()["data"]["job_id"]);
    let job_ended = async {
        loop {
            let (_, j) = srv
                .call(
                    "GET",
                    &format!("/api/v1/jobs/{job}"),
                    Some(&carol_t),
                    Value::Null,
                )
                .await;
            if j["state"] != "Running" {
                return j;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    let j = job_ended.await;
    assert_eq!(
        (s(&j["state"]), &j["scored_rows"]),
        ("Completed".into(), &json!(2)),
        "{j}"
    );
    // The version's reference data (the same two rows), and the deployment's drift from it:
    // both runs scored the sample row, so nothing drifts.
    let r = srv
        .http
        .put(format!("{}{model}/versions/1/reference", srv.base))
        .bearer_auth(&bob_t)
        .header("content-type", "text/csv")
        .body(file)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (st, drift) = srv
        .call(
            "GET",
            &format!("/api/v1/deployments/{dep}/drift"),
            Some(&carol_t),
            Value::Null,
        )
        .await;
    assert_eq!(st, 200, "{drift}");
    assert_eq!(
        (
            &drift["runs"],
            &drift["rows"],
            &drift["inputs"]["dataset_drift"]
        ),
        (&json!(2), &json!(3), &json!(false)),
        "{drift}"
    );
    assert_eq!(
        drift["inputs"]["columns"].as_array().unwrap().len(),
        fields.len()
    );
    assert_eq!(drift["predictions"]["dataset_drift"], false, "{drift}");
    // Its own drift thresholds: the defaults but for the dataset share.
    let path = format!("/api/v1/deployments/{dep}/drift-thresholds");
    let (st, th) = srv
        .call("PUT", &path, Some(&bob_t), json!({"dataset_share": 0.6}))
        .await;
    assert_eq!(st, 200, "{th}");
    // The scored request's actual, and the accuracy it gives.
    let path = format!("/api/v1/deployments/{dep}/actuals");
    let actual = json!({"actuals": [{"request_id": r_id, "row": 0, "actual": "1"}]});
    let (st, a) = srv.call("POST", &path, Some(&bob_t), actual).await;
    assert_eq!(st, 200, "{a}");
    let path = format!("/api/v1/deployments/{dep}/accuracy");
    let (st, a) = srv.call("GET", &path, Some(&carol_t), Value::Null).await;
    assert_eq!((st, &a["total"]["rows"]), (200, &json!(1)), "{a}");
    // An alert policy; its latency limit raised, then lifted, which resolves the alert.
    for (limit, event) in [(0.001, "AlertRaised"), (1e6, "AlertResolved")] {
        let policy = json!({"window_minutes": 10, "latency_p95_ms": limit});
        let path = format!("/api/v1/deployments/{dep}/alert-policy");
        let (st, p) = srv.call("PUT", &path, Some(&bob_t), policy).await;
        assert_eq!(st, 200, "{p}");
        let path = format!("/api/v1/deployments/{dep}/alerts:evaluate");
        let (st, e) = srv.call("POST", &path, Some(&bob_t), Value::Null).await;
        assert_eq!(
            (st, &e["written"]["events"][0]["event_type"]),
            (200, &json!(event)),
            "{e}"
        );
    }
    // An endpoint on it, then removed.
    for (method, body) in [
        ("PUT", json!({"deployment_id": dep, "reason": "stable URL"})),
        ("DELETE", json!({"reason": "story over"})),
    ] {
        let (st, e) = srv
            .call(method, "/api/v1/endpoints/story", Some(&bob_t), body)
            .await;
        assert_eq!(st, 200, "{e}");
    }
    let (st, _) = srv
        .call(
            "POST",
            "/api/v1/runtime-images/onnx-scorer/versions",
            Some(&root),
            json!({"version": "0.2.0-ort1.32.0", "scorer_version": "0.2.0", "onnxruntime_version": "1.32.0"}),
        )
        .await;
    assert_eq!(st, 201);
    // Upgraded in place onto the newer image, then rolled back to where it started.
    let created = d["events"][0]["position"].as_u64().unwrap();
    for (verb, body) in [
        ("upgrade", json!({"reason": "monthly image"})),
        (
            "rollback",
            json!({"position": created, "reason": "back to the tested image"}),
        ),
    ] {
        let (st, u) = srv
            .call(
                "POST",
                &format!("/api/v1/deployments/{dep}:{verb}"),
                Some(&bob_t),
                body,
            )
            .await;
        assert_eq!(
            (st, u["data"]["update"]["outcome"].as_str()),
            (200, Some("Applied")),
            "{u}"
        );
    }
    let (st, _) = srv
        .call(
            "POST",
            &format!("/api/v1/deployments/{dep}:stop"),
            Some(&bob_t),
            json!({"reason": "story over"}),
        )
        .await;
    assert_eq!(st, 200);
    let (st, r) = srv
        .call(
            "POST",
            &format!("/api/v1/deployments/{dep}:purge"),
            Some(&root),
            Value::Null,
        )
        .await;
    // The scored request's input and output, and the job's run's.
    assert_eq!((st, r["data"]["purged"].as_u64()), (200, Some(4)), "{r}");
    // Deleted for good: it was stopped already, so one event.
    let (st, r) = srv
        .call(
            "DELETE",
            &format!("/api/v1/deployments/{dep}"),
            Some(&bob_t),
            json!({"reason": "the story is over"}),
        )
        .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["events"].as_array().map(Vec::len), Some(1));

    // Every event type was appended, and each stored payload matches its schema.
    srv.ledger.rotate_key("system:test").await.unwrap();
    let seen = validate_payloads(&srv);
    let all_types: BTreeSet<String> = RegistryEvent::TYPES
        .iter()
        .chain(&[GENESIS_EVENT, ROTATION_EVENT])
        .map(|t| t.to_string())
        .collect();
    assert_eq!(seen, all_types);

    // Rebuilt from position 0, the registry equals the one the projection kept current.
    srv.state.registry.wait_for(srv.size()).await.unwrap();
    let rebuilt = fold(srv.ledger.read_all(0, usize::MAX).unwrap()).unwrap();
    assert_eq!(rebuilt, *srv.state.registry.read());
}

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Who {
    Admin,
    Auditor,
    Owner,
    Editor,
    Viewer,
    Outsider,
    Anonymous,
    Revoked,
}

/// Who a route lets through.
#[derive(Debug, Clone, Copy)]
enum Rule {
    Anyone,
    AdminOnly,
    ReadsAll,
    /// A route about the owner's own user record.
    OwnerSelf,
    OwnerSelfOrReadsAll,
    ProjectRead,
    ProjectEdit,
    ProjectOwner,
    NotAuditor,
}

fn allowed(who: Who, rule: Rule) -> bool {
    use Who::*;
    let reader = matches!(who, Admin | Auditor | Owner | Editor | Viewer);
    match rule {
        Rule::Anyone => !matches!(who, Anonymous | Revoked),
        Rule::AdminOnly => who == Admin,
        Rule::ReadsAll => matches!(who, Admin | Auditor),
        Rule::OwnerSelf => matches!(who, Admin | Owner),
        Rule::OwnerSelfOrReadsAll => matches!(who, Admin | Auditor | Owner),
        Rule::ProjectRead => reader,
        Rule::ProjectEdit => matches!(who, Admin | Owner | Editor),
        Rule::ProjectOwner => matches!(who, Admin | Owner),
        Rule::NotAuditor => matches!(who, Admin | Owner | Editor | Viewer | Outsider),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_matrix_every_route_and_role() {
    let srv = Server::start().await;
    let (owner, owner_t) = create_user(&srv, "olga", json!([])).await;
    let (editor, editor_t) = create_user(&srv, "ed", json!([])).await;
    let (viewer, viewer_t) = create_user(&srv, "vic", json!([])).await;
    let (_, outsider_t) = create_user(&srv, "otto", json!([])).await;
    let (_, auditor_t) = create_user(&srv, "audrey", json!(["auditor"])).await;
    let (revoked, revoked_t) = create_user(&srv, "rex", json!([])).await;
    let (spare, _) = create_user(&srv, "spare", json!([])).await;
    let (_, rt) = srv
        .call(
            "GET",
            &format!("/api/v1/users/{revoked}"),
            Some(&srv.admin_token),
            Value::Null,
        )
        .await;
    let rex_token = rt["tokens"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    srv.call(
        "DELETE",
        &format!("/api/v1/users/{revoked}/tokens/{rex_token}"),
        Some(&srv.admin_token),
        Value::Null,
    )
    .await;

    let pid = srv.project(&owner_t, "matrix").await;
    for (u, role) in [(&editor, "editor"), (&viewer, "viewer")] {
        srv.call(
            "PUT",
            &format!("/api/v1/projects/{pid}/members/{u}"),
            Some(&owner_t),
            json!({"role": role}),
        )
        .await;
    }
    let import = |name: &'static str| json!({"display_name": name, "artifacts": [{"file": "m.onnx", "type": "onnx"}]});
    let (_, x) = srv
        .import(
            &owner_t,
            &pid,
            import("x"),
            vec![("m.onnx", fixture("wine_classifier.onnx"))],
        )
        .await;
    let xid = s(&x["data"]["experiment_id"]);
    let (_, x2) = srv
        .import(
            &owner_t,
            &pid,
            import("spare"),
            vec![("m.onnx", fixture("wine_classifier.onnx"))],
        )
        .await;
    let x2id = s(&x2["data"]["experiment_id"]);
    let (_, m) = srv
        .call(
            "POST",
            &format!("/api/v1/projects/{pid}/models"),
            Some(&owner_t),
            json!({"name": "m"}),
        )
        .await;
    let mid = s(&m["data"]["model_id"]);
    srv.call(
        "POST",
        &format!("/api/v1/models/{mid}/versions"),
        Some(&owner_t),
        json!({"experiment_id": xid}),
    )
    .await;
    let (_, t) = srv
        .call(
            "POST",
            &format!("/api/v1/users/{owner}/tokens"),
            Some(&owner_t),
            json!({"name": "to revoke"}),
        )
        .await;
    let owner_token2 = s(&t["data"]["token_id"]);
    let event_id = srv.ledger.event(0).unwrap().unwrap().unsigned.event_id;
    let (_, d) = srv
        .call(
            "POST",
            "/api/v1/deployments",
            Some(&owner_t),
            json!({"model_id": mid, "version": 1, "environment": "DEV"}),
        )
        .await;
    let dep = s(&d["data"]["deployment_id"]);
    // One scored request, for the prediction routes.
    let (_, sample) = srv
        .call(
            "GET",
            &format!("/{dep}/model/sample_request"),
            Some(&srv.admin_token),
            Value::Null,
        )
        .await;
    let (st, receipt, body) = score(&srv, &dep, sample.clone()).await;
    assert_eq!(st, 200, "{body}");
    let rid = receipt["provenant-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    // One ended batch job, for the job routes.
    let fields: Vec<String> = serde_json::from_value(sample["fields"].clone()).unwrap();
    let row: Vec<String> = serde_json::from_value(sample["rows"][0].clone()).unwrap();
    let root = srv.state.registry.read().usernames["root"];
    let started = srv
        .state
        .start_job(
            root,
            dep.parse().unwrap(),
            format!("{}\n{}\n", fields.join(","), row.join(",")).into_bytes(),
            provenant::domain::job::FileFormat::Csv,
            &provenant::api::jobs::JobOptions {
                input_format: None,
                output_format: None,
                batch_rows: None,
                max_failed_rows: None,
            },
        )
        .await
        .unwrap();
    let job = started.job_id;
    srv.state.run_job(started, &|_| {}).await.unwrap();

    let (p, x, x2, m) = (
        format!("/api/v1/projects/{pid}"),
        format!("/api/v1/experiments/{xid}"),
        format!("/api/v1/experiments/{x2id}"),
        format!("/api/v1/models/{mid}"),
    );
    let n = Value::Null;
    use Rule::*;
    let routes: Vec<(&str, String, Value, Rule)> = vec![
        ("GET", "/api/v1/ledger/head".into(), n.clone(), Anyone),
        ("GET", "/api/v1/ledger/keys".into(), n.clone(), Anyone),
        ("GET", "/api/v1/ledger/checkpoint".into(), n.clone(), Anyone),
        (
            "GET",
            "/api/v1/ledger/proofs/inclusion?position=0".into(),
            n.clone(),
            Anyone,
        ),
        (
            "GET",
            "/api/v1/ledger/proofs/consistency?from=1".into(),
            n.clone(),
            Anyone,
        ),
        ("GET", "/api/v1/ledger/events".into(), n.clone(), ReadsAll),
        ("GET", "/api/v1/ledger/events/0".into(), n.clone(), ReadsAll),
        (
            "GET",
            format!("/api/v1/ledger/events/by-id/{event_id}"),
            n.clone(),
            ReadsAll,
        ),
        (
            "GET",
            "/api/v1/ledger/streams/ledger".into(),
            n.clone(),
            ReadsAll,
        ),
        ("GET", "/api/v1/me".into(), n.clone(), Anyone),
        (
            "POST",
            "/api/v1/users".into(),
            json!({"username": "newbie"}),
            AdminOnly,
        ),
        ("GET", "/api/v1/users".into(), n.clone(), ReadsAll),
        (
            "GET",
            format!("/api/v1/users/{owner}"),
            n.clone(),
            OwnerSelfOrReadsAll,
        ),
        (
            "POST",
            format!("/api/v1/users/{spare}/roles"),
            json!({"role": "auditor"}),
            AdminOnly,
        ),
        (
            "DELETE",
            format!("/api/v1/users/{spare}/roles/auditor"),
            n.clone(),
            AdminOnly,
        ),
        (
            "POST",
            format!("/api/v1/users/{owner}/tokens"),
            json!({"name": "ci"}),
            OwnerSelf,
        ),
        (
            "DELETE",
            format!("/api/v1/users/{owner}/tokens/{owner_token2}"),
            n.clone(),
            OwnerSelf,
        ),
        (
            "POST",
            "/api/v1/projects".into(),
            json!({"name": "another"}),
            NotAuditor,
        ),
        ("GET", "/api/v1/projects".into(), n.clone(), Anyone),
        ("GET", p.clone(), n.clone(), ProjectRead),
        (
            "PATCH",
            p.clone(),
            json!({"description": "changed"}),
            ProjectEdit,
        ),
        (
            "PUT",
            format!("{p}/members/{spare}"),
            json!({"role": "viewer"}),
            ProjectOwner,
        ),
        (
            "DELETE",
            format!("{p}/members/{spare}"),
            n.clone(),
            ProjectOwner,
        ),
        (
            "POST",
            format!("{p}/comments"),
            json!({"text": "hi"}),
            ProjectRead,
        ),
        ("GET", format!("{p}/events"), n.clone(), ProjectRead),
        ("POST", format!("{p}/experiments"), n.clone(), ProjectEdit),
        ("GET", format!("{p}/experiments"), n.clone(), ProjectRead),
        ("GET", x.clone(), n.clone(), ProjectRead),
        (
            "PATCH",
            format!("{x}/metadata"),
            json!({"entries": {"k": {"type": "bool", "value": true}}}),
            ProjectEdit,
        ),
        (
            "POST",
            format!("{x}/tags"),
            json!({"tag": "t"}),
            ProjectEdit,
        ),
        ("DELETE", format!("{x}/tags/t"), n.clone(), ProjectEdit),
        (
            "POST",
            format!("{x}/comments"),
            json!({"text": "hi"}),
            ProjectRead,
        ),
        ("DELETE", x2.clone(), n.clone(), ProjectEdit),
        ("POST", format!("{x2}/restore"), n.clone(), ProjectEdit),
        (
            "POST",
            format!("{p}/models"),
            json!({"name": "m2"}),
            ProjectEdit,
        ),
        ("GET", format!("{p}/models"), n.clone(), ProjectRead),
        ("GET", m.clone(), n.clone(), ProjectRead),
        (
            "POST",
            format!("{m}/versions"),
            json!({"experiment_id": x2id}),
            ProjectEdit,
        ),
        ("GET", format!("{m}/versions"), n.clone(), ProjectRead),
        ("GET", format!("{m}/versions/1"), n.clone(), ProjectRead),
        (
            "PUT",
            format!("{m}/versions/1/stage"),
            json!({"stage": "Staging", "annotation": "why"}),
            ProjectEdit,
        ),
        (
            "PUT",
            format!("{m}/aliases/a"),
            json!({"version": 1, "annotation": "why"}),
            ProjectEdit,
        ),
        (
            "DELETE",
            format!("{m}/aliases/a"),
            json!({"annotation": "why"}),
            ProjectEdit,
        ),
        (
            "POST",
            format!("{m}/versions/1/comments"),
            json!({"text": "hi"}),
            ProjectRead,
        ),
        (
            "DELETE",
            format!("{m}/versions/1"),
            json!({"annotation": "why"}),
            ProjectEdit,
        ),
        ("GET", "/api/v1/runtime-images".into(), n.clone(), Anyone),
        (
            "POST",
            "/api/v1/runtime-images".into(),
            json!({"image_id": "mine", "name": "Mine"}),
            AdminOnly,
        ),
        (
            "GET",
            "/api/v1/runtime-images/onnx-scorer".into(),
            n.clone(),
            Anyone,
        ),
        (
            "PATCH",
            "/api/v1/runtime-images/mine".into(),
            json!({"name": "Mine 2"}),
            AdminOnly,
        ),
        (
            "POST",
            "/api/v1/runtime-images/onnx-scorer:deprecate".into(),
            json!({"reason": "why"}),
            AdminOnly,
        ),
        (
            "GET",
            "/api/v1/runtime-images/onnx-scorer/versions".into(),
            n.clone(),
            Anyone,
        ),
        (
            "POST",
            "/api/v1/runtime-images/mine/versions".into(),
            json!({"version": "1", "scorer_version": "1"}),
            AdminOnly,
        ),
        (
            "GET",
            "/api/v1/runtime-images/onnx-scorer/versions/0.1.0-ort1.32.0".into(),
            n.clone(),
            Anyone,
        ),
        (
            "PATCH",
            "/api/v1/runtime-images/mine/versions/1".into(),
            json!({"scorer_version": "2"}),
            AdminOnly,
        ),
        (
            "POST",
            "/api/v1/runtime-images/onnx-scorer/versions/0.1.0-ort1.32.0:deprecate".into(),
            json!({"reason": "why"}),
            AdminOnly,
        ),
        (
            "DELETE",
            "/api/v1/runtime-images/mine/versions/1".into(),
            json!({"reason": "why"}),
            AdminOnly,
        ),
        ("GET", "/api/v1/runtimes".into(), n.clone(), Anyone),
        (
            "POST",
            "/api/v1/runtimes".into(),
            json!({"runtime_id": "mine", "name": "M", "image_id": "onnx-scorer", "model_types": ["onnx"]}),
            AdminOnly,
        ),
        (
            "GET",
            "/api/v1/runtimes/onnx-runtime".into(),
            n.clone(),
            Anyone,
        ),
        (
            "PATCH",
            "/api/v1/runtimes/mine".into(),
            json!({"name": "M2", "image_id": "onnx-scorer", "model_types": ["onnx"]}),
            AdminOnly,
        ),
        (
            "POST",
            "/api/v1/runtimes/onnx-runtime:deprecate".into(),
            json!({"reason": "why"}),
            AdminOnly,
        ),
        (
            "DELETE",
            "/api/v1/runtimes/mine".into(),
            json!({"reason": "why"}),
            AdminOnly,
        ),
        (
            "DELETE",
            "/api/v1/runtime-images/mine".into(),
            json!({"reason": "why"}),
            AdminOnly,
        ),
        ("GET", "/api/v1/runtime-catalog".into(), n.clone(), Anyone),
        ("GET", format!("{x}/runtimes"), n.clone(), ProjectRead),
        (
            "POST",
            "/api/v1/deployments".into(),
            json!({"model_id": mid, "version": 2, "environment": "DEV"}),
            ProjectEdit,
        ),
        ("GET", "/api/v1/deployments".into(), n.clone(), Anyone),
        (
            "GET",
            format!("/api/v1/deployments/{dep}"),
            n.clone(),
            ProjectRead,
        ),
        ("GET", "/api/v1/registry?at=3".into(), n.clone(), ReadsAll),
        (
            "POST",
            "/api/v1/exports".into(),
            json!({"format": "events_csv"}),
            ReadsAll,
        ),
        // Nobody's export: a 404 for everyone authenticated (tests/graphql.rs downloads one).
        (
            "GET",
            format!("/api/v1/exports/{}", uuid::Uuid::now_v7()),
            n.clone(),
            Anyone,
        ),
        (
            "GET",
            format!("{m}/versions/1/report"),
            n.clone(),
            ProjectRead,
        ),
        (
            "GET",
            format!("/api/v1/predictions/{rid}"),
            n.clone(),
            ProjectRead,
        ),
        (
            "POST",
            format!("/api/v1/predictions/{rid}:reproduce"),
            json!({}),
            ProjectRead,
        ),
        (
            "GET",
            format!("/api/v1/deployments/{dep}/metrics"),
            n.clone(),
            ProjectRead,
        ),
        (
            "GET",
            format!("/api/v1/deployments/{dep}/drift"),
            n.clone(),
            ProjectRead,
        ),
        (
            "PUT",
            format!("{m}/versions/1/reference"),
            json!({}),
            ProjectEdit,
        ),
        (
            "PUT",
            format!("/api/v1/deployments/{dep}/alert-policy"),
            json!({"window_minutes": 5, "latency_p95_ms": 1e6}),
            ProjectEdit,
        ),
        (
            "GET",
            format!("/api/v1/deployments/{dep}/alerts"),
            n.clone(),
            ProjectRead,
        ),
        (
            "PUT",
            format!("/api/v1/deployments/{dep}/drift-thresholds"),
            json!({}),
            ProjectEdit,
        ),
        (
            "POST",
            format!("/api/v1/deployments/{dep}/actuals"),
            json!({"actuals": [{"request_id": rid, "row": 0, "actual": "1"}]}),
            ProjectEdit,
        ),
        (
            "GET",
            format!("/api/v1/deployments/{dep}/accuracy"),
            n.clone(),
            ProjectRead,
        ),
        (
            "POST",
            format!("/api/v1/deployments/{dep}/alerts:evaluate"),
            n.clone(),
            ProjectEdit,
        ),
        ("GET", "/api/v1/endpoints".into(), n.clone(), Anyone),
        (
            "POST",
            format!("/api/v1/deployments/{dep}/jobs"),
            json!({}),
            ProjectEdit,
        ),
        ("GET", format!("/api/v1/jobs/{job}"), n.clone(), ProjectRead),
        (
            "GET",
            format!("/api/v1/jobs/{job}/output"),
            n.clone(),
            ProjectRead,
        ),
        (
            "POST",
            format!("/api/v1/jobs/{job}:cancel"),
            n.clone(),
            ProjectEdit,
        ),
        (
            "PUT",
            "/api/v1/endpoints/matrix".into(),
            json!({"deployment_id": dep, "reason": "why"}),
            ProjectEdit,
        ),
        (
            "GET",
            "/api/v1/endpoints/matrix".into(),
            n.clone(),
            ProjectRead,
        ),
        (
            "DELETE",
            "/api/v1/endpoints/matrix".into(),
            json!({"reason": "why"}),
            ProjectEdit,
        ),
        (
            "POST",
            format!("/api/v1/deployments/{dep}:stop"),
            json!({"reason": "why"}),
            ProjectEdit,
        ),
        ("GET", "/api/v1/environments".into(), n.clone(), Anyone),
        ("GET", "/api/v1/runtime-upgrades".into(), n.clone(), Anyone),
        // Each deployment's upgrade is judged on its own, inside the answer.
        (
            "POST",
            "/api/v1/runtime-upgrades".into(),
            json!({"deployment_ids": [dep], "reason": "why"}),
            Anyone,
        ),
        // Last: once deleted, the deployment refuses every change.
        (
            "DELETE",
            format!("/api/v1/deployments/{dep}"),
            json!({"reason": "why"}),
            ProjectEdit,
        ),
    ];

    // The matrix covers every documented route.
    let (_, doc) = srv
        .call("GET", "/api/v1/openapi.json", None, Value::Null)
        .await;
    let documented: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|ops| ops.as_object().unwrap().len())
        .sum();
    assert_eq!(
        routes.len(),
        documented,
        "one matrix row per documented operation"
    );

    let callers = [
        (Who::Anonymous, None),
        (Who::Revoked, Some(revoked_t.as_str())),
        (Who::Outsider, Some(outsider_t.as_str())),
        (Who::Viewer, Some(viewer_t.as_str())),
        (Who::Auditor, Some(auditor_t.as_str())),
        (Who::Editor, Some(editor_t.as_str())),
        (Who::Owner, Some(owner_t.as_str())),
        (Who::Admin, Some(srv.admin_token.as_str())),
    ];
    for (method, path, body, rule) in &routes {
        for (who, token) in callers {
            let before = srv.size();
            let (st, r) = if path.ends_with("/experiments") && *method == "POST" {
                match token {
                    Some(t) => {
                        srv.import(
                            t,
                            &pid,
                            import("matrix"),
                            vec![("m.onnx", fixture("wine_classifier.onnx"))],
                        )
                        .await
                    }
                    None => srv.call(method, path, None, Value::Null).await,
                }
            } else {
                srv.call(method, path, token, body.clone()).await
            };
            let expected = match who {
                Who::Anonymous => Some((401, "unauthenticated")),
                Who::Revoked => Some((401, "token_revoked")),
                _ if !allowed(who, *rule) => Some((403, "forbidden")),
                _ => None,
            };
            match expected {
                Some((status, code)) => {
                    assert_eq!(
                        (st, r["code"].as_str()),
                        (status, Some(code)),
                        "{method} {path} as {who:?}: {r}"
                    );
                    assert_eq!(srv.size(), before, "{method} {path} as {who:?} appended");
                }
                None => assert!(
                    st != 401 && st != 403 && st < 500,
                    "{method} {path} as {who:?}: {st} {r}"
                ),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_are_refused_with_a_code_and_append_nothing() {
    let srv = Server::start().await;
    let t = srv.admin_token.clone();
    let pid = srv.project(&t, "bad inputs").await;
    let spec = json!({"display_name": "x", "artifacts": [{"file": "m.onnx", "type": "onnx"}]});
    let (_, x) = srv
        .import(
            &t,
            &pid,
            spec.clone(),
            vec![("m.onnx", fixture("wine_classifier.onnx"))],
        )
        .await;
    let xid = s(&x["data"]["experiment_id"]);
    let (_, m) = srv
        .call(
            "POST",
            &format!("/api/v1/projects/{pid}/models"),
            Some(&t),
            json!({"name": "m"}),
        )
        .await;
    let mid = s(&m["data"]["model_id"]);
    srv.call(
        "POST",
        &format!("/api/v1/models/{mid}/versions"),
        Some(&t),
        json!({"experiment_id": xid}),
    )
    .await;
    let nobody = uuid::Uuid::now_v7();
    let p = format!("/api/v1/projects/{pid}");
    let m = format!("/api/v1/models/{mid}");
    let x = format!("/api/v1/experiments/{xid}");

    let cases: Vec<(&str, String, Value, u16, &str)> = vec![
        (
            "POST",
            "/api/v1/projects".into(),
            json!({"name": 5}),
            422,
            "invalid_body",
        ),
        (
            "POST",
            "/api/v1/projects".into(),
            json!({"name": "x", "nmae": "typo"}),
            422,
            "invalid_body",
        ),
        (
            "POST",
            "/api/v1/projects".into(),
            json!({"name": "   "}),
            422,
            "invalid_field",
        ),
        (
            "POST",
            "/api/v1/users".into(),
            json!({"username": "has space"}),
            422,
            "invalid_field",
        ),
        (
            "POST",
            "/api/v1/users".into(),
            json!({"username": "root"}),
            409,
            "already_exists",
        ),
        (
            "POST",
            "/api/v1/users".into(),
            json!({"username": "x", "roles": ["superuser"]}),
            422,
            "invalid_body",
        ),
        (
            "GET",
            format!("/api/v1/projects/{nobody}"),
            Value::Null,
            404,
            "project_not_found",
        ),
        (
            "GET",
            "/api/v1/projects/not-a-uuid".into(),
            Value::Null,
            400,
            "invalid_path",
        ),
        (
            "GET",
            format!("/api/v1/experiments/{nobody}"),
            Value::Null,
            404,
            "experiment_not_found",
        ),
        (
            "GET",
            format!("/api/v1/models/{nobody}"),
            Value::Null,
            404,
            "model_not_found",
        ),
        (
            "GET",
            format!("{m}/versions/9"),
            Value::Null,
            404,
            "version_not_found",
        ),
        (
            "GET",
            format!("/api/v1/users/{nobody}"),
            Value::Null,
            404,
            "user_not_found",
        ),
        (
            "PUT",
            format!("{p}/members/{nobody}"),
            json!({"role": "viewer"}),
            404,
            "user_not_found",
        ),
        (
            "PUT",
            format!("{p}/members/{nobody}"),
            json!({"role": "boss"}),
            422,
            "invalid_body",
        ),
        (
            "DELETE",
            format!("{p}/members/{nobody}"),
            Value::Null,
            404,
            "member_not_found",
        ),
        (
            "PATCH",
            format!("{x}/metadata"),
            json!({"entries": {"input_schema": {"type": "json", "value": [{"name": "age", "type": "decimal"}]}}}),
            422,
            "invalid_schema",
        ),
        (
            "PATCH",
            format!("{x}/metadata"),
            json!({"entries": {"input_schema": {"type": "json", "value": [{"name": "a", "type": "Int32"}, {"name": "a", "type": "Int32"}]}}}),
            422,
            "invalid_schema",
        ),
        (
            "PATCH",
            format!("{x}/metadata"),
            json!({"entries": {"n": {"type": "int64", "value": 9007199254740993i64}}}),
            422,
            "invalid_metadata",
        ),
        (
            "PATCH",
            format!("{x}/metadata"),
            json!({"entries": {"n": {"type": "float", "value": 1.5}}}),
            422,
            "invalid_body",
        ),
        (
            "PATCH",
            format!("{x}/metadata"),
            json!({"entries": {"when": {"type": "timestamp", "value": "yesterday"}}}),
            422,
            "invalid_metadata",
        ),
        (
            "DELETE",
            format!("{x}/tags/nope"),
            Value::Null,
            404,
            "tag_not_found",
        ),
        (
            "POST",
            format!("{m}/versions"),
            json!({"experiment_id": xid}),
            409,
            "already_exists",
        ),
        (
            "POST",
            format!("{m}/versions"),
            json!({"experiment_id": nobody}),
            404,
            "experiment_not_found",
        ),
        (
            "POST",
            format!("{m}/versions"),
            json!({"experiment_id": "nope"}),
            422,
            "invalid_body",
        ),
        (
            "PUT",
            format!("{m}/versions/1/stage"),
            json!({"stage": "Production"}),
            422,
            "invalid_body",
        ),
        (
            "PUT",
            format!("{m}/versions/1/stage"),
            json!({"stage": "Production", "annotation": ""}),
            422,
            "invalid_field",
        ),
        (
            "PUT",
            format!("{m}/versions/1/stage"),
            json!({"stage": "Live", "annotation": "x"}),
            422,
            "invalid_body",
        ),
        (
            "PUT",
            format!("{m}/versions/7/stage"),
            json!({"stage": "Staging", "annotation": "x"}),
            404,
            "version_not_found",
        ),
        (
            "PUT",
            format!("{m}/aliases/latest"),
            json!({"version": 1, "annotation": "x"}),
            422,
            "invalid_field",
        ),
        (
            "DELETE",
            format!("{m}/aliases/none"),
            json!({"annotation": "x"}),
            404,
            "alias_not_found",
        ),
        ("POST", format!("{x}/restore"), Value::Null, 409, "conflict"),
        ("DELETE", x.clone(), Value::Null, 409, "conflict"),
        (
            "GET",
            format!("{p}/experiments?limit=0"),
            Value::Null,
            400,
            "invalid_query",
        ),
        (
            "GET",
            format!("{m}/versions?stage=Live"),
            Value::Null,
            400,
            "invalid_query",
        ),
        (
            "POST",
            "/api/v1/users/me/tokens".into(),
            json!({"name": "x"}),
            400,
            "invalid_path",
        ),
        (
            "POST",
            format!("/api/v1/users/{nobody}/tokens"),
            json!({"name": "x", "expires_at": "soon"}),
            422,
            "invalid_field",
        ),
        ("GET", "/api/v1/nope".into(), Value::Null, 404, "not_found"),
    ];
    for (method, path, body, status, code) in cases {
        let before = srv.size();
        let (st, r) = srv.call(method, &path, Some(&t), body.clone()).await;
        assert_eq!(
            (st, r["code"].as_str()),
            (status, Some(code)),
            "{method} {path} {body}: {r}"
        );
        assert!(r["detail"].as_str().is_some_and(|d| !d.is_empty()));
        assert_eq!(srv.size(), before, "{method} {path} appended");
    }
    let (_, r) = srv.call("PATCH", &format!("{x}/metadata"), Some(&t), json!({"entries": {"input_schema": {"type": "json", "value": [{"name": "age", "type": "decimal"}]}}})).await;
    assert!(
        s(&r["detail"]).contains("\"age\""),
        "the error names the column: {r}"
    );

    // Malformed JSON, raw.
    let before = srv.size();
    let (st, r) = srv.raw("POST", "/api/v1/projects", &t, "{\"name\": ").await;
    assert_eq!((st, r["code"].as_str()), (400, Some("malformed_json")));

    // Uploads: the size limit, a malformed form, files and specs that do not match. None
    // appends, and no uploaded blob is left behind.
    let blobs_before = count_files(&srv);
    let big = vec![7u8; TEST_MAX_ARTIFACT as usize + 1];
    let (st, r) = srv
        .import(&t, &pid, spec.clone(), vec![("m.onnx", big)])
        .await;
    assert_eq!(
        (st, r["code"].as_str()),
        (413, Some("artifact_too_large")),
        "{r}"
    );
    let other = json!({"display_name": "x", "artifacts": [{"file": "other.onnx", "type": "onnx"}]});
    let (st, r) = srv
        .import(&t, &pid, other, vec![("m.onnx", b"abc".to_vec())])
        .await;
    assert_eq!(
        (st, r["code"].as_str()),
        (400, Some("invalid_multipart")),
        "{r}"
    );
    let (st, r) = srv
        .import(
            &t,
            &pid,
            json!({"display_name": "x", "artifacts": []}),
            vec![],
        )
        .await;
    assert_eq!(
        (st, r["code"].as_str()),
        (422, Some("invalid_field")),
        "{r}"
    );
    let (st, r) = srv
        .import(&t, &pid, json!({"display_name": 3}), vec![])
        .await;
    assert_eq!((st, r["code"].as_str()), (422, Some("invalid_body")), "{r}");
    let (st, r) = srv
        .import(
            &t,
            &nobody.to_string(),
            spec.clone(),
            vec![("m.onnx", b"abc".to_vec())],
        )
        .await;
    assert_eq!(
        (st, r["code"].as_str()),
        (404, Some("project_not_found")),
        "{r}"
    );
    let form = reqwest::multipart::Form::new().part(
        "artifact",
        reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("m.onnx"),
    );
    let r = srv
        .http
        .post(format!("{}{p}/experiments", srv.base))
        .bearer_auth(&t)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(srv.size(), before);
    assert_eq!(
        count_files(&srv),
        blobs_before,
        "rejected uploads leave no blob"
    );

    // A broken ONNX file is kept, marked not deployable with the runtime's reason.
    let (st, r) = srv
        .import(&t, &pid, spec, vec![("m.onnx", b"not a protobuf".to_vec())])
        .await;
    assert_eq!(st, 201, "{r}");
    let ing = &r["data"]["artifacts"][0]["ingestion"];
    assert_eq!(ing["deployable"].as_bool(), Some(false));
    assert!(s(&ing["reason"]).contains("could not load"), "{ing}");

    // A token past its expiry is refused.
    let (_, me) = srv.call("GET", "/api/v1/me", Some(&t), Value::Null).await;
    let soon = (chrono::Utc::now() + chrono::Duration::milliseconds(800)).to_rfc3339();
    let (st, tk) = srv
        .call(
            "POST",
            &format!("/api/v1/users/{}/tokens", s(&me["user_id"])),
            Some(&t),
            json!({"name": "short", "expires_at": soon}),
        )
        .await;
    assert_eq!(st, 201, "{tk}");
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    let (st, r) = srv
        .call(
            "GET",
            "/api/v1/me",
            Some(&s(&tk["data"]["token"])),
            Value::Null,
        )
        .await;
    assert_eq!((st, r["code"].as_str()), (401, Some("token_expired")));
    let (st, r) = srv
        .call("GET", "/api/v1/me", Some("pvn_0000"), Value::Null)
        .await;
    assert_eq!((st, r["code"].as_str()), (401, Some("invalid_token")));
}

fn count_files(srv: &Server) -> usize {
    fn walk(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |rd| {
            rd.flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        walk(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
    }
    walk(&srv.ledger.dir().join("blobs"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_seed_registers_the_embedded_wine_model() {
    let srv = Server::start().await;
    let admin = *srv.state.registry.read().usernames.get("root").unwrap();
    let (model_id, _) = provenant::demo::seed(&srv.state, admin).await.unwrap();
    let (st, v) = srv
        .call(
            "GET",
            &format!("/api/v1/models/{model_id}/versions/1"),
            Some(&srv.admin_token),
            Value::Null,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let (_, x) = srv
        .call(
            "GET",
            &format!("/api/v1/experiments/{}", s(&v["experiment_id"])),
            Some(&srv.admin_token),
            Value::Null,
        )
        .await;
    assert_eq!(columns(&x["metadata"]["input_schema"]["value"]).len(), 13);
    assert_eq!(
        x["artifacts"][0]["ingestion"]["deployable"].as_bool(),
        Some(true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_as_of_any_position_or_time_is_the_fold_of_that_prefix() {
    let srv = Server::start().await;
    let admin = *srv.state.registry.read().usernames.get("root").unwrap();
    let before_demo = srv.size() - 1;
    let (_, deployment) = provenant::demo::seed(&srv.state, admin).await.unwrap();
    let (st, _) = srv
        .call(
            "POST",
            &format!("/api/v1/deployments/{deployment}:stop"),
            Some(&srv.admin_token),
            json!({"reason": "end of trial"}),
        )
        .await;
    assert_eq!(st, 200);
    let events = srv.ledger.read_all(0, usize::MAX).unwrap();
    let as_of = |at: String| {
        let srv = &srv;
        async move {
            srv.call(
                "GET",
                &format!("/api/v1/registry?at={at}"),
                Some(&srv.admin_token),
                Value::Null,
            )
            .await
        }
    };
    let state_of =
        |r: &Value| r["registry"]["deployments"][deployment.to_string()]["state"].clone();
    // Before the demo there was no deployment; at the head it is stopped; in between, at the
    // event that made it Healthy, it was Healthy.
    let (st, r) = as_of(before_demo.to_string()).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["registry"]["deployments"], json!({}));
    assert_eq!(r["as_of"]["position"], before_demo);
    let (_, r) = as_of(srv.size().to_string()).await;
    assert_eq!(state_of(&r), "Stopped");
    let healthy = events
        .iter()
        .find(|e| {
            e.unsigned.event_type == "DeploymentStateChanged"
                && e.unsigned.payload["to"] == "Healthy"
        })
        .expect("the demo became healthy");
    let (_, r) = as_of(healthy.unsigned.position.to_string()).await;
    assert_eq!(state_of(&r), "Healthy", "{r}");
    // By time: the same prefix, and exactly the fold of those events.
    let at = healthy.unsigned.recorded_at.clone();
    let (st, by_time) = as_of(at.clone()).await;
    assert_eq!(st, 200, "{by_time}");
    let through = events
        .iter()
        .filter(|e| e.unsigned.recorded_at <= at)
        .count();
    let folded = fold(events[..through].to_vec()).unwrap();
    assert_eq!(by_time["registry"], serde_json::to_value(&folded).unwrap());
    assert_eq!(state_of(&by_time), "Healthy");
    let (st, r) = as_of("last-tuesday".into()).await;
    assert_eq!((st, r["code"].as_str()), (400, Some("invalid_query")));
}
