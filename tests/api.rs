//! The distribution API over real HTTP against a real berth process:
//! what a client sees for each way of pushing and pulling, and for each
//! kind of bad input.

mod common;

use common::push::{push_blob, push_image, put_manifest, random_bytes};
use common::{Berth, expect_error, header, sha256};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use common::push::OCI_MANIFEST;
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

async fn get(c: &Client, b: &Berth, path: impl AsRef<str>) -> reqwest::Response {
    c.get(b.url(path.as_ref())).send().await.unwrap()
}

async fn head(c: &Client, b: &Berth, path: impl AsRef<str>) -> reqwest::Response {
    c.head(b.url(path.as_ref())).send().await.unwrap()
}

async fn delete(c: &Client, b: &Berth, path: impl AsRef<str>) -> reqwest::Response {
    c.delete(b.url(path.as_ref())).send().await.unwrap()
}

#[tokio::test]
async fn base_endpoint_announces_the_api() {
    let b = Berth::start();
    let r = reqwest::get(b.url("/v2/")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "docker-distribution-api-version"),
        "registry/2.0"
    );
    // Errors carry it too, so clients recognise the registry.
    let r = reqwest::get(b.url("/v2/nothing/here/at/all"))
        .await
        .unwrap();
    assert_eq!(
        header(&r, "docker-distribution-api-version"),
        "registry/2.0"
    );
    expect_error(r, StatusCode::NOT_FOUND, "UNSUPPORTED").await;
}

#[tokio::test]
async fn monolithic_push_then_pull_with_ranges() {
    let b = Berth::start();
    let c = Client::new();
    let bytes = random_bytes(100_000);
    let digest = sha256(&bytes);

    let r = c
        .post(b.url(&format!(
            "/v2/team/sub/image/blobs/uploads/?digest={digest}"
        )))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        header(&r, "location"),
        format!("/v2/team/sub/image/blobs/{digest}")
    );
    assert_eq!(header(&r, "docker-content-digest"), digest);

    let r = head(&c, &b, &format!("/v2/team/sub/image/blobs/{digest}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), "100000");
    assert_eq!(header(&r, "docker-content-digest"), digest);

    let r = get(&c, &b, &format!("/v2/team/sub/image/blobs/{digest}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), bytes);

    let r = c
        .get(b.url(&format!("/v2/team/sub/image/blobs/{digest}")))
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&r, "content-range"), "bytes 1000-1999/100000");
    assert_eq!(r.bytes().await.unwrap(), &bytes[1000..2000]);

    let r = c
        .get(b.url(&format!("/v2/team/sub/image/blobs/{digest}")))
        .header("range", "bytes=-10")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap(), &bytes[99_990..]);

    let r = c
        .get(b.url(&format!("/v2/team/sub/image/blobs/{digest}")))
        .header("range", "bytes=100000-")
        .send()
        .await
        .unwrap();
    // No code of the spec's list names it: no body, the size in the header.
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&r, "content-range"), "bytes */100000");
    assert!(r.bytes().await.unwrap().is_empty());

    // A blob is visible only in the repository it was pushed to.
    let r = get(&c, &b, &format!("/v2/other/blobs/{digest}")).await;
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
}

#[tokio::test]
async fn post_then_put_and_empty_blob() {
    let b = Berth::start();
    let c = Client::new();
    for bytes in [random_bytes(5000), Vec::new()] {
        let digest = sha256(&bytes);
        let r = c.post(b.url("/v2/a/blobs/uploads/")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        assert_eq!(header(&r, "range"), "0-0");
        let location = header(&r, "location").to_owned();
        assert!(location.starts_with("/v2/a/blobs/uploads/"));
        assert_eq!(
            header(&r, "docker-upload-uuid"),
            location.rsplit('/').next().unwrap()
        );

        let r = c
            .put(b.url(&format!("{location}?digest={digest}")))
            .header("content-type", "application/octet-stream")
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{r:?}");
        let r = get(&c, &b, &format!("/v2/a/blobs/{digest}")).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.bytes().await.unwrap(), bytes);
        // The session is over.
        let r = get(&c, &b, &location).await;
        expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    }
}

