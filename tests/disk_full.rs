//! A full disk. berth's data directory (uploads, blobs and the SQLite
//! database) is a 64 MiB tmpfs the test mounts; pushes larger than what is
//! free, monolithic and chunked, and a manifest whose metadata commit meets
//! a disk filled from outside. Each failing push answers 507 with a message
//! that says the storage is full, gives its bytes back at once (nothing
//! under uploads/ but what earlier chunks were acknowledged for), and makes
//! nothing visible; /readyz says the disk is full while it is; the next push
//! that fits succeeds without a restart; what was pushed before pulls back
//! identical.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::push::{
    OCI_MANIFEST, pull_manifest, push_blob, push_image, put_manifest, random_bytes,
};
use common::{Berth, sha256};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const MIB: usize = 1 << 20;

/// The metadata in SQLite on the small disk too (also on the suite's
/// PostgreSQL pass): a full disk is what this file is about.
const CONFIG: &str = "[storage]\nmin_free_bytes = 4194304\n\n[database]\nurl = \"\"\n";

/// A size-limited tmpfs mounted on a fresh directory; unmounted on drop
/// (after the berth on it is gone: declare it first).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mib: usize) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs (the tests run as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes free on it.
    fn free(&self) -> u64 {
        let path = std::ffi::CString::new(self.path().to_str().unwrap()).unwrap();
        let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
        // SAFETY: a NUL-terminated path and a place for the answer.
        assert_eq!(
            unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) },
            0
        );
        // SAFETY: statvfs succeeded.
        let stat = unsafe { stat.assume_init() };
        stat.f_bavail * stat.f_frsize
    }

    /// Writes a file outside berth's own until the disk refuses more.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![7u8; 64 * 1024];
        loop {
            if let Err(e) = file.write_all(&block) {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                break;
            }
        }
        // Byte by byte to the last one.
        while file.write_all(&[7]).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

