//! The admin API against its own OpenAPI document: the document is served
//! without credentials and describes what berth answers.

mod common;

use common::Berth;
use serde_json::Value;

/// Credentials are required, as by default.
const CONFIG: &str = "";

/// A client that sends admin's credentials with every request.
fn admin_client(b: &Berth) -> reqwest::Client {
    use base64::Engine;
    let token =
        base64::engine::general_purpose::STANDARD.encode(format!("admin:{}", b.admin_password()));
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Basic {token}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

async fn document(b: &Berth) -> Value {
    // No credentials: tools fetch the document before they know any.
    let r = reqwest::get(b.url("/admin/v1/openapi.json")).await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK, "{r:?}");
    assert_eq!(common::header(&r, "content-type"), "application/json");
    r.json().await.unwrap()
}

/// Every (method, path, operation) of the document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            out.push((method.clone(), path.clone(), op.clone()));
        }
    }
    out
}

#[tokio::test]
async fn the_document_describes_the_admin_api() {
    let b = Berth::start_secure(CONFIG);
    let doc = document(&b).await;

    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");
    for main in [
        "/admin/v1/repositories",
        "/admin/v1/repositories/{name}",
        "/admin/v1/repositories/{name}/settings",
        "/admin/v1/repositories/{name}/tags",
        "/admin/v1/repositories/{name}/manifests",
        "/admin/v1/accounts",
        "/admin/v1/accounts/{name}/grants",
        "/admin/v1/webhooks",
        "/admin/v1/deploy-rules",
        "/admin/v1/deliveries",
        "/admin/v1/audit",
    ] {
        assert!(paths.contains_key(main), "{main} is not in the document");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["basic"]["scheme"],
        "basic"
    );

    // Retention counts beyond these are refused; the schema says so.
    let retention = &doc["components"]["schemas"]["RetentionPolicy"]["properties"];
    assert_eq!(retention["keep_last"]["maximum"], 1_000_000);
    assert_eq!(retention["keep_days"]["maximum"], 36_500);

    for (method, path, op) in operations(&doc) {
        // Every operation checks the caller first, so each can answer
        // these; a client generated from the document must expect them.
        for status in ["401", "403", "429"] {
            assert_eq!(
                op["responses"][status]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ApiError",
                "{method} {path} does not document {status}"
            );
        }
        // Page sizes are refused outside 1..=1000: the document says so.
        for p in op["parameters"].as_array().into_iter().flatten() {
            if p["name"] == "limit" {
                assert_eq!(p["schema"]["minimum"], 1, "{method} {path}");
                assert_eq!(p["schema"]["maximum"], 1000, "{method} {path}");
            }
        }
    }
}

#[tokio::test]
async fn query_parameters_outside_the_document_are_refused() {
    let b = Berth::start_secure(CONFIG);
    let c = admin_client(&b);
    for query in ["limit=0", "limit=1001", "limt=5", "stat=gave_up"] {
        let r = c
            .get(b.url(&format!("/admin/v1/deliveries?{query}")))
            .send()
            .await
            .unwrap();
        // A misspelt filter used to be ignored, listing everything.
        assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST, "{query}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "INVALID", "{query}: {body}");
    }
    let r = c
        .get(b.url("/admin/v1/deliveries?limit=1000&state=gave_up"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
}
