//! Blob storage in an S3-compatible bucket (moto's server on loopback), as
//! a client sees it through berth's HTTP API, and as the bucket holds it.

#[path = "common/clients.rs"]
mod clients;
mod common;

use std::process::Command;

use common::push::{pull_manifest, push_blob, push_tagged, random_bytes};
use common::s3::{MotoServer, S3Bucket};
use common::{Berth, expect_error, header, sha256};
use reqwest::{Client, StatusCode};
use serde_json::Value;

const EAGER_GC: &str =
    "[gc]\ninterval_seconds = 0\ngrace_period_seconds = 0\nupload_max_age_seconds = 0\n";

fn sha512(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha512:{}", hex::encode(sha2::Sha512::digest(bytes)))
}

/// Starts an upload; returns its Location.
async fn start_upload(c: &Client, b: &Berth, repo: &str) -> String {
    let r = c
        .post(b.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{r:?}");
    header(&r, "location")
}

/// Sends `chunk` at `offset` of the upload at `location`; returns the next
/// Location.
async fn patch(c: &Client, b: &Berth, location: &str, offset: usize, chunk: &[u8]) -> String {
    let r = c
        .patch(b.url(location))
        .header("content-type", "application/octet-stream")
        .header(
            "content-range",
            format!("{offset}-{}", offset + chunk.len() - 1),
        )
        .body(chunk.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{r:?}");
    assert_eq!(
        header(&r, "range"),
        format!("0-{}", offset + chunk.len() - 1)
    );
    header(&r, "location")
}

async fn finish(c: &Client, b: &Berth, location: &str, digest: &str) -> reqwest::Response {
    let sep = if location.contains('?') { '&' } else { '?' };
    c.put(b.url(&format!("{location}{sep}digest={digest}")))
        .header("content-length", "0")
        .send()
        .await
        .unwrap()
}

/// Pushes `bytes` in chunks of the given sizes (cycled); returns the digest.
async fn push_chunked(
    c: &Client,
    b: &Berth,
    repo: &str,
    bytes: &[u8],
    sizes: &[usize],
    digest: &str,
) {
    let mut location = start_upload(c, b, repo).await;
    let mut offset = 0;
    for size in sizes.iter().cycle() {
        if offset == bytes.len() {
            break;
        }
        let end = (offset + size).min(bytes.len());
        location = patch(c, b, &location, offset, &bytes[offset..end]).await;
        offset = end;
    }
    let r = finish(c, b, &location, digest).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{r:?}");
}

async fn pull(c: &Client, b: &Berth, repo: &str, digest: &str) -> Vec<u8> {
    let r = c
        .get(b.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{r:?}");
    r.bytes().await.unwrap().to_vec()
}

/// The multipart uploads in progress in the bucket, as S3 lists them.
async fn multipart_uploads(bucket: &S3Bucket) -> usize {
    let xml = Client::new()
        .get(format!("{}/{}?uploads", bucket.endpoint, bucket.name))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    xml.matches("<UploadId>").count()
}

#[tokio::test]
async fn pushes_and_pulls_through_the_bucket() {
    let moto = MotoServer::start();
    let bucket = moto.bucket().await;
    let b = Berth::start_with_config(&bucket.config("prefix = \"reg/\"\npart_size = 1024"));
    let c = Client::new();

    // Monolithic.
    let mono = random_bytes(70_000);
    let mono_digest = push_blob(&c, &b, "team/app", &mono).await;
    assert!(pull(&c, &b, "team/app", &mono_digest).await == mono);
    let stored = bucket.get(&S3Bucket::blob_key("reg/", &mono_digest)).await;
    assert!(
        stored.as_deref() == Some(&mono[..]),
        "bytes at the content address"
    );

    // Chunked, tiny and uneven chunks crossing part boundaries, sha256 and
    // sha512 (rehashed from the bucket).
    let chunked = random_bytes(9_000);
    let digest = sha256(&chunked);
    push_chunked(&c, &b, "team/app", &chunked, &[1, 7, 300, 1500, 2], &digest).await;
    assert!(pull(&c, &b, "team/app", &digest).await == chunked);
    assert!(
        bucket
            .get(&S3Bucket::blob_key("reg/", &digest))
            .await
            .as_deref()
            == Some(&chunked[..])
    );
    let long = random_bytes(5_000);
    let long_digest = sha512(&long);
    push_chunked(&c, &b, "team/app", &long, &[2048], &long_digest).await;
    assert!(pull(&c, &b, "team/app", &long_digest).await == long);
    // A blob smaller than a part, and an empty one.
    let small = random_bytes(10);
    push_chunked(&c, &b, "team/app", &small, &[3], &sha256(&small)).await;
    let empty_location = start_upload(&c, &b, "team/app").await;
    let r = finish(&c, &b, &empty_location, &sha256(b"")).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{r:?}");
    assert!(pull(&c, &b, "team/app", &sha256(b"")).await.is_empty());

    // A range, streamed from the bucket.
    let r = c
        .get(b.url(&format!("/v2/team/app/blobs/{digest}")))
        .header("range", "bytes=1000-4999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&r, "content-range"), "bytes 1000-4999/9000");
    assert!(r.bytes().await.unwrap() == chunked[1000..5000]);
    let r = c
        .get(b.url(&format!("/v2/team/app/blobs/{digest}")))
        .header("range", "bytes=9000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers()["content-range"], "bytes */9000");

    // Finished uploads leave nothing behind; everything is under the prefix.
    assert!(bucket.keys("reg/uploads").await.is_empty());
    assert_eq!(multipart_uploads(&bucket).await, 0);
    assert!(
        bucket
            .keys("")
            .await
            .iter()
            .all(|k| k.starts_with("reg/blobs/"))
    );
}

#[tokio::test]
async fn a_chunked_upload_continues_after_a_restart() {
    let moto = MotoServer::start();
    let bucket = moto.bucket().await;
    let mut b = Berth::start_with_config(&bucket.config("part_size = 1024"));
    let c = Client::new();
    let bytes = random_bytes(6_000);
    let location = start_upload(&c, &b, "team/app").await;
    let location = patch(&c, &b, &location, 0, &bytes[..2_500]).await;
    // Two parts sent, the rest kept in the bucket as the tail.
    assert_eq!(multipart_uploads(&bucket).await, 1);
    let upload_keys = bucket.keys("uploads").await;
    assert_eq!(upload_keys.len(), 1, "{upload_keys:?}");
    assert!(upload_keys[0].contains("/tail-"), "{upload_keys:?}");

    b.restart();
    // Pooled connections went with the old process.
    let c = Client::new();
    let r = c.get(b.url(&location)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), "0-2499");
    let location = patch(&c, &b, &location, 2_500, &bytes[2_500..4_000]).await;
    b.crash_and_restart();
    let c = Client::new();
    let location = patch(&c, &b, &location, 4_000, &bytes[4_000..]).await;
    let digest = sha256(&bytes);
    let r = finish(&c, &b, &location, &digest).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{r:?}");
    assert!(pull(&c, &b, "team/app", &digest).await == bytes);
    assert!(bucket.keys("uploads").await.is_empty());
}

#[tokio::test]
async fn a_layer_of_many_parts_is_moved_by_streaming_above_the_copy_limit() {
    let moto = MotoServer::start();
    let bucket = moto.bucket().await;
    // 1,100 KiB in 1 KiB parts: past the first thousand parts, where part
    // sizes double; above max_copy_bytes, so moved as a streamed copy.
    let b = Berth::start_with_config(&bucket.config("part_size = 1024\nmax_copy_bytes = 100000"));
    let c = Client::new();
    let bytes = random_bytes(1_100 * 1024);
    let digest = sha256(&bytes);
    push_chunked(&c, &b, "team/big", &bytes, &[256 * 1024 + 17], &digest).await;
    assert!(pull(&c, &b, "team/big", &digest).await == bytes);
    assert!(
        bucket
            .get(&S3Bucket::blob_key("", &digest))
            .await
            .as_deref()
            == Some(&bytes[..])
    );
    // A monolithic push of the same size takes the same path.
    let mono = random_bytes(300_000);
    let mono_digest = push_blob(&c, &b, "team/big", &mono).await;
    assert!(pull(&c, &b, "team/big", &mono_digest).await == mono);
    assert!(bucket.keys("uploads").await.is_empty());
    assert_eq!(multipart_uploads(&bucket).await, 0);
}

#[tokio::test]
async fn blob_gets_redirect_to_presigned_urls() {
    let moto = MotoServer::start();
    let bucket = moto.bucket().await;
    let b = Berth::start_with_config(&bucket.config("redirect = true"));
    let c = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let bytes = random_bytes(20_000);
    let digest = push_blob(&c, &b, "team/app", &bytes).await;

    let r = c
        .get(b.url(&format!("/v2/team/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT, "{r:?}");
    assert_eq!(header(&r, "docker-content-digest"), digest);
    let url = header(&r, "location");
    assert!(url.starts_with(&bucket.endpoint), "{url}");
    // A plain client, with no credentials, gets the bytes there.
    let fetched = reqwest::get(&url).await.unwrap();
    assert_eq!(fetched.status(), StatusCode::OK);
    assert!(fetched.bytes().await.unwrap() == bytes);

    // HEAD and ranges stay with berth.
    let r = c
        .head(b.url(&format!("/v2/team/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), "20000");
    let r = c
        .get(b.url(&format!("/v2/team/app/blobs/{digest}")))
        .header("range", "bytes=-100")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert!(r.bytes().await.unwrap() == bytes[19_900..]);
    // Unknown blobs are still BLOB_UNKNOWN, not a redirect.
    let r = c
        .get(b.url(&format!("/v2/team/app/blobs/{}", sha256(b"nothing"))))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
}

#[tokio::test]
async fn a_digest_mismatch_or_a_cancel_leaves_nothing() {
    let moto = MotoServer::start();
    let bucket = moto.bucket().await;
    let b = Berth::start_with_config(&bucket.config("part_size = 1024"));
    let c = Client::new();
    let bytes = random_bytes(5_000);

    for wrong in [sha256(b"something else"), sha512(b"something else")] {
        let location = start_upload(&c, &b, "team/app").await;
        let location = patch(&c, &b, &location, 0, &bytes).await;
        let r = finish(&c, &b, &location, &wrong).await;
        expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
        for digest in [&wrong, &sha256(&bytes)] {
            let r = c
                .head(b.url(&format!("/v2/team/app/blobs/{digest}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::NOT_FOUND);
        }
        let r = c.get(b.url(&location)).send().await.unwrap();
        expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    }
    assert!(
        bucket.keys("").await.is_empty(),
        "{:?}",
        bucket.keys("").await
    );
    assert_eq!(multipart_uploads(&bucket).await, 0);

    let location = start_upload(&c, &b, "team/app").await;
    let location = patch(&c, &b, &location, 0, &bytes).await;
    assert_eq!(multipart_uploads(&bucket).await, 1);
    let r = c.delete(b.url(&location)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(multipart_uploads(&bucket).await, 0);
    assert!(bucket.keys("").await.is_empty());
    let r = c.get(b.url(&location)).send().await.unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
}

#[tokio::test]
async fn garbage_collection_empties_the_bucket_of_garbage() {
    let moto = MotoServer::start();
    let bucket = moto.bucket().await;
    let b = Berth::start_with_config(&format!("{}{EAGER_GC}", bucket.config("part_size = 1024")));
    let c = Client::new();
    let manifest = push_tagged(&c, &b, "team/app", "v1").await;
    let kept = pull_manifest(&c, &b, "team/app", "v1").await;
    let referenced = [
        kept["config"]["digest"].as_str().unwrap().to_owned(),
        kept["layers"][0]["digest"].as_str().unwrap().to_owned(),
    ];
    let unreferenced = push_blob(&c, &b, "team/app", &random_bytes(4_000)).await;
    // An abandoned upload with parts, and a stray object no row names.
    let location = start_upload(&c, &b, "team/app").await;
    patch(&c, &b, &location, 0, &random_bytes(3_000)).await;
    let stray = random_bytes(100);
    let stray_key = S3Bucket::blob_key("", &sha256(&stray));
    use object_store::ObjectStoreExt;
    bucket
        .store()
        .put(
            &object_store::path::Path::from(stray_key.as_str()),
            stray.into(),
        )
        .await
        .unwrap();

    let report: Value = serde_json::from_str(&b.manage(&["gc", "--json"])).unwrap();
    assert_eq!(report["blobs_deleted"], 1, "{report}");
    assert_eq!(report["uploads_purged"], 1, "{report}");
    assert_eq!(report["orphan_files_deleted"], 1, "{report}");

    assert_eq!(
        bucket.get(&S3Bucket::blob_key("", &unreferenced)).await,
        None
    );
    assert_eq!(bucket.get(&stray_key).await, None);
    for digest in &referenced {
        assert!(bucket.get(&S3Bucket::blob_key("", digest)).await.is_some());
        assert!(!pull(&c, &b, "team/app", digest).await.is_empty());
    }
    let r = c
        .get(b.url(&format!("/v2/team/app/manifests/{manifest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(bucket.keys("uploads").await.is_empty());
    assert_eq!(multipart_uploads(&bucket).await, 0);
    let left: Vec<String> = bucket.keys("").await;
    assert_eq!(left.len(), 2, "{left:?}");
}

#[test]
fn skopeo_round_trips_an_image_through_the_bucket() {
    let moto = MotoServer::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bucket = runtime.block_on(moto.bucket());
    let work = clients::short_tempdir();
    let berth = Berth::start_with_config(&bucket.config("part_size = 1048576"));
    let image = clients::Image::generate(work.path(), "img", "v1", 2, 3_000_000);
    let remote = format!("{}/team/image", berth.host);
    clients::ok(Command::new("skopeo").args([
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &image.oci_ref(),
        &format!("docker://{remote}:v1"),
    ]));
    let back = work.path().join("back");
    clients::ok(Command::new("skopeo").args([
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!("docker://{remote}:v1"),
        &format!("oci:{}:v1", back.display()),
    ]));
    for digest in image.blobs() {
        let original = clients::read(&clients::layout_blob(&image.layout, digest));
        let copy = clients::read(&clients::layout_blob(&back, digest));
        assert!(original == copy, "pulled blob {digest} differs");
    }
    for layer in &image.layers {
        let stored = runtime.block_on(bucket.get(&S3Bucket::blob_key("", layer)));
        assert_eq!(stored.map(|s| sha256(&s)), Some(layer.clone()));
    }
}