#[tokio::test]
async fn chunked_upload_in_order_and_out_of_order() {
    let b = Berth::start();
    let c = Client::new();
    let bytes = random_bytes(30_000);
    let digest = sha256(&bytes);
    let r = c
        .post(b.url("/v2/a/b/blobs/uploads/"))
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    let mut location = header(&r, "location").to_owned();

    for (start, end) in [(0usize, 9_999usize), (10_000, 19_999)] {
        let r = c
            .patch(b.url(&location))
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{start}-{end}"))
            .body(bytes[start..=end].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{r:?}");
        assert_eq!(header(&r, "range"), format!("0-{end}"));
        location = header(&r, "location").to_owned();
    }

    let r = get(&c, &b, &location).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), "0-19999");

    // A chunk that skips ahead, or repeats one already sent, is refused
    // with 416 and the true end of the upload.
    for (start, end) in [(25_000usize, 29_999usize), (10_000, 19_999)] {
        let r = c
            .patch(b.url(&location))
            .header("content-range", format!("{start}-{end}"))
            .body(bytes[start..=end].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(header(&r, "range"), "0-19999");
        expect_error(r, StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID").await;
    }

    // The last chunk rides on the closing PUT.
    let r = c
        .put(b.url(&format!("{location}?digest={digest}")))
        .header("content-range", "20000-29999")
        .body(bytes[20_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{r:?}");
    let r = get(&c, &b, &format!("/v2/a/b/blobs/{digest}")).await;
    assert_eq!(r.bytes().await.unwrap(), bytes);
}

#[tokio::test]
async fn streamed_patch_without_content_range() {
    let b = Berth::start();
    let c = Client::new();
    let parts: Vec<Vec<u8>> = (0..20).map(|_| random_bytes(50_000)).collect();
    let whole: Vec<u8> = parts.concat();
    let digest = sha256(&whole);
    let r = c.post(b.url("/v2/s/blobs/uploads/")).send().await.unwrap();
    let location = header(&r, "location").to_owned();

    // Chunked transfer encoding, as docker and podman send it.
    let stream = futures_util::stream::iter(parts.into_iter().map(Ok::<_, std::io::Error>));
    let r = c
        .patch(b.url(&location))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), format!("0-{}", whole.len() - 1));
    let r = c
        .put(b.url(&format!("{location}?digest={digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{r:?}");
    let r = get(&c, &b, &format!("/v2/s/blobs/{digest}")).await;
    assert_eq!(r.bytes().await.unwrap(), whole);
}

#[tokio::test]
async fn digest_mismatch_leaves_nothing_behind() {
    let b = Berth::start();
    let c = Client::new();
    let bytes = random_bytes(10_000);
    let claimed = sha256(b"something else entirely");

    let r = c
        .post(b.url(&format!("/v2/m/blobs/uploads/?digest={claimed}")))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;

    let r = c.post(b.url("/v2/m/blobs/uploads/")).send().await.unwrap();
    let location = header(&r, "location").to_owned();
    let r = c
        .patch(b.url(&location))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = c
        .put(b.url(&format!("{location}?digest={claimed}")))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;

    for digest in [&claimed, &sha256(&bytes)] {
        let r = head(&c, &b, &format!("/v2/m/blobs/{digest}")).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    let r = get(&c, &b, &location).await;
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    // Neither a stored blob nor an upload file remains on disk.
    let leftover: Vec<_> = walk(&b.data_dir().join("blobs"))
        .into_iter()
        .chain(walk(&b.data_dir().join("uploads")))
        .collect();
    assert!(leftover.is_empty(), "left on disk: {leftover:?}");

    // A missing or malformed digest on the closing PUT is refused too.
    let r = c.post(b.url("/v2/m/blobs/uploads/")).send().await.unwrap();
    let location = header(&r, "location").to_owned();
    for query in [
        "",
        "?digest=sha256:totallywrong",
        "?digest=md5:d41d8cd98f00b204e9800998ecf8427e",
    ] {
        let r = c
            .put(b.url(&format!("{location}{query}")))
            .send()
            .await
            .unwrap();
        expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = vec![];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                files.extend(walk(&e.path()));
            } else {
                files.push(e.path());
            }
        }
    }
    files
}

#[tokio::test]
async fn chunked_upload_survives_a_restart() {
    let mut b = Berth::start();
    let c = Client::new();
    let bytes = random_bytes(200_000);
    let digest = sha256(&bytes);
    let r = c.post(b.url("/v2/r/blobs/uploads/")).send().await.unwrap();
    let location = header(&r, "location").to_owned();
    let r = c
        .patch(b.url(&location))
        .header("content-range", "0-99999")
        .body(bytes[..100_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    b.restart();
    // The old process's pooled connections died with it.
    let c = Client::new();

    let r = get(&c, &b, &location).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), "0-99999");
    let r = c
        .patch(b.url(&location))
        .header("content-range", "100000-199999")
        .body(bytes[100_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = c
        .put(b.url(&format!("{location}?digest={digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{r:?}");

    // And what was acknowledged before a restart is still there after one.
    b.restart();
    let c = Client::new();
    let r = get(&c, &b, &format!("/v2/r/blobs/{digest}")).await;
    assert_eq!(r.bytes().await.unwrap(), bytes);
}

#[tokio::test]
async fn concurrent_patches_to_one_upload_never_interleave() {
    let b = Berth::start();
    let c = Client::new();
    let r = c.post(b.url("/v2/c/blobs/uploads/")).send().await.unwrap();
    let location = header(&r, "location").to_owned();
    let one = random_bytes(2_000_000);
    let two = random_bytes(2_000_000);
    let send = |body: Vec<u8>| {
        c.patch(b.url(&location))
            .header("content-range", format!("0-{}", body.len() - 1))
            .body(body)
            .send()
    };
    let (r1, r2) = tokio::join!(send(one.clone()), send(two.clone()));
    let statuses = [r1.unwrap().status(), r2.unwrap().status()];
    assert!(
        statuses.contains(&StatusCode::ACCEPTED)
            && statuses.contains(&StatusCode::RANGE_NOT_SATISFIABLE),
        "{statuses:?}"
    );
    // Exactly one of the two bodies is the upload.
    let winner = if statuses[0] == StatusCode::ACCEPTED {
        one
    } else {
        two
    };
    let r = c
        .put(b.url(&format!("{location}?digest={}", sha256(&winner))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{r:?}");
}

#[tokio::test]
async fn cancel_upload() {
    let b = Berth::start();
    let c = Client::new();
    let r = c.post(b.url("/v2/x/blobs/uploads/")).send().await.unwrap();
    let location = header(&r, "location").to_owned();
    let r = c
        .patch(b.url(&location))
        .body(random_bytes(1000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = delete(&c, &b, &location).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = c
        .patch(b.url(&location))
        .body(random_bytes(10))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    // An upload belongs to its repository.
    let r = c.post(b.url("/v2/x/blobs/uploads/")).send().await.unwrap();
    let id = header(&r, "docker-upload-uuid").to_owned();
    let r = get(&c, &b, &format!("/v2/y/blobs/uploads/{id}")).await;
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
}

#[tokio::test]
async fn manifests_by_tag_and_digest() {
    let b = Berth::start();
    let c = Client::new();
    for (repo, media_type) in [("oci/img", OCI_MANIFEST), ("docker/img", DOCKER_MANIFEST)] {
        let manifest = serde_json::to_vec(&push_image(&c, &b, repo, media_type).await).unwrap();
        let digest = sha256(&manifest);
        let r = put_manifest(&c, &b, repo, "v1", media_type, &manifest).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{r:?}");
        assert_eq!(header(&r, "docker-content-digest"), digest);
        assert_eq!(
            header(&r, "location"),
            format!("/v2/{repo}/manifests/{digest}")
        );

        for reference in ["v1", digest.as_str()] {
            let r = get(&c, &b, &format!("/v2/{repo}/manifests/{reference}")).await;
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(header(&r, "content-type"), media_type);
            assert_eq!(header(&r, "docker-content-digest"), digest);
            assert_eq!(r.bytes().await.unwrap(), manifest);
            let r = head(&c, &b, &format!("/v2/{repo}/manifests/{reference}")).await;
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(header(&r, "content-length"), manifest.len().to_string());
        }

        // An index over it, pushed by digest.
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": media_type, "digest": digest, "size": manifest.len(),
                           "platform": {"architecture": "amd64", "os": "linux"}}]
        }))
        .unwrap();
        let index_digest = sha256(&index);
        let r = put_manifest(&c, &b, repo, &index_digest, OCI_INDEX, &index).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{r:?}");
        let r = get(&c, &b, &format!("/v2/{repo}/manifests/{index_digest}")).await;
        assert_eq!(header(&r, "content-type"), OCI_INDEX);
    }

    // Moving a tag.
    let manifest = serde_json::to_vec(&push_image(&c, &b, "oci/img", OCI_MANIFEST).await).unwrap();
    let r = put_manifest(&c, &b, "oci/img", "v1", OCI_MANIFEST, &manifest).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = get(&c, &b, "/v2/oci/img/manifests/v1").await;
    assert_eq!(header(&r, "docker-content-digest"), sha256(&manifest));

    let r = get(&c, &b, "/v2/oci/img/manifests/nope").await;
    expect_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    // A reference that cannot name a manifest is not found (as the OCI
    // conformance suite requires); a push to it is told why.
    for reference in ["sha256:totallywrong", ".INVALID_MANIFEST_NAME"] {
        let path = format!("/v2/oci/img/manifests/{reference}");
        let r = get(&c, &b, &path).await;
        expect_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
        let r = c.head(b.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "HEAD {path}");
    }
    let r = put_manifest(
        &c,
        &b,
        "oci/img",
        "sha256:totallywrong",
        OCI_MANIFEST,
        &manifest,
    )
    .await;
    expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    let r = put_manifest(
        &c,
        &b,
        "oci/img",
        ".INVALID_MANIFEST_NAME",
        OCI_MANIFEST,
        &manifest,
    )
    .await;
    expect_error(r, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
}

#[tokio::test]
async fn bad_manifests_are_refused() {
    let b = Berth::start();
    let c = Client::new();
    let good = push_image(&c, &b, "bad/m", OCI_MANIFEST).await;

    // A layer that was never pushed.
    let mut missing = good.clone();
    missing["layers"][0]["digest"] = json!(sha256(b"never pushed"));
    let r = put_manifest(
        &c,
        &b,
        "bad/m",
        "t",
        OCI_MANIFEST,
        &serde_json::to_vec(&missing).unwrap(),
    )
    .await;
    let body = expect_error(r, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;
    assert_eq!(
        body["errors"][0]["detail"]["digest"],
        sha256(b"never pushed")
    );

    // Blobs pushed to another repository are not this one's.
    let r = put_manifest(
        &c,
        &b,
        "bad/other",
        "t",
        OCI_MANIFEST,
        &serde_json::to_vec(&good).unwrap(),
    )
    .await;
    expect_error(r, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;

    // An index whose child manifest is not in the repository.
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256(b"no such manifest"), "size": 10}]});
    let r = put_manifest(
        &c,
        &b,
        "bad/m",
        "t",
        OCI_INDEX,
        &serde_json::to_vec(&index).unwrap(),
    )
    .await;
    expect_error(r, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;

    // Wrong sizes, malformed JSON, wrong schema, a media type that disagrees.
    let mut wrong_size = good.clone();
    wrong_size["layers"][0]["size"] = json!(1);
    let bodies: Vec<(String, Vec<u8>)> = vec![
        (
            OCI_MANIFEST.into(),
            serde_json::to_vec(&wrong_size).unwrap(),
        ),
        (OCI_MANIFEST.into(), b"{not json".to_vec()),
        (OCI_MANIFEST.into(), br#"{"schemaVersion":1}"#.to_vec()),
        (DOCKER_MANIFEST.into(), serde_json::to_vec(&good).unwrap()),
    ];
    for (content_type, body) in bodies {
        let r = put_manifest(&c, &b, "bad/m", "t", &content_type, &body).await;
        expect_error(r, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
    }

    // Pushed by a digest it does not have.
    let body = serde_json::to_vec(&good).unwrap();
    let r = put_manifest(&c, &b, "bad/m", &sha256(b"other"), OCI_MANIFEST, &body).await;
    expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;

    // Too large.
    let r = put_manifest(
        &c,
        &b,
        "bad/m",
        "big",
        OCI_MANIFEST,
        &vec![b' '; 5 * 1024 * 1024],
    )
    .await;
    expect_error(r, StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID").await;

    // None of it became visible.
    let r = get(&c, &b, "/v2/bad/m/manifests/t").await;
    expect_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    let r = get(&c, &b, "/v2/bad/m/tags/list").await;
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!([]));
}

#[tokio::test]
async fn tag_list_is_sorted_and_paged() {
    let b = Berth::start();
    let c = Client::new();
    let manifest = serde_json::to_vec(&push_image(&c, &b, "t/img", OCI_MANIFEST).await).unwrap();
    for tag in ["v10", "B", "a", "v2", "latest", "_x"] {
        let r = put_manifest(&c, &b, "t/img", tag, OCI_MANIFEST, &manifest).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let r = get(&c, &b, "/v2/t/img/tags/list").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("link").is_none());
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"name": "t/img", "tags": ["_x", "a", "B", "latest", "v10", "v2"]})
    );

    let r = get(&c, &b, "/v2/t/img/tags/list?n=2").await;
    assert_eq!(
        header(&r, "link"),
        "</v2/t/img/tags/list?n=2&last=a>; rel=\"next\""
    );
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!(["_x", "a"]));
    let r = get(&c, &b, "/v2/t/img/tags/list?n=3&last=a").await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["tags"],
        json!(["B", "latest", "v10"])
    );
    let r = get(&c, &b, "/v2/t/img/tags/list?n=0").await;
    assert!(r.headers().get("link").is_none());
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!([]));

    let r = get(&c, &b, "/v2/no/such/repo/tags/list").await;
    expect_error(r, StatusCode::NOT_FOUND, "NAME_UNKNOWN").await;

    // Lists are answered from memory once read: a push and a delete show at
    // once, and a tag differing only in case has its own place.
    for tag in ["A", "v3"] {
        let r = put_manifest(&c, &b, "t/img", tag, OCI_MANIFEST, &manifest).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let r = delete(&c, &b, "/v2/t/img/manifests/latest").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let all = ["_x", "A", "a", "B", "v10", "v2", "v3"];
    let r = get(&c, &b, "/v2/t/img/tags/list").await;
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!(all));
    // Every page, for every page size, following the Link headers, lists
    // each tag once, in order.
    for n in 1..=all.len() + 1 {
        let mut seen = Vec::new();
        let mut next = Some(format!("/v2/t/img/tags/list?n={n}"));
        while let Some(path) = next {
            let r = get(&c, &b, &path).await;
            next = r.headers().get("link").map(|l| {
                l.to_str()
                    .unwrap()
                    .split(['<', '>'])
                    .nth(1)
                    .unwrap()
                    .to_owned()
            });
            let page = r.json::<Value>().await.unwrap()["tags"].clone();
            seen.extend(
                page.as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_str().unwrap().to_owned()),
            );
        }
        assert_eq!(seen, all, "n={n}");
    }
    // A `last` that is no tag falls between tags.
    let r = get(&c, &b, "/v2/t/img/tags/list?last=Aa").await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["tags"],
        json!(["B", "v10", "v2", "v3"])
    );
    // No tag holds a NUL, so a `last` with one falls between tags too
    // (PostgreSQL text cannot hold it).
    let r = get(&c, &b, "/v2/t/img/tags/list?last=A%00b").await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["tags"],
        json!(["B", "v10", "v2", "v3"])
    );
}