/// Files under uploads/ and their sizes.
fn uploads(b: &Berth) -> Vec<(String, u64)> {
    std::fs::read_dir(b.data_dir().join("uploads"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect()
}

/// A body of `len` bytes sent as it is made, without a Content-Length
/// (chunked transfer), so berth learns it does not fit only as it writes.
fn streamed(bytes: Vec<u8>) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(256 * 1024).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

/// Asserts a 507 whose OCI error says the storage is full.
async fn assert_full(r: reqwest::Response, what: &str) {
    assert_eq!(
        r.status(),
        StatusCode::INSUFFICIENT_STORAGE,
        "{what}: {r:?}"
    );
    let body: Value = r.json().await.unwrap();
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("storage is full"),
        "{what}: the message says why: {body}"
    );
}

async fn readyz(c: &Client, b: &Berth) -> (StatusCode, Value) {
    let r = c.get(b.url("/readyz")).send().await.unwrap();
    (r.status(), r.json().await.unwrap())
}

async fn blob_bytes(c: &Client, b: &Berth, repo: &str, digest: &str) -> Vec<u8> {
    let r = c
        .get(b.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{digest}");
    r.bytes().await.unwrap().to_vec()
}

fn client() -> Client {
    Client::builder().pool_max_idle_per_host(0).build().unwrap()
}

#[tokio::test]
async fn monolithic_pushes_larger_than_the_disk_are_refused_and_leave_nothing() {
    let disk = SmallDisk::mount(64);
    let b = Berth::start_in(disk.path(), CONFIG);
    let c = client();
    // Something pushed before, to pull back afterwards.
    let before = random_bytes(2 * MIB);
    let before_digest = push_blob(&c, &b, "disk/app", &before).await;
    let free = disk.free();

    // With a Content-Length: refused before a byte is written.
    let big = random_bytes(80 * MIB);
    let digest = sha256(&big);
    let r = c
        .post(b.url(&format!("/v2/disk/app/blobs/uploads/?digest={digest}")))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_full(r, "monolithic push with a length").await;
    assert_eq!(uploads(&b), vec![], "nothing kept under uploads/");

    // Streamed without a length: refused when the disk fills, its bytes
    // given back at once.
    let r = c
        .post(b.url(&format!("/v2/disk/app/blobs/uploads/?digest={digest}")))
        .body(streamed(big))
        .send()
        .await
        .unwrap();
    assert_full(r, "monolithic push streamed").await;
    assert_eq!(uploads(&b), vec![], "nothing kept under uploads/");
    assert!(
        disk.free() + MIB as u64 >= free,
        "the failed push's space is free again: {} of {free}",
        disk.free()
    );
    let r = c
        .head(b.url(&format!("/v2/disk/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "no partial blob visible");

    // Not wedged: the next push that fits succeeds, no restart.
    let (status, body) = readyz(&c, &b).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let fits = random_bytes(8 * MIB);
    let fits_digest = push_blob(&c, &b, "disk/app", &fits).await;
    assert_eq!(blob_bytes(&c, &b, "disk/app", &fits_digest).await, fits);
    assert_eq!(blob_bytes(&c, &b, "disk/app", &before_digest).await, before);
}

#[tokio::test]
async fn a_chunk_that_fills_the_disk_is_cut_and_the_upload_goes_on() {
    let disk = SmallDisk::mount(64);
    let b = Berth::start_in(disk.path(), CONFIG);
    let c = client();
    let r = c
        .post(b.url("/v2/disk/chunked/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = b.url(&common::header(&r, "location"));
    let first = random_bytes(8 * MIB);
    let r = c
        .patch(&location)
        .header("content-range", format!("0-{}", first.len() - 1))
        .header("content-type", "application/octet-stream")
        .body(first.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{r:?}");
    let location = b.url(&common::header(&r, "location"));

    // A chunk bigger than what is left: 507, and the upload is back to
    // what was acknowledged.
    let r = c
        .patch(&location)
        .header("content-type", "application/octet-stream")
        .body(streamed(random_bytes(80 * MIB)))
        .send()
        .await
        .unwrap();
    assert_full(r, "chunk").await;
    let files = uploads(&b);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].1, first.len() as u64, "the failed chunk is cut");
    let r = c.get(&location).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        common::header(&r, "range"),
        format!("0-{}", first.len() - 1)
    );

    // The client goes on from there and finishes.
    let last = random_bytes(MIB);
    let whole = [first.as_slice(), last.as_slice()].concat();
    let digest = sha256(&whole);
    let separator = if location.contains('?') { '&' } else { '?' };
    let r = c
        .put(format!("{location}{separator}digest={digest}"))
        .header(
            "content-range",
            format!("{}-{}", first.len(), whole.len() - 1),
        )
        .header("content-type", "application/octet-stream")
        .body(last)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{r:?}");
    assert_eq!(blob_bytes(&c, &b, "disk/chunked", &digest).await, whole);
    assert_eq!(uploads(&b), vec![]);
}

#[tokio::test]
async fn a_disk_filled_from_outside_fails_metadata_commits_clearly_until_freed() {
    let disk = SmallDisk::mount(64);
    let b = Berth::start_in(disk.path(), CONFIG);
    let c = client();
    let earlier = push_image(&c, &b, "disk/meta", OCI_MANIFEST).await;
    let earlier_body = serde_json::to_vec(&earlier).unwrap();
    let r = put_manifest(&c, &b, "disk/meta", "v1", OCI_MANIFEST, &earlier_body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let layer = earlier["layers"][0]["digest"].as_str().unwrap().to_owned();
    let layer_bytes = blob_bytes(&c, &b, "disk/meta", &layer).await;

    // A manifest of 2 MiB (annotations), ready to push.
    let mut manifest = push_image(&c, &b, "disk/meta", OCI_MANIFEST).await;
    manifest["annotations"] = json!({ "padding": "x".repeat(2 * MIB) });
    let body = serde_json::to_vec(&manifest).unwrap();

    let filler = disk.fill();
    let (status, ready) = readyz(&c, &b).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert!(
        ready["checks"]["disk"]
            .as_str()
            .unwrap_or_default()
            .contains("disk full"),
        "{ready}"
    );
    // The manifest's metadata commit meets the full disk.
    let r = put_manifest(&c, &b, "disk/meta", "v2", OCI_MANIFEST, &body).await;
    assert_full(r, "manifest").await;
    // So does a small blob.
    let small = random_bytes(1000);
    let r = c
        .post(b.url(&format!(
            "/v2/disk/meta/blobs/uploads/?digest={}",
            sha256(&small)
        )))
        .body(small.clone())
        .send()
        .await
        .unwrap();
    assert_full(r, "small blob").await;
    // Nothing of them is visible, and what was there still is.
    let r = c
        .get(b.url("/v2/disk/meta/manifests/v2"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let tags: Value = c
        .get(b.url("/v2/disk/meta/tags/list"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], json!(["v1"]));
    assert_eq!(pull_manifest(&c, &b, "disk/meta", "v1").await, earlier);
    assert_eq!(blob_bytes(&c, &b, "disk/meta", &layer).await, layer_bytes);

    // Space comes back: ready again and the same pushes succeed, no restart.
    std::fs::remove_file(filler).unwrap();
    let (status, ready) = readyz(&c, &b).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    let r = put_manifest(&c, &b, "disk/meta", "v2", OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{r:?}");
    assert_eq!(pull_manifest(&c, &b, "disk/meta", "v2").await, manifest);
    push_blob(&c, &b, "disk/meta", &small).await;
    assert_eq!(pull_manifest(&c, &b, "disk/meta", "v1").await, earlier);
    assert_eq!(uploads(&b), vec![]);
}
