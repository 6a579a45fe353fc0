//! Every endpoint of the distribution API against malformed input: names,
//! references, digests, upload ids, query parameters and headers. One
//! table, sent as raw HTTP/1.1 (no client library normalises the path),
//! each row asserting the status and the OCI error code a client sees.
//! Reads of what cannot exist are "not found"; writes that cannot be
//! stored are "invalid"; nothing is ever a 5xx, and a 405 only ever means
//! the method.

mod common;

use common::Berth;
use common::push::{OCI_MANIFEST, push_image, put_manifest};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const D: &str = "sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b";

/// What came back: the status, the headers (lower-case names) and the
/// body as JSON (Null when it is none).
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request exactly as written.
async fn send(
    b: &Berth,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut s = tokio::net::TcpStream::connect(&b.host).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        b.host
    );
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap_or("")[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: serde_json::from_str(rest).unwrap_or(Value::Null),
    }
}

/// One row: a request, and the status and error code it must draw (no
/// code for answers without a body: HEAD, and successes).
struct Case {
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
    code: Option<&'static str>,
}

fn case(
    method: &'static str,
    path: impl Into<String>,
    status: u16,
    code: Option<&'static str>,
) -> Case {
    Case {
        method,
        path: path.into(),
        headers: Vec::new(),
        body: Vec::new(),
        status,
        code,
    }
}

impl Case {
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Case {
        self.headers.push((name, value.into()));
        self
    }

    fn body(mut self, body: &[u8]) -> Case {
        self.body = body.to_vec();
        self
    }
}