/// Sends a request exactly as written: HTTP clients normalise paths (`..`)
/// before sending, attackers do not. Returns the status and the body.
async fn raw_get(b: &Berth, path: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(&b.host).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        b.host
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn bad_names_and_methods() {
    let b = Berth::start();
    let c = Client::new();
    for path in [
        "/v2/UPPER/tags/list",
        "/v2/a/../b/tags/list",
        "/v2/../../etc/tags/list",
        "/v2/a/%2e%2e/b/tags/list",
        "/v2/a%5cb/tags/list",
        "/v2/a\\b/tags/list",
        "/v2/a%00b/tags/list",
        "/v2/a__-b/blobs/uploads/",
    ] {
        let (status, body) = raw_get(&b, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["errors"][0]["code"], "NAME_INVALID", "{path}: {body}");
    }
    let r = get(&c, &b, "/v2/a/blobs/sha256:123").await;
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
    let r = get(&c, &b, "/v2/a/manifests/-nottag").await;
    expect_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    let r = c.post(b.url("/v2/a/tags/list")).send().await.unwrap();
    expect_error(r, StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED").await;
    let r = get(&c, &b, "/v2/a/blobs/uploads/not-an-upload").await;
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    let r = get(&c, &b, "/elsewhere").await;
    expect_error(r, StatusCode::NOT_FOUND, "UNSUPPORTED").await;
}

#[tokio::test]
async fn cross_repository_mount() {
    let b = Berth::start();
    let c = Client::new();
    let bytes = random_bytes(4000);
    let digest = push_blob(&c, &b, "src/repo", &bytes).await;

    let r = c
        .post(b.url(&format!(
            "/v2/dst/repo/blobs/uploads/?mount={digest}&from=src/repo"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        header(&r, "location"),
        format!("/v2/dst/repo/blobs/{digest}")
    );
    let r = get(&c, &b, &format!("/v2/dst/repo/blobs/{digest}")).await;
    assert_eq!(r.bytes().await.unwrap(), bytes);

    // With no `from`, a blob berth already holds is mounted all the same.
    let r = c
        .post(b.url(&format!("/v2/third/repo/blobs/uploads/?mount={digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = get(&c, &b, format!("/v2/third/repo/blobs/{digest}")).await;
    assert_eq!(r.bytes().await.unwrap(), bytes);

    // Not in `from`: an upload session starts instead.
    let unknown = sha256(b"unknown blob");
    let r = c
        .post(b.url(&format!(
            "/v2/dst/repo/blobs/uploads/?mount={unknown}&from=src/repo"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(header(&r, "location").starts_with("/v2/dst/repo/blobs/uploads/"));
}

#[tokio::test]
async fn deletes() {
    let b = Berth::start();
    let c = Client::new();
    let manifest = serde_json::to_vec(&push_image(&c, &b, "d/img", OCI_MANIFEST).await).unwrap();
    let digest = sha256(&manifest);
    for tag in ["one", "two", "three"] {
        let r = put_manifest(&c, &b, "d/img", tag, OCI_MANIFEST, &manifest).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }

    // A tag goes alone.
    let r = delete(&c, &b, "/v2/d/img/manifests/one").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = get(&c, &b, "/v2/d/img/manifests/one").await;
    expect_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    let r = get(&c, &b, "/v2/d/img/manifests/two").await;
    assert_eq!(r.status(), StatusCode::OK);

    // A manifest takes its tags with it.
    let r = delete(&c, &b, &format!("/v2/d/img/manifests/{digest}")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    for reference in ["two", "three", digest.as_str()] {
        let r = get(&c, &b, &format!("/v2/d/img/manifests/{reference}")).await;
        expect_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    }
    let r = get(&c, &b, "/v2/d/img/tags/list").await;
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!([]));
    let r = delete(&c, &b, &format!("/v2/d/img/manifests/{digest}")).await;
    expect_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;

    // A blob.
    let blob = push_blob(&c, &b, "d/img", b"some bytes").await;
    let r = delete(&c, &b, &format!("/v2/d/img/blobs/{blob}")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = head(&c, &b, &format!("/v2/d/img/blobs/{blob}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = delete(&c, &b, &format!("/v2/d/img/blobs/{blob}")).await;
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
}

#[tokio::test]
async fn referrers() {
    let b = Berth::start();
    let c = Client::new();
    let subject = serde_json::to_vec(&push_image(&c, &b, "ref/img", OCI_MANIFEST).await).unwrap();
    let subject_digest = sha256(&subject);

    // Referrers may be pushed before their subject.
    let empty = push_blob(&c, &b, "ref/img", b"{}").await;
    let mut pushed = vec![];
    for (artifact_type, note) in [
        ("application/vnd.example.sbom", "sbom"),
        ("application/vnd.example.sig", "sig"),
    ] {
        let artifact = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": subject.len()},
            "annotations": {"note": note},
        }))
        .unwrap();
        let digest = sha256(&artifact);
        let r = put_manifest(&c, &b, "ref/img", &digest, OCI_MANIFEST, &artifact).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{r:?}");
        assert_eq!(header(&r, "oci-subject"), subject_digest);
        pushed.push((digest, artifact.len(), artifact_type, note));
    }
    let r = put_manifest(&c, &b, "ref/img", "v1", OCI_MANIFEST, &subject).await;
    assert_eq!(r.status(), StatusCode::CREATED);

    let r = get(&c, &b, &format!("/v2/ref/img/referrers/{subject_digest}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    assert!(r.headers().get("oci-filters-applied").is_none());
    let index: Value = r.json().await.unwrap();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], OCI_INDEX);
    let mut listed: Vec<Value> = index["manifests"].as_array().unwrap().clone();
    listed.sort_by_key(|d| d["digest"].as_str().unwrap().to_owned());
    pushed.sort();
    let expected: Vec<Value> = pushed
        .iter()
        .map(|(digest, size, artifact_type, note)| {
            json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": size,
                   "artifactType": artifact_type, "annotations": {"note": note}})
        })
        .collect();
    assert_eq!(listed, expected);

    let r = get(
        &c,
        &b,
        &format!("/v2/ref/img/referrers/{subject_digest}?artifactType=application/vnd.example.sig"),
    )
    .await;
    assert_eq!(header(&r, "oci-filters-applied"), "artifactType");
    let index: Value = r.json().await.unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(
        index["manifests"][0]["artifactType"],
        "application/vnd.example.sig"
    );

    // Nothing refers to an unknown digest: an empty index, not an error.
    let r = get(&c, &b, &format!("/v2/ref/img/referrers/{}", sha256(b"x"))).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["manifests"], json!([]));
    let r = get(&c, &b, "/v2/ref/img/referrers/sha256:bad").await;
    expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
}

#[tokio::test]
async fn catalog_is_sorted_and_paged() {
    let b = Berth::start();
    let c = Client::new();
    for repo in ["zeta", "alpha/one", "alpha", "mid/x/y"] {
        push_blob(&c, &b, repo, repo.as_bytes()).await;
    }
    let r = get(&c, &b, "/v2/_catalog").await;
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"repositories": ["alpha", "alpha/one", "mid/x/y", "zeta"]})
    );
    let r = get(&c, &b, "/v2/_catalog?n=2").await;
    assert_eq!(
        header(&r, "link"),
        "</v2/_catalog?n=2&last=alpha/one>; rel=\"next\""
    );
    assert_eq!(
        r.json::<Value>().await.unwrap()["repositories"],
        json!(["alpha", "alpha/one"])
    );
    let r = get(&c, &b, "/v2/_catalog?n=2&last=alpha/one").await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["repositories"],
        json!(["mid/x/y", "zeta"])
    );
}

#[tokio::test]
async fn deletes_can_be_turned_off() {
    let b = Berth::start_with_config("delete_enabled = false\n");
    let c = Client::new();
    let manifest = serde_json::to_vec(&push_image(&c, &b, "keep/img", OCI_MANIFEST).await).unwrap();
    let r = put_manifest(&c, &b, "keep/img", "v1", OCI_MANIFEST, &manifest).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let blob = push_blob(&c, &b, "keep/img", b"kept").await;
    for path in [
        "/v2/keep/img/manifests/v1".to_owned(),
        format!("/v2/keep/img/blobs/{blob}"),
    ] {
        let r = delete(&c, &b, &path).await;
        expect_error(r, StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED").await;
        let r = get(&c, &b, &path).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn reads_after_a_tag_moves_or_a_delete_see_the_change() {
    // Manifests and blob sizes are answered from memory after the first
    // read; every write must make the next read see it.
    let b = Berth::start();
    let c = Client::new();
    let first = common::push::push_tagged(&c, &b, "cache/app", "latest").await;
    let r = get(&c, &b, "/v2/cache/app/manifests/latest").await;
    assert_eq!(header(&r, "docker-content-digest"), first);
    let second = common::push::push_tagged(&c, &b, "cache/app", "latest").await;
    let r = get(&c, &b, "/v2/cache/app/manifests/latest").await;
    assert_eq!(header(&r, "docker-content-digest"), second);

    let r = get(&c, &b, format!("/v2/cache/app/manifests/{second}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = delete(&c, &b, format!("/v2/cache/app/manifests/{second}")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = get(&c, &b, format!("/v2/cache/app/manifests/{second}")).await;
    expect_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    let r = get(&c, &b, "/v2/cache/app/manifests/latest").await;
    expect_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;

    let blob = push_blob(&c, &b, "cache/app", b"cached blob").await;
    let r = head(&c, &b, format!("/v2/cache/app/blobs/{blob}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = delete(&c, &b, format!("/v2/cache/app/blobs/{blob}")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = head(&c, &b, format!("/v2/cache/app/blobs/{blob}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn probes_answer_without_credentials_and_requests_carry_ids() {
    let b = Berth::start_secure("");
    let c = Client::new();
    let r = c.get(b.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "ok\n");
    let r = c.get(b.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["ready"], true, "{body}");
    assert_eq!(body["checks"]["metadata"], "ok");
    assert_eq!(body["checks"]["blobs"], "ok");

    // Every answer names its request, refusals included; an id the client
    // sent is kept.
    let r = c.get(b.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let id = header(&r, "x-request-id").to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let r = c
        .get(b.url("/v2/"))
        .header("x-request-id", "trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "x-request-id"), "trace-42");
}

#[tokio::test]
async fn json_logs_carry_the_request_id() {
    use std::io::{BufRead, BufReader, Read};
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    common::write_config(&config, "log_format = \"json\"\n");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "berth=debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.split_whitespace().nth(3).unwrap().to_owned();
    let r = Client::new()
        .get(format!("{url}/v2/"))
        .header("x-request-id", "json-logs-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    child.wait().unwrap();
    // Every line is one JSON object (the admin-password banner aside).
    let objects: Vec<Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        objects
            .iter()
            .any(|o| o["span"]["name"] == "request" && o["span"]["id"] == "json-logs-1"),
        "{stderr}"
    );
}
