//! S3 faults: berth's bucket (moto) behind a fault-injecting proxy
//! (tests/common/fault_proxy.rs) that adds latency, resets connections,
//! answers 503 SlowDown, and cuts uploads mid-body. Every push either
//! succeeds with the right bytes in the bucket or fails clearly (503);
//! pulls during an outage fail with 503 once the configured retries are
//! spent (storage.s3.max_retries, retry_timeout_seconds), not after
//! minutes; /readyz reports the bucket; once the faults stop, pushes and
//! pulls work again without a restart and no multipart upload is left
//! open after garbage collection.

mod common;

use std::time::{Duration, Instant};

use common::Berth;
use common::fault_proxy::{Fault, FaultProxy};
use common::push::random_bytes;
use common::s3::{MotoServer, S3Bucket};
use common::sha256;
use reqwest::{Client, StatusCode};

const BLOB: usize = 300 * 1024;

async fn push(c: &Client, b: &Berth, bytes: &[u8]) -> StatusCode {
    c.post(b.url(&format!(
        "/v2/s3f/app/blobs/uploads/?digest={}",
        sha256(bytes)
    )))
    .body(bytes.to_vec())
    .send()
    .await
    .unwrap()
    .status()
}

/// A chunked push: three PATCHes and the closing PUT with the rest.
async fn push_chunked(c: &Client, b: &Berth, bytes: &[u8]) -> StatusCode {
    let r = c
        .post(b.url("/v2/s3f/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    if r.status() != StatusCode::ACCEPTED {
        return r.status();
    }
    let mut at = b.url(&common::header(&r, "location"));
    // Three PATCHes of a quarter each; the PUT carries the last quarter.
    let third = bytes.len() / 4;
    for (i, chunk) in bytes[..3 * third].chunks(third).enumerate() {
        let r = c
            .patch(&at)
            .header(
                "content-range",
                format!("{}-{}", i * third, (i + 1) * third - 1),
            )
            .header("content-type", "application/octet-stream")
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        if r.status() != StatusCode::ACCEPTED {
            return r.status();
        }
        at = b.url(&common::header(&r, "location"));
    }
    let separator = if at.contains('?') { '&' } else { '?' };
    c.put(format!("{at}{separator}digest={}", sha256(bytes)))
        .header(
            "content-range",
            format!("{}-{}", 3 * third, bytes.len() - 1),
        )
        .header("content-type", "application/octet-stream")
        .body(bytes[3 * third..].to_vec())
        .send()
        .await
        .unwrap()
        .status()
}

async fn pull(c: &Client, b: &Berth, digest: &str) -> (StatusCode, Vec<u8>) {
    let r = c
        .get(b.url(&format!("/v2/s3f/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    let status = r.status();
    match r.bytes().await {
        Ok(body) => (status, body.to_vec()),
        Err(_) => (StatusCode::BAD_GATEWAY, Vec::new()),
    }
}

async fn ready(c: &Client, b: &Berth) -> StatusCode {
    c.get(b.url("/readyz")).send().await.unwrap().status()
}

/// Pushes through the fault both ways: each either succeeds with the right
/// bytes in the bucket, or fails with 503. Returns the statuses.
async fn pushes_under(
    c: &Client,
    b: &Berth,
    bucket: &S3Bucket,
    what: &str,
) -> (Vec<StatusCode>, Duration) {
    let start = Instant::now();
    let mut statuses = Vec::new();
    for chunked in [false, true] {
        let bytes = random_bytes(BLOB);
        let status = if chunked {
            push_chunked(c, b, &bytes).await
        } else {
            push(c, b, &bytes).await
        };
        assert!(
            status == StatusCode::CREATED || status == StatusCode::SERVICE_UNAVAILABLE,
            "{what}: a push (chunked: {chunked}) answered {status}"
        );
        let stored = bucket.get(&S3Bucket::blob_key("", &sha256(&bytes))).await;
        if status == StatusCode::CREATED {
            assert_eq!(
                stored.as_deref(),
                Some(&bytes[..]),
                "{what}: the bucket holds the bytes"
            );
        }
        statuses.push(status);
    }
    (statuses, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_succeed_or_fail_clearly_through_every_fault() {
    let moto = MotoServer::start();
    let bucket = moto.bucket().await;
    let proxy = FaultProxy::start(moto.endpoint.trim_start_matches("http://")).await;
    let behind = S3Bucket {
        endpoint: proxy.endpoint(),
        name: bucket.name.clone(),
    };
    let b = Berth::start_with_config(&behind.config(
        "part_size = 65536\nmax_retries = 2\nretry_timeout_seconds = 5\n\n\
         [gc]\ngrace_period_seconds = 0\nupload_max_age_seconds = 0\ninterval_seconds = 0",
    ));
    // Generous: a pull that waited for minutes fails the test here.
    let c = Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();

    // Something stored before the faults, to pull during them.
    let before = random_bytes(BLOB);
    assert_eq!(push(&c, &b, &before).await, StatusCode::CREATED);
    let before_digest = sha256(&before);

    let mut report = Vec::new();

    // Latency: slower, but everything succeeds.
    proxy.set(Fault::Latency(Duration::from_millis(30)));
    let (statuses, took) = pushes_under(&c, &b, &bucket, "latency").await;
    assert_eq!(statuses, [StatusCode::CREATED; 2], "latency");
    assert_eq!(
        pull(&c, &b, &before_digest).await,
        (StatusCode::OK, before.clone())
    );
    report.push(format!("30 ms latency: pushes {statuses:?} in {took:?}"));

    // Connections reset, SlowDown, uploads cut mid-body: pushes fail
    // clearly; pulls fail fast with 503; /readyz says so.
    for (name, fault) in [
        ("connections reset", Fault::Reset),
        ("503 SlowDown", Fault::SlowDown),
        ("cut after 100 KiB", Fault::CutAfter(100 * 1024)),
    ] {
        proxy.set(fault);
        let (statuses, took) = pushes_under(&c, &b, &bucket, name).await;
        let start = Instant::now();
        let (pulled, _) = pull(&c, &b, &before_digest).await;
        let pull_took = start.elapsed();
        let readiness = ready(&c, &b).await;
        if fault != Fault::CutAfter(100 * 1024) {
            // Small requests pass a cut at 100 KiB; these fail whole.
            assert_eq!(pulled, StatusCode::SERVICE_UNAVAILABLE, "{name}: pull");
            assert_eq!(readiness, StatusCode::SERVICE_UNAVAILABLE, "{name}: readyz");
        }
        report.push(format!(
            "{name}: pushes {statuses:?} in {took:?}; pull {pulled} in {pull_took:?}; readyz {readiness}"
        ));
    }

    // Back to normal, no restart: ready, pushes and pulls work, and what
    // was stored before is intact.
    proxy.set(Fault::Pass);
    assert_eq!(ready(&c, &b).await, StatusCode::OK);
    let (statuses, _) = pushes_under(&c, &b, &bucket, "after").await;
    assert_eq!(statuses, [StatusCode::CREATED; 2], "after the faults");
    assert_eq!(pull(&c, &b, &before_digest).await, (StatusCode::OK, before));

    // Garbage collection leaves no multipart upload open and no upload
    // object behind.
    let gc = b.manage(&["gc", "--json"]);
    let open = multipart_uploads(&bucket).await;
    let leftovers = bucket.keys("uploads/").await;
    report.push(format!(
        "after gc: {open} multipart uploads open, {} upload objects",
        leftovers.len()
    ));
    println!("s3 faults:\n  {}\n  gc: {gc}", report.join("\n  "));
    assert_eq!(open, 0, "multipart uploads left open after gc");
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Multipart uploads open in the bucket (ListMultipartUploads).
async fn multipart_uploads(bucket: &S3Bucket) -> usize {
    let text = Client::new()
        .get(format!("{}/{}?uploads", bucket.endpoint, bucket.name))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.matches("<UploadId>").count()
}
