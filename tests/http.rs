//! The ledger endpoints over real HTTP on a loopback port.

mod common;

use common::{Server, event, fill};
use provenant::log::checkpoint::Checkpoint;
use provenant::log::merkle::{self, Node};
use provenant::log::{ExpectedVersion, keys};
use serde_json::{Value, json};

fn nodes(v: &Value) -> Vec<Node> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| {
            hex::decode(h.as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        })
        .collect()
}

fn node(v: &Value) -> Node {
    hex::decode(v.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

struct Api<'a> {
    server: &'a Server,
    token: Option<&'a str>,
}

impl Api<'_> {
    async fn get(&self, path: &str) -> (u16, String) {
        let mut req = self.server.http.get(format!("{}{path}", self.server.base));
        if let Some(t) = self.token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    }

    async fn json(&self, path: &str) -> (u16, Value) {
        let (s, t) = self.get(path).await;
        (s, serde_json::from_str(&t).unwrap_or(Value::Null))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_endpoints_serve_verifiable_events_and_proofs() {
    let server = Server::start().await;
    let ledger = &server.ledger;
    fill(ledger, 3, 10).await;
    let n = ledger.head().size;
    let api = Api {
        server: &server,
        token: Some(&server.admin_token),
    };
    // Every ledger route wants a token.
    let anonymous = Api {
        server: &server,
        token: None,
    };
    for path in [
        "/api/v1/ledger/head",
        "/api/v1/ledger/events",
        "/api/v1/ledger/keys",
    ] {
        let (s, body) = anonymous.json(path).await;
        assert_eq!(
            (s, body["code"].as_str()),
            (401, Some("unauthenticated")),
            "{path}"
        );
    }

    assert_eq!(api.get("/readyz").await, (200, "ready".into()));
    let (_, keys_doc) = api.json("/api/v1/ledger/keys").await;
    let public = keys::parse_public(keys_doc["keys"][0]["public_key"].as_str().unwrap()).unwrap();

    let (s, head) = api.json("/api/v1/ledger/head").await;
    assert_eq!((s, head["size"].as_u64()), (200, Some(n)));
    let cp = Checkpoint::verify(head["checkpoint"].as_str().unwrap(), &public).unwrap();
    assert_eq!(cp.size, n);
    let (s, note) = api.get("/api/v1/ledger/checkpoint").await;
    assert_eq!(
        (s, note.as_str()),
        (200, head["checkpoint"].as_str().unwrap())
    );

    // Every event's inclusion proof checks against the signed root.
    for p in 0..n {
        let (s, inc) = api
            .json(&format!("/api/v1/ledger/proofs/inclusion?position={p}"))
            .await;
        assert_eq!(s, 200);
        let (_, e) = api.json(&format!("/api/v1/ledger/events/{p}")).await;
        let leaf = merkle::leaf_hash(&node(&e["hash"]));
        merkle::verify_inclusion(p, n, &leaf, &nodes(&inc["proof"]), &cp.root).unwrap();
    }

    // History is append-only: a consistency proof links the old signed head to a new one.
    fill(ledger, 2, 7).await;
    let (_, head2) = api.json("/api/v1/ledger/head").await;
    let cp2 = Checkpoint::verify(head2["checkpoint"].as_str().unwrap(), &public).unwrap();
    let (s, cons) = api
        .json(&format!(
            "/api/v1/ledger/proofs/consistency?from={n}&to={}",
            cp2.size
        ))
        .await;
    assert_eq!(s, 200);
    merkle::verify_consistency(n, cp2.size, &nodes(&cons["proof"]), &cp.root, &cp2.root).unwrap();

    // Paging, streams, lookup by id.
    let (_, page) = api.json("/api/v1/ledger/events?from=5&limit=3").await;
    let positions: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!((positions, page["next"].as_u64()), (vec![5, 6, 7], Some(8)));
    let (_, st) = api
        .json("/api/v1/ledger/streams/s-1?direction=backward&limit=2")
        .await;
    let versions: Vec<u64> = st["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["stream_version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, vec![16, 15]);
    let id = page["events"][0]["event_id"].as_str().unwrap().to_string();
    let (s, by_id) = api.json(&format!("/api/v1/ledger/events/by-id/{id}")).await;
    assert_eq!((s, by_id["position"].as_u64()), (200, Some(5)));

    // Bad inputs: a status and a JSON body with a machine-readable code.
    for (path, status, code) in [
        ("/api/v1/ledger/streams/nope", 404, "unknown_stream"),
        ("/api/v1/ledger/events?limit=abc", 400, "invalid_query"),
        ("/api/v1/ledger/events?limit=0", 400, "invalid_query"),
        ("/api/v1/ledger/events?limit=5000", 400, "invalid_query"),
        ("/api/v1/ledger/events/999999", 404, "no_event"),
        ("/api/v1/ledger/events/minus-one", 400, "invalid_position"),
        (
            "/api/v1/ledger/events/by-id/not-a-uuid",
            400,
            "invalid_event_id",
        ),
        (
            "/api/v1/ledger/proofs/inclusion?position=5&tree_size=99999",
            400,
            "beyond_head",
        ),
        (
            "/api/v1/ledger/proofs/inclusion?position=50&tree_size=10",
            400,
            "out_of_range",
        ),
        ("/api/v1/ledger/proofs/inclusion", 400, "invalid_query"),
        (
            "/api/v1/ledger/proofs/consistency?from=0&to=5",
            400,
            "out_of_range",
        ),
        ("/api/v1/ledger/checkpoint?size=99999", 404, "no_checkpoint"),
        ("/no/such/route", 404, "not_found"),
    ] {
        let (s, body) = api.json(path).await;
        assert_eq!(
            (s, body["code"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{path}"
        );
    }
    let size = ledger.head().size;
    ledger
        .append(
            "s-0",
            ExpectedVersion::Exact(0),
            vec![event("X", json!({}))],
        )
        .await
        .unwrap_err();
    assert_eq!(ledger.head().size, size);
}
