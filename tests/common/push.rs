//! Pushing small images over the distribution API with plain HTTP, for
//! tests that need something in the registry.

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use super::{Berth, sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Bytes that differ on every call, so each test pushes fresh content.
pub fn random_bytes(len: usize) -> Vec<u8> {
    // Distinct per call without a RNG crate: hash a counter and the time.
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let seed = format!(
        "{:?}{}",
        std::time::SystemTime::now(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut out = Vec::with_capacity(len + 32);
    let mut block = sha256(seed.as_bytes()).into_bytes();
    while out.len() < len {
        block = sha256(&block).into_bytes();
        out.extend_from_slice(&block[7..]);
    }
    out.truncate(len);
    out
}

/// Pushes a blob monolithically; returns its digest.
pub async fn push_blob(c: &Client, b: &Berth, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let r = c
        .post(b.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{r:?}");
    digest
}

/// Pushes a fresh config and layer; returns a manifest naming them.
pub async fn push_image(c: &Client, b: &Berth, repo: &str, media_type: &str) -> Value {
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","n":"{}"}}"#,
        sha256(&random_bytes(8))
    );
    let layer = random_bytes(3000);
    let config_digest = push_blob(c, b, repo, config.as_bytes()).await;
    let layer_digest = push_blob(c, b, repo, &layer).await;
    json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer.len()}],
    })
}

pub async fn put_manifest(
    c: &Client,
    b: &Berth,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> reqwest::Response {
    c.put(b.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("content-type", media_type)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

/// Pushes a fresh OCI image as `repo:tag`; returns the manifest digest.
pub async fn push_tagged(c: &Client, b: &Berth, repo: &str, tag: &str) -> String {
    let manifest = push_image(c, b, repo, OCI_MANIFEST).await;
    let body = serde_json::to_vec(&manifest).unwrap();
    let r = put_manifest(c, b, repo, tag, OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{r:?}");
    sha256(&body)
}

/// The OCI manifest `repo:reference` as JSON; fails the test if it is not there.
pub async fn pull_manifest(c: &Client, b: &Berth, repo: &str, reference: &str) -> Value {
    let r = c
        .get(b.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{r:?}");
    r.json().await.unwrap()
}
