//! Online garbage collection against a running berth: what nothing
//! references goes, what anything references stays, and a push racing a
//! collection never ends with a manifest whose blobs are gone.

mod common;

use common::push::{
    OCI_MANIFEST, pull_manifest, push_blob, push_image, push_tagged, put_manifest, random_bytes,
};
use common::{Berth, sha256};
use reqwest::{Client, StatusCode};
use serde_json::Value;

/// No grace period: everything unreferenced is garbage at once, which is
/// the hardest case for a push in flight.
const EAGER: &str =
    "[gc]\ninterval_seconds = 0\ngrace_period_seconds = 0\nupload_max_age_seconds = 0\n";

async fn status(c: &Client, url: String) -> StatusCode {
    c.get(url).send().await.unwrap().status()
}

fn blob_file(b: &Berth, digest: &str) -> std::path::PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    b.data_dir().join("blobs/sha256").join(&hex[..2]).join(hex)
}

fn layers(manifest: &Value) -> Vec<String> {
    let mut out = vec![manifest["config"]["digest"].as_str().unwrap().to_owned()];
    for l in manifest["layers"].as_array().unwrap() {
        out.push(l["digest"].as_str().unwrap().to_owned());
    }
    out
}

#[tokio::test]
async fn collects_what_nothing_references_and_keeps_the_rest() {
    let b = Berth::start_with_config(EAGER);
    let c = Client::new();

    // v1, then v1 moved to a new image: the first is untagged garbage.
    let old = push_image(&c, &b, "team/app", OCI_MANIFEST).await;
    let old_body = serde_json::to_vec(&old).unwrap();
    let old_digest = sha256(&old_body);
    let r = put_manifest(&c, &b, "team/app", "v1", OCI_MANIFEST, &old_body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let kept_digest = push_tagged(&c, &b, "team/app", "v1").await;
    let kept = pull_manifest(&c, &b, "team/app", "v1").await;
    // A blob nobody ever referenced, and an upload nobody finished.
    let stray = push_blob(&c, &b, "team/app", &random_bytes(5000)).await;
    let r = c
        .post(b.url("/v2/team/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let upload = common::header(&r, "location");

    let dry: Value = serde_json::from_str(&b.manage(&["gc", "--dry-run", "--json"])).unwrap();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["manifests_deleted"], 1, "{dry}");
    // The stray blob; the old image's blobs are still referenced by its
    // manifest until that goes (a dry run sees one level).
    assert_eq!(dry["blobs_deleted"], 1, "{dry}");
    assert_eq!(dry["uploads_purged"], 1, "{dry}");
    // A dry run deletes nothing.
    let by_old = b.url(&format!("/v2/team/app/manifests/{old_digest}"));
    assert_eq!(status(&c, by_old.clone()).await, StatusCode::OK);

    let report: Value = serde_json::from_str(&b.manage(&["gc", "--json"])).unwrap();
    assert_eq!(report["manifests_deleted"], 1, "{report}");
    assert_eq!(report["blobs_deleted"], 3, "{report}");
    assert_eq!(report["uploads_purged"], 1, "{report}");
    let freed = report["bytes_freed"].as_u64().unwrap();
    assert!(freed >= 5000 + 3000 + old_body.len() as u64, "{report}");

    assert_eq!(status(&c, by_old).await, StatusCode::NOT_FOUND);
    for digest in layers(&old).iter().chain([&stray]) {
        let url = b.url(&format!("/v2/team/app/blobs/{digest}"));
        assert_eq!(status(&c, url).await, StatusCode::NOT_FOUND, "{digest}");
        assert!(!blob_file(&b, digest).exists(), "{digest} still on disk");
    }
    assert_eq!(status(&c, b.url(&upload)).await, StatusCode::NOT_FOUND);
    // The tagged image is whole.
    let by_tag = b.url(&format!("/v2/team/app/manifests/{kept_digest}"));
    assert_eq!(status(&c, by_tag).await, StatusCode::OK);
    for digest in layers(&kept) {
        let bytes = c
            .get(b.url(&format!("/v2/team/app/blobs/{digest}")))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(sha256(&bytes), digest);
    }
    // A second run finds nothing.
    let again: Value = serde_json::from_str(&b.manage(&["gc", "--json"])).unwrap();
    assert_eq!(again["manifests_deleted"], 0);
    assert_eq!(again["blobs_deleted"], 0);
}

#[tokio::test]
async fn a_grace_period_keeps_what_a_push_just_uploaded() {
    let b = Berth::start_with_config(
        "[gc]\ninterval_seconds = 0\ngrace_period_seconds = 3600\nupload_max_age_seconds = 3600\n",
    );
    let c = Client::new();
    // Unreferenced, but younger than the grace period: kept.
    let young = push_blob(&c, &b, "team/app", &random_bytes(100)).await;
    let report: Value = serde_json::from_str(&b.manage(&["gc", "--json"])).unwrap();
    assert_eq!(report["blobs_deleted"], 0, "{report}");
    let url = b.url(&format!("/v2/team/app/blobs/{young}"));
    assert_eq!(status(&c, url).await, StatusCode::OK);
}

#[tokio::test]
async fn untagged_children_of_a_deleted_index_go_in_one_run() {
    let b = Berth::start_with_config(EAGER);
    let c = Client::new();
    let child = push_image(&c, &b, "multi", OCI_MANIFEST).await;
    let child_body = serde_json::to_vec(&child).unwrap();
    let child_digest = sha256(&child_body);
    let r = put_manifest(&c, &b, "multi", &child_digest, OCI_MANIFEST, &child_body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": child_digest, "size": child_body.len(),
                       "platform": {"os": "linux", "architecture": "arm64"}}],
    });
    let index_body = serde_json::to_vec(&index).unwrap();
    let index_type = "application/vnd.oci.image.index.v1+json";
    let r = put_manifest(&c, &b, "multi", "latest", index_type, &index_body).await;
    assert_eq!(r.status(), StatusCode::CREATED);

    // Tagged index: its untagged child is referenced, so it stays.
    let report: Value = serde_json::from_str(&b.manage(&["gc", "--json"])).unwrap();
    assert_eq!(report["manifests_deleted"], 0, "{report}");

    let r = c
        .delete(b.url("/v2/multi/manifests/latest"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let report: Value = serde_json::from_str(&b.manage(&["gc", "--json"])).unwrap();
    assert_eq!(report["manifests_deleted"], 2, "{report}");
    assert_eq!(report["blobs_deleted"], 2, "{report}");
    let url = b.url(&format!("/v2/multi/manifests/{child_digest}"));
    assert_eq!(status(&c, url).await, StatusCode::NOT_FOUND);
}

/// Pushes race collections that run back to back with no grace period.
/// A push may be refused (its blob was collected before its manifest
/// arrived: the client uploads again), but every manifest berth accepted
/// must have all its blobs afterwards.
#[tokio::test]
async fn a_push_racing_collection_never_loses_a_blob() {
    // Uploads in progress are not abandoned ones.
    let b = Berth::start_with_config(
        "[gc]\ninterval_seconds = 0\ngrace_period_seconds = 0\nupload_max_age_seconds = 3600\n",
    );
    let c = Client::new();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Collections finished so far: the pushes go on until several ran.
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let collector = {
        let stop = stop.clone();
        let runs = runs.clone();
        let dir = b.data_dir().to_owned();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
                    .arg("--data-dir")
                    .arg(&dir)
                    .arg("--config")
                    .arg(dir.join("config.toml"))
                    .args(["gc", "--json"])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    let mut accepted = Vec::new();
    let mut refused = 0;
    let mut blob_retries = 0;
    let mut i = 0;
    while i < 60 || runs.load(std::sync::atomic::Ordering::Relaxed) < 3 {
        i += 1;
        let config = format!(r#"{{"architecture":"amd64","os":"linux","n":{i}}}"#);
        let layer = random_bytes(2000);
        let mut descriptors = Vec::new();
        for bytes in [config.as_bytes(), &layer] {
            descriptors.push(serde_json::json!({
                "mediaType": "application/octet-stream",
                "digest": upload_retrying(&c, &b, bytes, &mut blob_retries).await,
                "size": bytes.len(),
            }));
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptors[0],
            "layers": [descriptors[1]],
        });
        let body = serde_json::to_vec(&manifest).unwrap();
        let r = put_manifest(&c, &b, "race", &format!("t{i}"), OCI_MANIFEST, &body).await;
        match r.status() {
            StatusCode::CREATED => accepted.push((format!("t{i}"), manifest)),
            StatusCode::BAD_REQUEST => {
                let e: Value = r.json().await.unwrap();
                assert_eq!(e["errors"][0]["code"], "MANIFEST_BLOB_UNKNOWN", "{e}");
                refused += 1;
            }
            other => panic!("manifest PUT answered {other}"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    collector.join().unwrap();
    let runs = runs.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "{} pushes accepted, {refused} refused, {blob_retries} blob uploads retried, during {runs} collections",
        accepted.len()
    );
    // One more collection after the pushes: still nothing referenced goes.
    b.manage(&["gc"]);
    for (tag, manifest) in &accepted {
        let url = b.url(&format!("/v2/race/manifests/{tag}"));
        assert_eq!(status(&c, url).await, StatusCode::OK, "{tag}");
        for digest in layers(manifest) {
            let bytes = c
                .get(b.url(&format!("/v2/race/blobs/{digest}")))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert_eq!(sha256(&bytes), digest, "{tag}: blob {digest} lost");
        }
    }
}

/// Uploads a blob monolithically, uploading again when berth refuses it as
/// being collected (as clients retry a failed blob upload).
async fn upload_retrying(c: &Client, b: &Berth, bytes: &[u8], retries: &mut u32) -> String {
    let digest = sha256(bytes);
    loop {
        let r = c
            .post(b.url(&format!("/v2/race/blobs/uploads/?digest={digest}")))
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        match r.status() {
            StatusCode::CREATED => return digest,
            StatusCode::BAD_REQUEST => {
                let e: Value = r.json().await.unwrap();
                assert_eq!(e["errors"][0]["code"], "BLOB_UPLOAD_INVALID", "{e}");
                *retries += 1;
                assert!(*retries < 1000, "uploads keep being refused");
            }
            other => panic!("blob upload answered {other}"),
        }
    }
}
