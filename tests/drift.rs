//! Drift over HTTP: a model version's reference data profiled and recorded, and a
//! deployment's scored inputs judged against it, shifted and not.

mod common;

use common::{
    Server, calm_wine, csv, deploy_again, deployed_wine, drift, member, put_reference, s,
    score_rows, wine,
};
use serde_json::{Value, json};

fn column<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["column"] == name)
        .unwrap_or_else(|| panic!("no column {name}: {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shifted_input_drifts_and_an_unshifted_one_does_not() {
    let srv = Server::start().await;
    let t = srv.admin_token.clone();
    let (_, model, d) = deployed_wine(&srv, "drift").await;
    let dep = s(&d["data"]["deployment_id"]);

    // 600 reference rows: statistical tests (Evidently's rule for at most 1,000 rows).
    let (fields, reference) = wine(0, 600, &[]);
    let before = srv.size();
    let (st, r) = put_reference(
        &srv,
        &t,
        &model,
        "",
        Some("text/csv"),
        csv(&fields, &reference),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(srv.size(), before + 1);
    assert_eq!(r["events"][0]["event_type"], "ReferenceProfileRecorded");
    let profiles = r["data"]["columns"].as_array().unwrap();
    assert_eq!(profiles.len(), fields.len());
    assert_eq!(
        (&profiles[0]["count"], &r["data"]["rows"]),
        (&json!(600), &json!(600))
    );
    assert_eq!(profiles[0]["summary"]["kind"], "numeric");
    assert_eq!(
        profiles[0]["summary"]["edges"].as_array().unwrap().len(),
        11
    );
    // The version shows its reference; the file is kept by its hash.
    let (_, v) = srv
        .call(
            "GET",
            &format!("/api/v1/models/{model}/versions/1"),
            Some(&t),
            Value::Null,
        )
        .await;
    assert_eq!(v["reference"]["dataset_blob"], r["data"]["dataset_blob"]);

    // Nothing scored yet: nothing to judge.
    let (st, empty) = drift(&srv, &dep, "").await;
    assert_eq!(st, 200, "{empty}");
    assert_eq!(
        (&empty["runs"], &empty["inputs"]["dataset_drift"]),
        (&json!(0), &json!(false))
    );
    assert_eq!(
        empty["inputs"]["undetermined"].as_array().unwrap().len(),
        fields.len()
    );

    // The same distribution, a sample of its own (each value within ±0.5%): no column drifts.
    let same = calm_wine();
    score_rows(&srv, &dep, &fields, &same).await;
    let (st, calm) = drift(&srv, &dep, "").await;
    assert_eq!(st, 200, "{calm}");
    assert_eq!((&calm["runs"], &calm["rows"]), (&json!(6), &json!(600)));
    assert_eq!(calm["inputs"]["dataset_drift"], false, "{calm}");
    for c in calm["inputs"]["columns"].as_array().unwrap() {
        assert_eq!(
            (&c["method"], &c["drifted"]),
            (&json!("ks"), &json!(false)),
            "{c}"
        );
        assert!(
            c["score"].as_f64().unwrap() < 1.0,
            "a sample of its own: {c}"
        );
        assert_eq!(c["psi_level"], "ok", "{c}");
    }
    // Prediction drift: the model's outputs for these rows against its outputs for the
    // reference, one column per class probability.
    let predicted = calm["predictions"]["columns"].as_array().unwrap();
    assert_eq!(predicted.len(), 3, "{calm}");
    assert!(predicted.iter().all(|c| c["drifted"] == false), "{calm}");

    // The same rows again with the first ten columns 40% larger, in a range of their own.
    let since = chrono::Utc::now() + chrono::Duration::seconds(60);
    let (_, shifted) = wine(600, 1200, &[1.4; 10]);
    score_rows(&srv, &dep, &fields, &shifted).await;
    let (st, all) = drift(&srv, &dep, "").await;
    assert_eq!(st, 200, "{all}");
    assert_eq!((&all["runs"], &all["rows"]), (&json!(12), &json!(1200)));
    assert_eq!(all["inputs"]["dataset_drift"], true, "{all}");
    assert_eq!(all["predictions"]["dataset_drift"], true, "{all}");
    for (j, name) in fields.iter().enumerate() {
        let c = column(&all["inputs"], name);
        assert_eq!(c["drifted"], j < 10, "{c}");
        if j < 10 {
            assert!(c["score"].as_f64().unwrap() < 1e-6, "{c}");
            assert_ne!(c["psi_level"], "ok", "{c}");
            assert!(c["statistic"].as_f64().unwrap() > 0.1, "{c}");
        }
    }
    let share = all["inputs"]["drift_share"].as_f64().unwrap();
    assert!((share - 10.0 / fields.len() as f64).abs() < 1e-12, "{all}");

    // Stricter thresholds for this deployment: the same columns drift, but ten of thirteen
    // no longer make the dataset drift, and PSI no longer alerts.
    let path = format!("/api/v1/deployments/{dep}/drift-thresholds");
    let strict = json!({"dataset_share": 0.9, "psi_warn": 50.0, "psi_alert": 100.0});
    let (st, w) = srv.call("PUT", &path, Some(&t), strict).await;
    assert_eq!(st, 200, "{w}");
    assert_eq!(
        w["data"]["p_value"], 0.05,
        "left out, kept at the default: {w}"
    );
    let (_, judged) = drift(&srv, &dep, "").await;
    assert_eq!(judged["inputs"]["dataset_drift"], false, "{judged}");
    assert_eq!(judged["thresholds"]["dataset_share"], 0.9);
    assert_eq!(column(&judged["inputs"], &fields[0])["drifted"], true);
    assert_eq!(column(&judged["inputs"], &fields[0])["psi_level"], "ok");
    // Judged by PSI instead of KS: each column's score is its PSI, held to `psi_alert`.
    let by_psi = json!({"numeric_method": "psi"});
    let (st, w) = srv.call("PUT", &path, Some(&t), by_psi).await;
    assert_eq!(st, 200, "{w}");
    let (_, psi) = drift(&srv, &dep, "").await;
    for name in &fields {
        let (c, exact) = (column(&psi["inputs"], name), column(&all["inputs"], name));
        assert_eq!(
            (&c["method"], &c["score"]),
            (&json!("psi"), &exact["psi"]),
            "{c}"
        );
        assert_eq!(c["threshold"], 0.25);
        assert_eq!(c["drifted"], exact["psi_level"] == "alert", "{c}");
    }
    assert_eq!(psi["thresholds"]["numeric_method"], "psi");
    for bad in [
        json!({"p_value": 1.5}),
        json!({"psi_warn": 0.3, "psi_alert": 0.2}),
        json!({"dataset_share": 0.0}),
        json!({"distance": -1.0}),
        json!({"numeric_method": "chi_square"}),
        json!({"categorical_method": "ks"}),
        json!({"categorical_method": "z_test"}),
    ] {
        let (st, e) = srv.call("PUT", &path, Some(&t), bad.clone()).await;
        assert_eq!(
            (st, s(&e["code"]).as_str()),
            (422, "invalid_field"),
            "{bad}: {e}"
        );
    }
    let (st, _) = srv.call("PUT", &path, Some(&t), json!({})).await;
    assert_eq!(st, 200);

    // GraphQL answers the same report.
    let (st, g) = srv
        .graphql(
            &t,
            "query($id: ID!) { deployment(id: $id) { drift { runs inputs { datasetDrift columns { column method drifted score } } predictions { datasetDrift } } } }",
            json!({"id": dep}),
        )
        .await;
    assert_eq!(st, 200, "{g}");
    let gd = &g["data"]["deployment"]["drift"];
    assert_eq!(
        (&gd["runs"], &gd["inputs"]["datasetDrift"]),
        (&json!(12), &json!(true)),
        "{g}"
    );
    assert_eq!(gd["predictions"]["datasetDrift"], true);
    let first = &gd["inputs"]["columns"][0];
    assert_eq!(
        (&first["method"], &first["score"]),
        (&json!("KS"), &all["inputs"]["columns"][0]["score"])
    );

    // A range after every run holds nothing.
    let later = since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (st, none) = drift(&srv, &dep, &format!("?from={later}")).await;
    assert_eq!((st, &none["runs"]), (200, &json!(0)), "{none}");

    // A hash-only deployment of the same version: its inputs are not kept, so the exact
    // tests cannot see them, and the report says so; but its runs' inputs were binned at
    // scoring time, and PSI over those bins is exactly what a deployment that keeps the same
    // rows gets from their values.
    let dep2 = deploy_again(&srv, &model, json!({"mode": "hashes"})).await;
    let kept = deploy_again(&srv, &model, json!({"mode": "full", "days": 0})).await;
    for d in [&dep2, &kept] {
        score_rows(&srv, d, &fields, &shifted[..200]).await;
    }
    let (st, blind) = drift(&srv, &dep2, "").await;
    assert_eq!(st, 200, "{blind}");
    assert_eq!(
        (
            &blind["runs"],
            &blind["unretained_runs"],
            &blind["unretained_rows"]
        ),
        (&json!(2), &json!(2), &json!(200)),
        "{blind}"
    );
    assert!(blind["inputs"]["columns"].as_array().unwrap().is_empty());
    assert!(
        blind["predictions"]["columns"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let binned = &blind["binned"];
    assert_eq!(
        (&binned["runs"], &binned["rows"], &binned["unbinned_runs"]),
        (&json!(2), &json!(200), &json!(0)),
        "{blind}"
    );
    let (_, exact) = drift(&srv, &kept, "").await;
    assert_eq!(exact["binned"]["runs"], 0, "{exact}");
    for (j, name) in fields.iter().enumerate() {
        let b = column(binned, name);
        let e = column(&exact["inputs"], name);
        assert_eq!(b["psi"], e["psi"], "{name}: {b} against {e}");
        assert_eq!(b["psi_level"], e["psi_level"], "{name}");
        assert_eq!(b["current_values"], e["current_values"], "{name}");
        assert_eq!(b["psi_level"] != "ok", j < 10, "{b}");
    }
    // Ten of thirteen columns at PSI's alert level: the inputs drift by their bins.
    assert_eq!(binned["dataset_drift"], true, "{binned}");
    let share = binned["drift_share"].as_f64().unwrap();
    assert!((share - 10.0 / 13.0).abs() < 1e-12, "{binned}");
    // The kept runs purged: their inputs are gone for this deployment (the blobs stay for
    // the first, which scored the same rows and keeps them), their bins remain, and PSI
    // over them is what the values gave.
    let (st, purged) = srv
        .call(
            "POST",
            &format!("/api/v1/deployments/{kept}:purge"),
            Some(&t),
            Value::Null,
        )
        .await;
    assert_eq!(st, 200, "{purged}");
    let (_, gone) = drift(&srv, &kept, "").await;
    assert!(gone["inputs"]["columns"].as_array().unwrap().is_empty());
    assert_eq!(
        (&gone["unretained_runs"], &gone["binned"]["runs"]),
        (&json!(2), &json!(2)),
        "{gone}"
    );
    for name in &fields {
        let e = column(&exact["inputs"], name);
        assert_eq!(column(&gone["binned"], name)["psi"], e["psi"], "{name}");
    }
    // Binned by a reference that is no longer the version's: counted, not compared.
    let (st, _) = put_reference(
        &srv,
        &t,
        &model,
        "",
        Some("text/csv"),
        csv(&fields, &reference[..300]),
    )
    .await;
    assert_eq!(st, 200);
    let (_, rebinned) = drift(&srv, &dep2, "").await;
    assert_eq!(
        (
            &rebinned["binned"]["runs"],
            &rebinned["binned"]["unbinned_runs"]
        ),
        (&json!(0), &json!(2)),
        "{rebinned}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reference_data_and_drift_requests_are_refused_and_append_nothing() {
    let srv = Server::start().await;
    let t = srv.admin_token.clone();
    let (pid, model, d) = deployed_wine(&srv, "refusals").await;
    let dep = s(&d["data"]["deployment_id"]);
    let (fields, rows) = wine(0, 50, &[]);
    let (_, viewer_t) = member(&srv, &pid, "vera", "viewer").await;

    // No reference yet.
    let (st, e) = drift(&srv, &dep, "").await;
    assert_eq!(
        (st, s(&e["code"]).as_str()),
        (404, "reference_not_found"),
        "{e}"
    );

    let good = csv(&fields, &rows);
    let mut bad_cell = rows.clone();
    bad_cell[3][2] = "lots".into();
    let empty_column: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r[0] = String::new();
            r
        })
        .collect();
    let without_first: Vec<Vec<String>> = rows.iter().map(|r| r[1..].to_vec()).collect();
    let before = srv.size();
    for (token, query, content_type, file, status, code) in [
        (&t, "", None, good.clone(), 400, "unknown_format"),
        (
            &t,
            "?format=xml",
            Some("text/csv"),
            good.clone(),
            400,
            "invalid_query",
        ),
        (
            &t,
            "",
            Some("text/csv"),
            csv(&fields[1..], &without_first),
            400,
            "missing_columns",
        ),
        (
            &t,
            "",
            Some("text/csv"),
            csv(&fields, &bad_cell),
            400,
            "invalid_file",
        ),
        (
            &t,
            "",
            Some("text/csv"),
            csv(&fields, &empty_column),
            400,
            "invalid_file",
        ),
        (
            &t,
            "",
            Some("text/csv"),
            fields.join(",").into_bytes(),
            400,
            "invalid_file",
        ),
        (
            &t,
            "?format=parquet",
            None,
            good.clone(),
            400,
            "invalid_file",
        ),
        (
            &viewer_t,
            "",
            Some("text/csv"),
            good.clone(),
            403,
            "forbidden",
        ),
    ] {
        let (st, e) = put_reference(&srv, token, &model, query, content_type, file).await;
        assert_eq!((st, s(&e["code"]).as_str()), (status, code), "{query}: {e}");
        assert!(!s(&e["detail"]).is_empty());
    }
    let (st, e) = srv
        .call(
            "PUT",
            &format!("/api/v1/models/{model}/versions/9/reference"),
            Some(&t),
            Value::Null,
        )
        .await;
    assert_eq!(
        (st, s(&e["code"]).as_str()),
        (404, "version_not_found"),
        "{e}"
    );
    assert_eq!(srv.size(), before, "a refused reference appended");

    let (st, e) = put_reference(
        &srv,
        &t,
        &model,
        "",
        Some("text/csv"),
        csv(&fields, &bad_cell),
    )
    .await;
    assert!(s(&e["detail"]).contains("data row 4"), "{st} {e}");
    let (st, _) = put_reference(&srv, &t, &model, "", Some("text/csv"), good).await;
    assert_eq!(st, 200);
    for (query, status, code) in [
        ("?from=yesterday", 400, "invalid_argument"),
        ("?window=1", 400, "invalid_query"),
    ] {
        let (st, e) = drift(&srv, &dep, query).await;
        assert_eq!((st, s(&e["code"]).as_str()), (status, code), "{query}: {e}");
    }
    let (st, e) = drift(&srv, &uuid::Uuid::now_v7().to_string(), "").await;
    assert_eq!(
        (st, s(&e["code"]).as_str()),
        (404, "deployment_not_found"),
        "{e}"
    );
}