#[tokio::test]
async fn every_endpoint_answers_malformed_input_with_the_spec_code() {
    let b = Berth::start();
    let c = reqwest::Client::new();
    // Something real to aim near: a repository with an image under a tag.
    let manifest =
        serde_json::to_vec(&push_image(&c, &b, "edge/repo", OCI_MANIFEST).await).unwrap();
    let r = put_manifest(&c, &b, "edge/repo", "v1", OCI_MANIFEST, &manifest).await;
    assert_eq!(r.status(), 201);
    // An upload in progress, for the header cases.
    let r = c
        .post(b.url("/v2/edge/repo/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let upload = r.headers()["location"].to_str().unwrap().to_owned();

    let long_id = "x".repeat(300);
    let unknown_uuid = "0f8b3c2e-1d2c-4c1e-9f00-3a2b1c0d9e8f";
    let mut cases = vec![
        // ---- names, on every endpoint that takes one
        case("GET", "/v2/UPPER/tags/list", 400, Some("NAME_INVALID")),
        case("GET", "/v2/a//b/manifests/v1", 400, Some("NAME_INVALID")),
        case(
            "GET",
            "/v2/a/%2e%2e/b/manifests/v1",
            400,
            Some("NAME_INVALID"),
        ),
        case("PUT", "/v2/a-/manifests/v1", 400, Some("NAME_INVALID")),
        case("DELETE", "/v2/_a/manifests/v1", 400, Some("NAME_INVALID")),
        case(
            "GET",
            format!("/v2/a..b/blobs/{D}"),
            400,
            Some("NAME_INVALID"),
        ),
        case("HEAD", format!("/v2/a%5cb/blobs/{D}"), 400, None),
        case(
            "DELETE",
            format!("/v2/a%00b/blobs/{D}"),
            400,
            Some("NAME_INVALID"),
        ),
        case(
            "POST",
            "/v2/a__-b/blobs/uploads/",
            400,
            Some("NAME_INVALID"),
        ),
        case(
            "PATCH",
            format!("/v2/Bad/blobs/uploads/{unknown_uuid}"),
            400,
            Some("NAME_INVALID"),
        ),
        case(
            "GET",
            format!("/v2/{}/tags/list", "a".repeat(256)),
            400,
            Some("NAME_INVALID"),
        ),
        case(
            "GET",
            format!("/v2/-x/referrers/{D}"),
            400,
            Some("NAME_INVALID"),
        ),
        // ---- manifest references: reads of what cannot exist are 404
        case(
            "GET",
            "/v2/edge/repo/manifests/.INVALID_MANIFEST_NAME",
            404,
            Some("MANIFEST_UNKNOWN"),
        ),
        case(
            "HEAD",
            "/v2/edge/repo/manifests/.INVALID_MANIFEST_NAME",
            404,
            None,
        ),
        case(
            "DELETE",
            "/v2/edge/repo/manifests/.INVALID_MANIFEST_NAME",
            404,
            Some("MANIFEST_UNKNOWN"),
        ),
        case(
            "GET",
            "/v2/edge/repo/manifests/sha256:totallywrong",
            404,
            Some("MANIFEST_UNKNOWN"),
        ),
        case(
            "GET",
            format!("/v2/edge/repo/manifests/{}", "t".repeat(129)),
            404,
            Some("MANIFEST_UNKNOWN"),
        ),
        case(
            "GET",
            "/v2/edge/repo/manifests/-dash",
            404,
            Some("MANIFEST_UNKNOWN"),
        ),
        case(
            "GET",
            "/v2/edge/repo/manifests/nosuchtag",
            404,
            Some("MANIFEST_UNKNOWN"),
        ),
        case(
            "GET",
            format!("/v2/edge/repo/manifests/{D}"),
            404,
            Some("MANIFEST_UNKNOWN"),
        ),
        // ... and writes to it are refused as invalid.
        case(
            "PUT",
            "/v2/edge/repo/manifests/.INVALID_MANIFEST_NAME",
            400,
            Some("MANIFEST_INVALID"),
        )
        .header("Content-Type", OCI_MANIFEST)
        .body(&manifest),
        case(
            "PUT",
            "/v2/edge/repo/manifests/sha256:totallywrong",
            400,
            Some("DIGEST_INVALID"),
        )
        .header("Content-Type", OCI_MANIFEST)
        .body(&manifest),
        case(
            "PUT",
            format!("/v2/edge/repo/manifests/{D}"),
            400,
            Some("DIGEST_INVALID"),
        )
        .header("Content-Type", OCI_MANIFEST)
        .body(&manifest),
        case(
            "PUT",
            "/v2/edge/repo/manifests/v2",
            400,
            Some("MANIFEST_INVALID"),
        )
        .header("Content-Type", OCI_MANIFEST)
        .body(b"{not json"),
        // ---- blob digests
        case(
            "GET",
            "/v2/edge/repo/blobs/notadigest",
            404,
            Some("BLOB_UNKNOWN"),
        ),
        case("HEAD", "/v2/edge/repo/blobs/sha256:123", 404, None),
        case(
            "DELETE",
            "/v2/edge/repo/blobs/md5:d41d8cd98f00b204e9800998ecf8427e",
            404,
            Some("BLOB_UNKNOWN"),
        ),
        case(
            "GET",
            format!("/v2/edge/repo/blobs/{D}"),
            404,
            Some("BLOB_UNKNOWN"),
        ),
        case("HEAD", format!("/v2/edge/repo/blobs/{D}"), 404, None),
        case(
            "GET",
            "/v2/edge/repo/referrers/notadigest",
            400,
            Some("DIGEST_INVALID"),
        ),
        case(
            "POST",
            "/v2/edge/repo/blobs/uploads/?digest=sha256:zz",
            400,
            Some("DIGEST_INVALID"),
        )
        .body(b"x"),
        case(
            "POST",
            "/v2/edge/repo/blobs/uploads/?mount=sha256:zz&from=edge/repo",
            400,
            Some("DIGEST_INVALID"),
        ),
        case(
            "POST",
            format!("/v2/edge/repo/blobs/uploads/?mount={D}&from=Bad"),
            400,
            Some("NAME_INVALID"),
        ),
        case(
            "PUT",
            format!("{upload}?digest=sha256:zz"),
            400,
            Some("DIGEST_INVALID"),
        ),
        case("PUT", upload.clone(), 400, Some("DIGEST_INVALID")),
        // ---- upload ids berth never issued: unknown uploads
        case(
            "GET",
            format!("/v2/edge/repo/blobs/uploads/{long_id}"),
            404,
            Some("BLOB_UPLOAD_UNKNOWN"),
        ),
        case(
            "PATCH",
            format!("/v2/edge/repo/blobs/uploads/{long_id}"),
            404,
            Some("BLOB_UPLOAD_UNKNOWN"),
        )
        .body(b"abc"),
        case(
            "PUT",
            format!("/v2/edge/repo/blobs/uploads/{long_id}?digest={D}"),
            404,
            Some("BLOB_UPLOAD_UNKNOWN"),
        ),
        case(
            "DELETE",
            "/v2/edge/repo/blobs/uploads/not_an_id!",
            404,
            Some("BLOB_UPLOAD_UNKNOWN"),
        ),
        case(
            "GET",
            format!("/v2/edge/repo/blobs/uploads/{unknown_uuid}"),
            404,
            Some("BLOB_UPLOAD_UNKNOWN"),
        ),
        // ... and an upload of one repository is unknown in another.
        case(
            "GET",
            upload.replace("edge/repo", "edge/other"),
            404,
            Some("BLOB_UPLOAD_UNKNOWN"),
        ),
        // ---- query parameters
        case(
            "GET",
            "/v2/edge/repo/tags/list?n=-1",
            400,
            Some("UNSUPPORTED"),
        ),
        case(
            "GET",
            "/v2/edge/repo/tags/list?n=abc",
            400,
            Some("UNSUPPORTED"),
        ),
        case(
            "GET",
            "/v2/edge/repo/tags/list?n=1e3",
            400,
            Some("UNSUPPORTED"),
        ),
        case("GET", "/v2/_catalog?n=-5", 400, Some("UNSUPPORTED")),
        case("GET", "/v2/_catalog?n=%20", 400, Some("UNSUPPORTED")),
        // A page larger than any is cut to the largest; nothing fails.
        case(
            "GET",
            "/v2/edge/repo/tags/list?n=99999999999999999999999",
            200,
            None,
        ),
        case("GET", "/v2/_catalog?n=18446744073709551616", 200, None),
        case("GET", "/v2/edge/repo/tags/list?n=0", 200, None),
        case("GET", "/v2/edge/repo/tags/list?last=%00%ff", 200, None),
        case("GET", "/v2/_catalog?last=edge%00%ff", 200, None),
        case(
            "GET",
            "/v2/nosuch/repo/tags/list",
            404,
            Some("NAME_UNKNOWN"),
        ),
        // ---- headers
        case("PATCH", upload.clone(), 400, Some("BLOB_UPLOAD_INVALID"))
            .header("Content-Range", "abc")
            .body(b"abc"),
        case("PATCH", upload.clone(), 416, Some("BLOB_UPLOAD_INVALID"))
            .header("Content-Range", "5-7")
            .body(b"abc"),
        case("PATCH", upload.clone(), 400, Some("SIZE_INVALID"))
            .header("Content-Range", "0-9")
            .body(b"abc"),
        case("GET", "/v2/edge/repo/manifests/v1", 200, None).header("Accept", "*/*;;;=="),
        // ---- methods an endpoint does not serve: 405, and only for these
        case("POST", "/v2/edge/repo/tags/list", 405, Some("UNSUPPORTED")),
        case(
            "PATCH",
            "/v2/edge/repo/manifests/v1",
            405,
            Some("UNSUPPORTED"),
        ),
        case(
            "POST",
            format!("/v2/edge/repo/blobs/{D}"),
            405,
            Some("UNSUPPORTED"),
        ),
        case("PUT", "/v2/_catalog", 405, Some("UNSUPPORTED")),
        // ---- paths that name no endpoint
        case(
            "GET",
            "/v2/edge/repo/nothing/here",
            404,
            Some("UNSUPPORTED"),
        ),
    ];
    // A byte range past the end of a blob, or one that ends before it
    // starts: 416 with the blob's size (no code of the spec's list names
    // it, so no JSON body; checked below).
    let config_digest = serde_json::from_slice::<Value>(&manifest).unwrap()["config"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    cases.push(
        case(
            "GET",
            format!("/v2/edge/repo/blobs/{config_digest}"),
            416,
            None,
        )
        .header("Range", "bytes=999999-"),
    );
    cases.push(
        case(
            "GET",
            format!("/v2/edge/repo/blobs/{config_digest}"),
            416,
            None,
        )
        .header("Range", "bytes=500-0"),
    );

    let mut wrong = Vec::new();
    for c in &cases {
        let headers: Vec<(&str, &str)> = c.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let a = send(&b, c.method, &c.path, &headers, &c.body).await;
        let code = a.body["errors"][0]["code"].as_str();
        let message = a.body["errors"][0]["message"].as_str().unwrap_or("");
        let ok = a.status == c.status
            && match c.code {
                // Errors explain themselves.
                Some(want) => code == Some(want) && !message.is_empty(),
                None => true,
            };
        if !ok {
            wrong.push(format!(
                "{} {}: want {} {:?}, got {} {}",
                c.method, c.path, c.status, c.code, a.status, a.body
            ));
        }
        if a.status == 416 && c.code.is_none() {
            assert_eq!(a.body, Value::Null, "{} {}", c.method, c.path);
            assert!(
                a.header("content-range")
                    .is_some_and(|r| r.starts_with("bytes */")),
                "{} {}: {:?}",
                c.method,
                c.path,
                a.headers
            );
        }
        // Whatever the request, the answer says which API it speaks.
        assert_eq!(
            a.header("docker-distribution-api-version"),
            Some("registry/2.0")
        );
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases wrong:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );

    // None of it left anything behind: the tag and its manifest are as
    // pushed, and the upload is still at zero bytes.
    let r = c
        .get(b.url("/v2/edge/repo/tags/list"))
        .send()
        .await
        .unwrap();
    let tags: Value = r.json().await.unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));
    let r = c.get(b.url(&upload)).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["range"], "0-0");
}

#[tokio::test]
async fn an_answer_that_left_the_body_unread_closes_the_connection() {
    let b = Berth::start();
    let c = reqwest::Client::new();
    let r = c
        .post(b.url("/v2/edge/repo/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let upload = r.headers()["location"].to_str().unwrap().to_owned();
    // A chunk refused before its body was read: the client must not send
    // the next request down a connection still holding those bytes.
    let r = c
        .patch(b.url(&upload))
        .header("Content-Range", "5-7")
        .body(vec![0u8; 3])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(
        r.headers().get("connection").map(|v| v.to_str().unwrap()),
        Some("close")
    );
    // Requests without a body, and bodies read to their end, keep it.
    let r = c.get(b.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("connection").is_none(), "{r:?}");
    let r = c
        .patch(b.url(&upload))
        .body(vec![0u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(r.headers().get("connection").is_none(), "{r:?}");
}
