//! The checks themselves, in workflow order: push, pull, content discovery
//! (tags, catalog, referrers), content management, errors.

use reqwest::{Method, Url};
use serde_json::{Value, json};

use crate::{
    Category, Check, ERROR_CODES, Http, Level, OCI_CONFIG, OCI_EMPTY, OCI_INDEX, OCI_LAYER,
    OCI_MANIFEST, Options, Resp, Status, descriptor, random_bytes, raw, sha256, sha512, to_bytes,
};

const OCTET: (&str, &str) = ("Content-Type", "application/octet-stream");
const CL0: (&str, &str) = ("Content-Length", "0");
const EMPTY_JSON: &[u8] = b"{}";

/// What the push phase left behind for the pull phase.
#[derive(Default)]
struct Pushed {
    repo: String,
    blob_a: Vec<u8>,
    m1: Vec<u8>,
    m1_digest: String,
    m1_tag: String,
    index: Vec<u8>,
    index_digest: String,
    index_tag: String,
}

pub(crate) struct Suite {
    http: Http,
    ns: String,
    cat: Category,
    checks: Vec<Check>,
}

fn ok_status(r: &Resp, want: &[u16]) -> Option<String> {
    if want.contains(&r.status) {
        None
    } else {
        Some(format!("status {} (want {:?})", r.status, want))
    }
}

fn has_code(r: &Resp, codes: &[&str]) -> Option<String> {
    let got = r.codes();
    if got.iter().any(|c| codes.contains(&c.as_str())) {
        None
    } else {
        Some(format!("error codes {got:?} (want one of {codes:?})"))
    }
}

fn need_header(r: &Resp, name: &str) -> Option<String> {
    match r.h(name) {
        Some(v) if !v.is_empty() => None,
        _ => Some(format!("no {name} header")),
    }
}

fn header_eq(r: &Resp, name: &str, want: &str) -> Option<String> {
    match r.h(name) {
        Some(v) if v == want => None,
        Some(v) => Some(format!("{name} is {v:?} (want {want:?})")),
        None => Some(format!("no {name} header (want {want:?})")),
    }
}

fn body_eq(r: &Resp, want: &[u8]) -> Option<String> {
    if r.body == want {
        None
    } else {
        Some(format!(
            "body differs ({} bytes, digest {}; want {} bytes, {})",
            r.body.len(),
            sha256(&r.body),
            want.len(),
            sha256(want)
        ))
    }
}

/// Docker-Content-Digest names the body under some algorithm (the spec lets
/// a registry answer with its canonical algorithm).
fn dcd_matches(r: &Resp, body: &[u8]) -> Option<String> {
    match r.h("docker-content-digest") {
        Some(d) if d == sha512(body) || d == sha256(body) => None,
        Some(d) => Some(format!(
            "Docker-Content-Digest {d} does not match the bytes"
        )),
        None => Some("no Docker-Content-Digest header".into()),
    }
}

/// The URL in a `Link: <url>; rel="next"` header.
fn next_link(r: &Resp) -> Option<String> {
    let link = r.h("link")?;
    for part in link.split(',') {
        let part = part.trim();
        if part.contains("rel=\"next\"") || part.contains("rel=next") {
            let start = part.find('<')?;
            let end = part.find('>')?;
            return Some(part[start + 1..end].to_string());
        }
    }
    None
}

fn string_list(v: &Value, key: &str) -> Option<Vec<String>> {
    v.get(key)?.as_array().map(|a| {
        a.iter()
            .filter_map(|s| s.as_str().map(String::from))
            .collect()
    })
}

fn config_blob() -> Vec<u8> {
    to_bytes(&json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
        "author": hex::encode(random_bytes(8)),
    }))
}

fn image_manifest(config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
    let layers: Vec<Value> = layers.iter().map(|l| descriptor(OCI_LAYER, l)).collect();
    to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": layers,
    }))
}

impl Suite {
    pub(crate) async fn run(base_url: &str, options: &Options) -> Vec<Check> {
        let http = match Http::new(base_url) {
            Ok(h) => h,
            Err(e) => {
                return vec![Check {
                    id: "base.url".into(),
                    category: Category::Pull,
                    level: Level::Required,
                    requirement: "a usable registry URL".into(),
                    status: Status::Fail,
                    expected: "an http(s) URL".into(),
                    observed: e,
                }];
            }
        };
        let mut s = Suite {
            http,
            ns: options.namespace.trim_matches('/').to_string(),
            cat: Category::Pull,
            checks: Vec::new(),
        };
        s.cat = Category::Pull;
        s.base().await;
        s.cat = Category::Push;
        let pushed = s.push().await;
        s.cat = Category::Pull;
        s.pull(&pushed).await;
        s.cat = Category::ContentDiscovery;
        s.tags().await;
        s.catalog(&pushed).await;
        s.referrers().await;
        s.cat = Category::ContentManagement;
        s.management().await;
        s.cat = Category::Errors;
        s.errors().await;
        s.checks
    }

    fn repo(&self, suffix: &str) -> String {
        format!("{}/{}", self.ns, suffix)
    }

    fn add(
        &mut self,
        id: &str,
        level: Level,
        requirement: &str,
        expected: &str,
        status: Status,
        observed: String,
    ) {
        self.checks.push(Check {
            id: id.to_string(),
            category: self.cat,
            level,
            requirement: requirement.to_string(),
            status,
            expected: expected.to_string(),
            observed,
        });
    }

    /// Records a check that passes when `problems` holds no problem.
    fn verdict(
        &mut self,
        id: &str,
        level: Level,
        requirement: &str,
        expected: &str,
        observed: String,
        problems: Vec<Option<String>>,
    ) -> bool {
        let problems: Vec<String> = problems.into_iter().flatten().collect();
        let ok = problems.is_empty();
        let observed = if ok {
            observed
        } else {
            format!("{observed} => {}", problems.join("; "))
        };
        let status = if ok { Status::Pass } else { Status::Fail };
        self.add(id, level, requirement, expected, status, observed);
        ok
    }

    fn with_digest(&self, location: &str, digest: &str) -> Result<Url, String> {
        let mut url = self.http.url(location)?;
        let q = match url.query() {
            Some(q) if !q.is_empty() => format!("{q}&digest={digest}"),
            _ => format!("digest={digest}"),
        };
        url.set_query(Some(&q));
        Ok(url)
    }

    async fn post_upload(&self, repo: &str) -> Resp {
        self.http
            .send(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/"),
                &[CL0],
                None,
            )
            .await
    }

    async fn put_with_digest(
        &self,
        location: &str,
        digest: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Resp {
        match self.with_digest(location, digest) {
            Ok(url) => {
                self.http
                    .send_url(Method::PUT, url, headers, Some(body))
                    .await
            }
            Err(e) => Resp {
                method: "PUT".into(),
                target: location.to_string(),
                status: 0,
                headers: Default::default(),
                body: e.into_bytes(),
            },
        }
    }

    /// Setup upload (POST then PUT); not itself a check.
    async fn upload(&self, repo: &str, data: &[u8]) -> Result<String, String> {
        let digest = sha256(data);
        let post = self.post_upload(repo).await;
        let loc = match (post.status, post.h("location")) {
            (202, Some(l)) => l,
            _ => return Err(format!("setup upload failed: {}", post.summary())),
        };
        let put = self
            .put_with_digest(&loc, &digest, &[OCTET], data.to_vec())
            .await;
        if put.status == 201 {
            Ok(digest)
        } else {
            Err(format!("setup upload failed: {}", put.summary()))
        }
    }

    async fn put_manifest(&self, repo: &str, reference: &str, media: &str, body: &[u8]) -> Resp {
        self.http
            .send(
                Method::PUT,
                &format!("/v2/{repo}/manifests/{reference}"),
                &[("Content-Type", media)],
                Some(body.to_vec()),
            )
            .await
    }

    async fn get(&self, target: &str) -> Resp {
        self.http.send(Method::GET, target, &[], None).await
    }

    async fn head(&self, target: &str) -> Resp {
        self.http.send(Method::HEAD, target, &[], None).await
    }

    async fn get_manifest(&self, repo: &str, reference: &str, method: Method) -> Resp {
        let accept = format!("{OCI_MANIFEST}, {OCI_INDEX}");
        self.http
            .send(
                method,
                &format!("/v2/{repo}/manifests/{reference}"),
                &[("Accept", accept.as_str())],
                None,
            )
            .await
    }

    // -----------------------------------------------------------------------

    async fn base(&mut self) {
        let r = self.get("/v2/").await;
        self.verdict(
            "base.v2-root",
            Level::Required,
            "GET /v2/ answers 200 when the registry implements the spec",
            "200",
            r.summary(),
            vec![ok_status(&r, &[200])],
        );
        match r.h("docker-distribution-api-version") {
            Some(v) if v == "registry/2.0" => self.add(
                "base.api-version-header",
                Level::Optional,
                "Docker-Distribution-API-Version header on /v2/ (informational, not in the OCI spec)",
                "registry/2.0",
                Status::Pass,
                format!("Docker-Distribution-API-Version: {v}"),
            ),
            Some(v) => self.add(
                "base.api-version-header",
                Level::Optional,
                "Docker-Distribution-API-Version header on /v2/ (informational, not in the OCI spec)",
                "registry/2.0",
                Status::Info,
                format!("Docker-Distribution-API-Version: {v}"),
            ),
            None => self.add(
                "base.api-version-header",
                Level::Optional,
                "Docker-Distribution-API-Version header on /v2/ (informational, not in the OCI spec)",
                "registry/2.0",
                Status::Info,
                "header absent".into(),
            ),
        }
    }

    // -----------------------------------------------------------------------

    async fn push(&mut self) -> Pushed {
        let repo = self.repo("main");
        let blob_a = random_bytes(4096 + 17);
        let blob_b = random_bytes(2048 + 3);
        let blob_d = random_bytes(3000); // streamed
        let config = config_blob();

        // POST then PUT.
        let digest_a = sha256(&blob_a);
        let post = self.post_upload(&repo).await;
        let loc = post.h("location");
        self.verdict(
            "push.post-initiate",
            Level::Required,
            "POST /v2/<name>/blobs/uploads/ opens a session: 202 Accepted with Location",
            "202 with a Location header",
            post.summary(),
            vec![ok_status(&post, &[202]), need_header(&post, "location")],
        );
        let mut blob_location = None;
        if let Some(loc) = loc {
            let put = self
                .put_with_digest(&loc, &digest_a, &[OCTET], blob_a.clone())
                .await;
            blob_location = put.h("location");
            self.verdict(
                "push.put-monolithic",
                Level::Required,
                "PUT <location>?digest=<digest> with the whole blob: 201 Created with Location",
                "201 with a Location header",
                put.summary(),
                vec![ok_status(&put, &[201]), need_header(&put, "location")],
            );
        } else {
            self.add(
                "push.put-monolithic",
                Level::Required,
                "PUT <location>?digest=<digest> with the whole blob: 201 Created with Location",
                "201 with a Location header",
                Status::Fail,
                "not attempted: the POST gave no Location".into(),
            );
        }
        match blob_location {
            Some(l) => {
                let r = self.get(&l).await;
                self.verdict(
                    "push.blob-location-pullable",
                    Level::Required,
                    "the Location of a completed upload is a pullable blob URL",
                    "GET <Location> answers 200 with the blob",
                    r.summary(),
                    vec![ok_status(&r, &[200]), body_eq(&r, &blob_a)],
                );
            }
            None => self.add(
                "push.blob-location-pullable",
                Level::Required,
                "the Location of a completed upload is a pullable blob URL",
                "GET <Location> answers 200 with the blob",
                Status::Fail,
                "no Location to follow".into(),
            ),
        }

        // Single POST.
        let digest_b = sha256(&blob_b);
        let r = self
            .http
            .send(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={digest_b}"),
                &[OCTET],
                Some(blob_b.clone()),
            )
            .await;
        match r.status {
            201 => {
                let head = self.head(&format!("/v2/{repo}/blobs/{digest_b}")).await;
                self.verdict(
                    "push.single-post",
                    Level::Required,
                    "POST ?digest= with the blob: 201 with Location, or 202 + Location to fall back to POST/PUT",
                    "201 with Location (blob then exists), or 202 with Location",
                    format!("{} ; then {}", r.summary(), head.summary()),
                    vec![need_header(&r, "location"), ok_status(&head, &[200])],
                );
            }
            202 => {
                let mut obs = format!("{} (single-POST not supported, fell back)", r.summary());
                let mut problems = vec![need_header(&r, "location")];
                if let Some(loc) = r.h("location") {
                    let put = self
                        .put_with_digest(&loc, &digest_b, &[OCTET], blob_b.clone())
                        .await;
                    obs.push_str(&format!(" ; then {}", put.summary()));
                    problems.push(ok_status(&put, &[201]));
                }
                self.verdict(
                    "push.single-post",
                    Level::Required,
                    "POST ?digest= with the blob: 201 with Location, or 202 + Location to fall back to POST/PUT",
                    "201 with Location (blob then exists), or 202 with Location",
                    obs,
                    problems,
                );
            }
            _ => {
                self.verdict(
                    "push.single-post",
                    Level::Required,
                    "POST ?digest= with the blob: 201 with Location, or 202 + Location to fall back to POST/PUT",
                    "201 with Location (blob then exists), or 202 with Location",
                    r.summary(),
                    vec![ok_status(&r, &[201, 202])],
                );
            }
        }

        let blob_c = self.chunked(&repo).await;
        self.out_of_order(&repo).await;
        self.streamed(&repo, &blob_d).await;
        self.wrong_digest(&repo).await;
        self.cancel(&repo).await;
        self.mount(&repo, &blob_a).await;

        // Manifests.
        let setup_cfg = self.upload(&repo, &config).await;
        if let Err(e) = &setup_cfg {
            self.add(
                "push.setup-config",
                Level::Required,
                "upload of the image config blob (setup)",
                "201",
                Status::Fail,
                e.clone(),
            );
        }
        let mut layers: Vec<&[u8]> = vec![&blob_a, &blob_b, &blob_d];
        if let Some(c) = &blob_c {
            layers.push(c);
        }
        let m1 = image_manifest(&config, &layers);
        let m1_digest = sha256(&m1);
        let m1_tag = "v1".to_string();
        let r = self.put_manifest(&repo, &m1_tag, OCI_MANIFEST, &m1).await;
        self.verdict(
            "push.manifest-put-tag",
            Level::Required,
            "PUT /v2/<name>/manifests/<tag>: 201 with Location and Docker-Content-Digest of the manifest",
            &format!("201, Location, Docker-Content-Digest: {m1_digest}"),
            r.summary(),
            vec![
                ok_status(&r, &[201]),
                need_header(&r, "location"),
                header_eq(&r, "docker-content-digest", &m1_digest),
            ],
        );
        if let Some(l) = r.h("location") {
            let g = self
                .http
                .send(Method::GET, &l, &[("Accept", OCI_MANIFEST)], None)
                .await;
            self.verdict(
                "push.manifest-location-pullable",
                Level::Required,
                "the Location of a pushed manifest is a pullable URL",
                "GET <Location> answers 200 with the manifest",
                g.summary(),
                vec![ok_status(&g, &[200]), body_eq(&g, &m1)],
            );
        }

        let m2 = image_manifest(&config, &[&blob_a]);
        let m2_digest = sha256(&m2);
        let r = self
            .put_manifest(&repo, &m2_digest, OCI_MANIFEST, &m2)
            .await;
        self.verdict(
            "push.manifest-put-digest",
            Level::Required,
            "PUT /v2/<name>/manifests/<digest>: 201 with Location and matching Docker-Content-Digest",
            &format!("201, Location, Docker-Content-Digest: {m2_digest}"),
            r.summary(),
            vec![
                ok_status(&r, &[201]),
                need_header(&r, "location"),
                header_eq(&r, "docker-content-digest", &m2_digest),
            ],
        );

        // A manifest whose layer was never pushed.
        let ghost = random_bytes(512);
        let bad = image_manifest(&config, &[&blob_a, &ghost]);
        let r = self
            .put_manifest(&repo, "missing-blob", OCI_MANIFEST, &bad)
            .await;
        let req = "a manifest referencing an unknown blob MAY be rejected; if so with MANIFEST_BLOB_UNKNOWN";
        if r.status == 201 {
            self.add(
                "push.manifest-missing-blob-rejected",
                Level::Optional,
                req,
                "400 MANIFEST_BLOB_UNKNOWN (or MANIFEST_INVALID)",
                Status::Info,
                format!("{} (accepted: the spec allows it)", r.summary()),
            );
        } else {
            self.verdict(
                "push.manifest-missing-blob-rejected",
                Level::Required,
                req,
                "400 MANIFEST_BLOB_UNKNOWN (or MANIFEST_INVALID)",
                r.summary(),
                vec![
                    ok_status(&r, &[400]),
                    has_code(&r, &["MANIFEST_BLOB_UNKNOWN", "MANIFEST_INVALID"]),
                ],
            );
            self.verdict(
                "push.manifest-missing-blob-code",
                Level::Required,
                "spec 1.1: \"the registry must return one or more MANIFEST_BLOB_UNKNOWN errors\"",
                "code MANIFEST_BLOB_UNKNOWN",
                r.summary(),
                vec![has_code(&r, &["MANIFEST_BLOB_UNKNOWN"])],
            );
        }

        // An index over m1 and m2, pushed after them.
        let index = to_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": m1_digest, "size": m1.len(),
                 "platform": {"architecture": "amd64", "os": "linux"}},
                {"mediaType": OCI_MANIFEST, "digest": m2_digest, "size": m2.len(),
                 "platform": {"architecture": "arm64", "os": "linux"}},
            ],
        }));
        let index_digest = sha256(&index);
        let index_tag = "multi".to_string();
        let r = self
            .put_manifest(&repo, &index_tag, OCI_INDEX, &index)
            .await;
        self.verdict(
            "push.index-put",
            Level::Required,
            "an OCI image index pushed after its children: 201 with Location and Docker-Content-Digest",
            &format!("201, Location, Docker-Content-Digest: {index_digest}"),
            r.summary(),
            vec![
                ok_status(&r, &[201]),
                need_header(&r, "location"),
                header_eq(&r, "docker-content-digest", &index_digest),
            ],
        );

        Pushed {
            repo,
            blob_a,
            m1,
            m1_digest,
            m1_tag,
            index,
            index_digest,
            index_tag,
        }
    }

    /// Chunked upload; returns the blob when it was stored.
    async fn chunked(&mut self, repo: &str) -> Option<Vec<u8>> {
        let post = self.post_upload(repo).await;
        let min: usize = post
            .h("oci-chunk-min-length")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let chunk = min.max(1024);
        let blob = random_bytes(chunk * 2 + 500);
        let digest = sha256(&blob);
        let Some(mut loc) = post.h("location") else {
            self.add(
                "push.chunked-patch",
                Level::Required,
                "PATCH with Content-Range: 202 with Location and Range: 0-<end>",
                "202",
                Status::Fail,
                format!("no session: {}", post.summary()),
            );
            return None;
        };
        let min_note = match post.h("oci-chunk-min-length") {
            Some(v) => format!(" (OCI-Chunk-Min-Length: {v})"),
            None => String::new(),
        };

        let send_chunk = |start: usize, end: usize| {
            let range = format!("{}-{}", start, end - 1);
            (range, blob[start..end].to_vec())
        };

        let (range, body) = send_chunk(0, chunk);
        let len = body.len().to_string();
        let r = self
            .http
            .send(
                Method::PATCH,
                &loc,
                &[
                    OCTET,
                    ("Content-Range", range.as_str()),
                    ("Content-Length", len.as_str()),
                ],
                Some(body),
            )
            .await;
        let want_range = format!("0-{}", chunk - 1);
        self.verdict(
            "push.chunked-patch",
            Level::Required,
            "PATCH a chunk with Content-Range: 202 with Location and Range: 0-<end-of-range>",
            &format!("202, Location, Range: {want_range}"),
            format!("{}{min_note}", r.summary()),
            vec![
                ok_status(&r, &[202]),
                need_header(&r, "location"),
                header_eq(&r, "range", &want_range),
            ],
        );
        if let Some(l) = r.h("location") {
            loc = l;
        }

        let st = self.get(&loc).await;
        self.verdict(
            "push.upload-status",
            Level::Required,
            "GET on an active upload: 204 with Location and Range: 0-<end-of-range>",
            &format!("204, Location, Range: {want_range}"),
            st.summary(),
            vec![
                ok_status(&st, &[204]),
                need_header(&st, "location"),
                header_eq(&st, "range", &want_range),
            ],
        );
        if let Some(l) = st.h("location") {
            loc = l;
        }

        let (range, body) = send_chunk(chunk, chunk * 2);
        let len = body.len().to_string();
        let r = self
            .http
            .send(
                Method::PATCH,
                &loc,
                &[
                    OCTET,
                    ("Content-Range", range.as_str()),
                    ("Content-Length", len.as_str()),
                ],
                Some(body),
            )
            .await;
        let want_range2 = format!("0-{}", chunk * 2 - 1);
        self.verdict(
            "push.chunked-patch-next",
            Level::Required,
            "the next in-order chunk: 202 with Range: 0-<new end>",
            &format!("202, Location, Range: {want_range2}"),
            r.summary(),
            vec![
                ok_status(&r, &[202]),
                need_header(&r, "location"),
                header_eq(&r, "range", &want_range2),
            ],
        );
        if let Some(l) = r.h("location") {
            loc = l;
        }

        let (range, body) = send_chunk(chunk * 2, blob.len());
        let len = body.len().to_string();
        let r = self
            .put_with_digest(
                &loc,
                &digest,
                &[
                    OCTET,
                    ("Content-Range", range.as_str()),
                    ("Content-Length", len.as_str()),
                ],
                body,
            )
            .await;
        let g = self.get(&format!("/v2/{repo}/blobs/{digest}")).await;
        let ok = self.verdict(
            "push.chunked-put-final",
            Level::Required,
            "closing PUT ?digest= carrying the final chunk: 201 with Location; the blob is the concatenation",
            "201 with Location; GET blob returns all chunks",
            format!("{} ; then {}", r.summary(), g.summary()),
            vec![
                ok_status(&r, &[201]),
                need_header(&r, "location"),
                ok_status(&g, &[200]),
                body_eq(&g, &blob),
            ],
        );
        ok.then_some(blob)
    }

    /// Out-of-order chunk on a session of its own.
    async fn out_of_order(&mut self, repo: &str) {
        let post = self.post_upload(repo).await;
        let min: usize = post
            .h("oci-chunk-min-length")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let chunk = min.max(1024);
        let blob = random_bytes(chunk * 2 + 100);
        let Some(mut loc) = post.h("location") else {
            self.add(
                "push.chunked-out-of-order",
                Level::Required,
                "a chunk that does not start right after the last one: 416",
                "416",
                Status::Fail,
                format!("no session: {}", post.summary()),
            );
            return;
        };
        let first = format!("0-{}", chunk - 1);
        let len = chunk.to_string();
        let r = self
            .http
            .send(
                Method::PATCH,
                &loc,
                &[
                    OCTET,
                    ("Content-Range", first.as_str()),
                    ("Content-Length", len.as_str()),
                ],
                Some(blob[..chunk].to_vec()),
            )
            .await;
        if let Some(l) = r.h("location") {
            loc = l;
        }
        let skip = format!("{}-{}", chunk + 10, chunk + 19);
        let bad = self
            .http
            .send(
                Method::PATCH,
                &loc,
                &[
                    OCTET,
                    ("Content-Range", skip.as_str()),
                    ("Content-Length", "10"),
                ],
                Some(blob[chunk + 10..chunk + 20].to_vec()),
            )
            .await;
        self.verdict(
            "push.chunked-out-of-order",
            Level::Required,
            "a chunk that does not start right after the last one: 416 Requested Range Not Satisfiable",
            "416",
            format!("first chunk {} ; then {}", r.summary(), bad.summary()),
            vec![ok_status(&r, &[202]), ok_status(&bad, &[416])],
        );
        let st = self.get(&loc).await;
        self.verdict(
            "push.upload-status-after-416",
            Level::Required,
            "after an out-of-order chunk the session still reports the last valid range: GET answers 204 with Range 0-<end>",
            &format!("204, Range: {first}"),
            st.summary(),
            vec![ok_status(&st, &[204]), header_eq(&st, "range", &first)],
        );
        let _ = self.http.send(Method::DELETE, &loc, &[CL0], None).await;
    }

    async fn streamed(&mut self, repo: &str, blob: &[u8]) {
        let digest = sha256(blob);
        let post = self.post_upload(repo).await;
        let Some(loc) = post.h("location") else {
            self.add(
                "push.streamed-patch",
                Level::Recommended,
                "PATCH without Content-Range (streamed upload): 202 with Range",
                "202",
                Status::Fail,
                format!("no session: {}", post.summary()),
            );
            return;
        };
        let r = self
            .http
            .send(Method::PATCH, &loc, &[OCTET], Some(blob.to_vec()))
            .await;
        let want_range = format!("0-{}", blob.len() - 1);
        self.verdict(
            "push.streamed-patch",
            Level::Recommended,
            "PATCH without Content-Range (streamed upload, as Docker clients do): 202 with Location and Range",
            &format!("202, Location, Range: {want_range}"),
            r.summary(),
            vec![
                ok_status(&r, &[202]),
                need_header(&r, "location"),
                header_eq(&r, "range", &want_range),
            ],
        );
        let loc = r.h("location").unwrap_or(loc);
        let put = self
            .put_with_digest(&loc, &digest, &[CL0], Vec::new())
            .await;
        let g = self.get(&format!("/v2/{repo}/blobs/{digest}")).await;
        self.verdict(
            "push.streamed-put-close",
            Level::Required,
            "a zero-length closing PUT ?digest= after all data was PATCHed: 201 with Location",
            "201 with Location; the blob is pullable",
            format!("{} ; then {}", put.summary(), g.summary()),
            vec![
                ok_status(&put, &[201]),
                need_header(&put, "location"),
                ok_status(&g, &[200]),
                body_eq(&g, blob),
            ],
        );
    }

    async fn wrong_digest(&mut self, repo: &str) {
        let data = random_bytes(1000);
        let claimed = sha256(&random_bytes(1000));
        let actual = sha256(&data);
        let post = self.post_upload(repo).await;
        let Some(loc) = post.h("location") else {
            self.add(
                "push.digest-mismatch-rejected",
                Level::Required,
                "PUT whose content does not match ?digest=: 400 DIGEST_INVALID",
                "400 DIGEST_INVALID",
                Status::Fail,
                format!("no session: {}", post.summary()),
            );
            return;
        };
        let r = self.put_with_digest(&loc, &claimed, &[OCTET], data).await;
        self.verdict(
            "push.digest-mismatch-rejected",
            Level::Required,
            "PUT whose content does not match ?digest=: rejected with 400 DIGEST_INVALID",
            "400 DIGEST_INVALID",
            r.summary(),
            vec![ok_status(&r, &[400]), has_code(&r, &["DIGEST_INVALID"])],
        );
        let h1 = self.head(&format!("/v2/{repo}/blobs/{claimed}")).await;
        let h2 = self.head(&format!("/v2/{repo}/blobs/{actual}")).await;
        self.verdict(
            "push.digest-mismatch-not-stored",
            Level::Required,
            "content rejected for a digest mismatch is not retrievable",
            "HEAD of the claimed and of the actual digest both 404",
            format!("{} ; {}", h1.summary(), h2.summary()),
            vec![ok_status(&h1, &[404]), ok_status(&h2, &[404])],
        );
    }

    async fn cancel(&mut self, repo: &str) {
        let post = self.post_upload(repo).await;
        let Some(loc) = post.h("location") else {
            self.add(
                "push.cancel-upload",
                Level::Recommended,
                "DELETE <location> cancels an upload: 204",
                "204",
                Status::Fail,
                format!("no session: {}", post.summary()),
            );
            return;
        };
        let data = random_bytes(100);
        let p = self
            .http
            .send(
                Method::PATCH,
                &loc,
                &[OCTET, ("Content-Range", "0-99"), ("Content-Length", "100")],
                Some(data),
            )
            .await;
        let loc = p.h("location").unwrap_or(loc);
        let d = self.http.send(Method::DELETE, &loc, &[CL0], None).await;
        self.verdict(
            "push.cancel-upload",
            Level::Recommended,
            "DELETE <location> cancels an upload: SHOULD be 204 No Content",
            "204",
            d.summary(),
            vec![ok_status(&d, &[204])],
        );
        let g = self.get(&loc).await;
        self.verdict(
            "push.cancelled-upload-unknown",
            Level::Required,
            "a cancelled (unknown) upload session: 404 BLOB_UPLOAD_UNKNOWN",
            "404 BLOB_UPLOAD_UNKNOWN",
            g.summary(),
            vec![
                ok_status(&g, &[404]),
                has_code(&g, &["BLOB_UPLOAD_UNKNOWN"]),
            ],
        );
    }

    async fn mount(&mut self, from: &str, blob: &[u8]) {
        let target = self.repo("mounted");
        let digest = sha256(blob);
        let r = self
            .http
            .send(
                Method::POST,
                &format!("/v2/{target}/blobs/uploads/?mount={digest}&from={from}"),
                &[CL0],
                None,
            )
            .await;
        let req = "POST ?mount=<digest>&from=<repo>: 201 with Location (or 202 to fall back to an upload)";
        match r.status {
            201 => {
                self.verdict(
                    "push.mount",
                    Level::Optional,
                    req,
                    "201 with Location",
                    r.summary(),
                    vec![need_header(&r, "location")],
                );
                let g = self.get(&format!("/v2/{target}/blobs/{digest}")).await;
                self.verdict(
                    "push.mount-pullable",
                    Level::Required,
                    "a mounted blob is pullable from the target repository",
                    "200 with the blob",
                    g.summary(),
                    vec![ok_status(&g, &[200]), body_eq(&g, blob)],
                );
            }
            202 => self.add(
                "push.mount",
                Level::Optional,
                req,
                "201 with Location",
                if r.h("location").is_some() {
                    Status::Info
                } else {
                    Status::Fail
                },
                format!(
                    "{} (mount not performed; fell back to an upload session)",
                    r.summary()
                ),
            ),
            _ => {
                self.verdict(
                    "push.mount",
                    Level::Optional,
                    req,
                    "201 with Location, or 202",
                    r.summary(),
                    vec![ok_status(&r, &[201, 202])],
                );
            }
        }
        let unknown = sha256(&random_bytes(64));
        let r = self
            .http
            .send(
                Method::POST,
                &format!("/v2/{target}/blobs/uploads/?mount={unknown}&from={from}"),
                &[CL0],
                None,
            )
            .await;
        self.verdict(
            "push.mount-unknown-fallback",
            Level::Recommended,
            "mount of a blob the registry does not have: SHOULD fall back to 202 with an upload Location",
            "202 with Location",
            r.summary(),
            vec![ok_status(&r, &[202]), need_header(&r, "location")],
        );
    }

    // -----------------------------------------------------------------------

    async fn pull(&mut self, p: &Pushed) {
        let repo = p.repo.clone();
        let da = sha256(&p.blob_a);
        let len = p.blob_a.len().to_string();

        let g = self.get(&format!("/v2/{repo}/blobs/{da}")).await;
        self.verdict(
            "pull.blob-get",
            Level::Required,
            "GET /v2/<name>/blobs/<digest>: 200 with the bytes, Content-Length and Docker-Content-Digest",
            &format!("200, Content-Length: {len}, Docker-Content-Digest: {da}, identical body"),
            g.summary(),
            vec![
                ok_status(&g, &[200]),
                header_eq(&g, "content-length", &len),
                header_eq(&g, "docker-content-digest", &da),
                body_eq(&g, &p.blob_a),
            ],
        );
        let h = self.head(&format!("/v2/{repo}/blobs/{da}")).await;
        self.verdict(
            "pull.blob-head",
            Level::Required,
            "HEAD /v2/<name>/blobs/<digest>: 200 with Content-Length and Docker-Content-Digest, no body",
            &format!("200, Content-Length: {len}, Docker-Content-Digest: {da}"),
            h.summary(),
            vec![
                ok_status(&h, &[200]),
                header_eq(&h, "content-length", &len),
                header_eq(&h, "docker-content-digest", &da),
                (!h.body.is_empty()).then(|| "HEAD response has a body".to_string()),
            ],
        );
        let r = self
            .http
            .send(
                Method::GET,
                &format!("/v2/{repo}/blobs/{da}"),
                &[("Range", "bytes=10-19")],
                None,
            )
            .await;
        let want_cr = format!("bytes 10-19/{}", p.blob_a.len());
        self.verdict(
            "pull.blob-range",
            Level::Recommended,
            "GET blob with Range: bytes=10-19: SHOULD answer 206 Partial Content with Content-Range",
            &format!("206, Content-Range: {want_cr}, 10 bytes"),
            r.summary(),
            vec![
                ok_status(&r, &[206]),
                header_eq(&r, "content-range", &want_cr),
                body_eq(&r, &p.blob_a[10..20]),
            ],
        );

        // A range that ends before it starts selects nothing: 416, as the
        // OCI conformance suite expects, not the whole blob.
        let r = self
            .http
            .send(
                Method::GET,
                &format!("/v2/{repo}/blobs/{da}"),
                &[("Range", "bytes=500-0")],
                None,
            )
            .await;
        self.verdict(
            "pull.blob-range-reversed",
            Level::Recommended,
            "GET blob with Range: bytes=500-0: 416 Range Not Satisfiable",
            "416",
            r.summary(),
            vec![ok_status(&r, &[416])],
        );

        for (id, reference) in [
            ("pull.manifest-get-tag", p.m1_tag.clone()),
            ("pull.manifest-get-digest", p.m1_digest.clone()),
        ] {
            let g = self.get_manifest(&repo, &reference, Method::GET).await;
            self.verdict(
                id,
                Level::Required,
                "GET manifest: 200, Content-Type = pushed media type, Docker-Content-Digest, byte-identical body",
                &format!("200, Content-Type: {OCI_MANIFEST}, Docker-Content-Digest: {}", p.m1_digest),
                g.summary(),
                vec![
                    ok_status(&g, &[200]),
                    header_eq(&g, "content-type", OCI_MANIFEST),
                    header_eq(&g, "docker-content-digest", &p.m1_digest),
                    body_eq(&g, &p.m1),
                ],
            );
        }
        let mlen = p.m1.len().to_string();
        for (id, reference) in [
            ("pull.manifest-head-tag", p.m1_tag.clone()),
            ("pull.manifest-head-digest", p.m1_digest.clone()),
        ] {
            let h = self.get_manifest(&repo, &reference, Method::HEAD).await;
            self.verdict(
                id,
                Level::Required,
                "HEAD manifest: 200 with Content-Length and Docker-Content-Digest, no body",
                &format!(
                    "200, Content-Length: {mlen}, Docker-Content-Digest: {}",
                    p.m1_digest
                ),
                h.summary(),
                vec![
                    ok_status(&h, &[200]),
                    header_eq(&h, "content-length", &mlen),
                    header_eq(&h, "docker-content-digest", &p.m1_digest),
                    (!h.body.is_empty()).then(|| "HEAD response has a body".to_string()),
                ],
            );
        }
        for (id, reference) in [
            ("pull.index-get-tag", p.index_tag.clone()),
            ("pull.index-get-digest", p.index_digest.clone()),
        ] {
            let g = self.get_manifest(&repo, &reference, Method::GET).await;
            self.verdict(
                id,
                Level::Required,
                "GET an image index: 200, Content-Type = index media type, byte-identical body",
                &format!(
                    "200, Content-Type: {OCI_INDEX}, Docker-Content-Digest: {}",
                    p.index_digest
                ),
                g.summary(),
                vec![
                    ok_status(&g, &[200]),
                    header_eq(&g, "content-type", OCI_INDEX),
                    header_eq(&g, "docker-content-digest", &p.index_digest),
                    body_eq(&g, &p.index),
                ],
            );
        }

        let unknown = sha256(&random_bytes(32));
        let g = self.get(&format!("/v2/{repo}/blobs/{unknown}")).await;
        self.verdict(
            "pull.blob-unknown",
            Level::Required,
            "GET of a blob that does not exist: 404 BLOB_UNKNOWN",
            "404 BLOB_UNKNOWN",
            g.summary(),
            vec![ok_status(&g, &[404]), has_code(&g, &["BLOB_UNKNOWN"])],
        );
        let h = self.head(&format!("/v2/{repo}/blobs/{unknown}")).await;
        self.verdict(
            "pull.blob-head-unknown",
            Level::Required,
            "HEAD of a blob that does not exist: 404",
            "404",
            h.summary(),
            vec![ok_status(&h, &[404])],
        );
        let g = self.get_manifest(&repo, "no-such-tag", Method::GET).await;
        self.verdict(
            "pull.manifest-unknown-tag",
            Level::Required,
            "GET of a manifest tag that does not exist: 404 MANIFEST_UNKNOWN",
            "404 MANIFEST_UNKNOWN",
            g.summary(),
            vec![ok_status(&g, &[404]), has_code(&g, &["MANIFEST_UNKNOWN"])],
        );
        let g = self.get_manifest(&repo, &unknown, Method::GET).await;
        self.verdict(
            "pull.manifest-unknown-digest",
            Level::Required,
            "GET of a manifest digest that does not exist: 404 MANIFEST_UNKNOWN",
            "404 MANIFEST_UNKNOWN",
            g.summary(),
            vec![ok_status(&g, &[404]), has_code(&g, &["MANIFEST_UNKNOWN"])],
        );
        let h = self.get_manifest(&repo, "no-such-tag", Method::HEAD).await;
        self.verdict(
            "pull.manifest-head-unknown",
            Level::Required,
            "HEAD of a manifest that does not exist: 404",
            "404",
            h.summary(),
            vec![ok_status(&h, &[404])],
        );
        let g = self
            .get_manifest(&repo, "sha256:totallywrong", Method::GET)
            .await;
        self.verdict(
            "pull.manifest-malformed-digest",
            Level::Required,
            "GET /v2/<name>/manifests/sha256:totallywrong: a client error (400 or 404), never 2xx/5xx",
            "400 or 404",
            g.summary(),
            vec![ok_status(&g, &[400, 404])],
        );
        let norepo = self.repo("never-pushed");
        let g = self.get_manifest(&norepo, "latest", Method::GET).await;
        self.verdict(
            "pull.repo-unknown",
            Level::Required,
            "pulling from a repository that does not exist MUST return 404",
            "404 (NAME_UNKNOWN or MANIFEST_UNKNOWN)",
            g.summary(),
            vec![
                ok_status(&g, &[404]),
                has_code(&g, &["NAME_UNKNOWN", "MANIFEST_UNKNOWN"]),
            ],
        );

        self.sha512(&repo).await;
    }

    async fn sha512(&mut self, repo: &str) {
        let data = random_bytes(1500);
        let digest = sha512(&data);
        let req = "a blob pushed and pulled by a sha512 digest (optional algorithm)";
        let post = self.post_upload(repo).await;
        let Some(loc) = post.h("location") else {
            self.add(
                "pull.sha512-blob",
                Level::Optional,
                req,
                "201 on PUT ?digest=sha512:..., then 200 on GET",
                Status::Fail,
                format!("no session: {}", post.summary()),
            );
            return;
        };
        let put = self
            .put_with_digest(&loc, &digest, &[OCTET], data.clone())
            .await;
        if put.status == 400 || put.status == 404 || put.status == 415 {
            self.add(
                "pull.sha512-blob",
                Level::Optional,
                req,
                "201 on PUT ?digest=sha512:..., then 200 on GET",
                Status::Info,
                format!("{} (sha512 not supported)", put.summary()),
            );
            return;
        }
        let g = self.get(&format!("/v2/{repo}/blobs/{digest}")).await;
        self.verdict(
            "pull.sha512-blob",
            Level::Optional,
            req,
            "201 on PUT ?digest=sha512:..., then 200 with the bytes and a Docker-Content-Digest matching them (sha512, or a canonical sha256)",
            format!("{} ; then {}", put.summary(), g.summary()),
            vec![
                ok_status(&put, &[201]),
                ok_status(&g, &[200]),
                dcd_matches(&g, &data),
                body_eq(&g, &data),
            ],
        );
    }

    // -----------------------------------------------------------------------

    async fn tags(&mut self) {
        let repo = self.repo("tags");
        let config = config_blob();
        let layer = random_bytes(700);
        let mut setup = Vec::new();
        for b in [&config, &layer] {
            if let Err(e) = self.upload(&repo, b).await {
                setup.push(e);
            }
        }
        let m = image_manifest(&config, &[&layer]);
        let pushed_order = ["tag-c", "tag-a", "tag-e", "tag-b", "tag-d"];
        for t in pushed_order {
            let r = self.put_manifest(&repo, t, OCI_MANIFEST, &m).await;
            if r.status != 201 {
                setup.push(format!("setup manifest push failed: {}", r.summary()));
            }
        }
        let mut sorted: Vec<String> = pushed_order.iter().map(|s| s.to_string()).collect();
        sorted.sort();
        let setup_note = if setup.is_empty() {
            String::new()
        } else {
            format!(" [setup problems: {}]", setup.join(" | "))
        };

        let r = self.get(&format!("/v2/{repo}/tags/list")).await;
        let body = r.json().unwrap_or(Value::Null);
        let tags = string_list(&body, "tags");
        self.verdict(
            "discovery.tags-list",
            Level::Required,
            "GET /v2/<name>/tags/list: 200 {name, tags} with tags in lexical order",
            &format!("200, name {repo}, tags {sorted:?}"),
            format!("{} tags {tags:?}{setup_note}", r.summary()),
            vec![
                ok_status(&r, &[200]),
                (body.get("name").and_then(|n| n.as_str()) != Some(repo.as_str()))
                    .then(|| format!("name is {:?}", body.get("name"))),
                (tags.as_ref() != Some(&sorted)).then(|| "tags differ".to_string()),
            ],
        );

        // n=2.
        let r = self.get(&format!("/v2/{repo}/tags/list?n=2")).await;
        let body = r.json().unwrap_or(Value::Null);
        let page1 = string_list(&body, "tags").unwrap_or_default();
        let link = next_link(&r);
        let n_ok = page1 == sorted[..2]
            || (link.is_some() && page1.len() < 2 && page1[..] == sorted[..page1.len()]);
        self.verdict(
            "discovery.tags-n",
            Level::Required,
            "tags/list?n=2 returns the first 2 tags in order (fewer only with a Link header)",
            &format!("200, tags {:?}", &sorted[..2]),
            format!("{} tags {page1:?}", r.summary()),
            vec![
                ok_status(&r, &[200]),
                (!n_ok).then(|| "wrong page".to_string()),
            ],
        );
        match link {
            Some(l) => {
                let mut all = page1.clone();
                let mut next = Some(l.clone());
                let mut hops = 0;
                let mut trail = Vec::new();
                while let Some(u) = next.take() {
                    hops += 1;
                    if hops > 10 {
                        break;
                    }
                    let r = self.get(&u).await;
                    trail.push(r.summary());
                    if r.status != 200 {
                        break;
                    }
                    all.extend(
                        string_list(&r.json().unwrap_or(Value::Null), "tags").unwrap_or_default(),
                    );
                    next = next_link(&r);
                }
                self.verdict(
                    "discovery.tags-link",
                    Level::Optional,
                    "with more tags than n, a Link: <...>; rel=\"next\" header that leads to the rest",
                    &format!("following Link pages yields {sorted:?}"),
                    format!("Link: {l} ; {} => tags {all:?}", trail.join(" ; ")),
                    vec![(all != sorted).then(|| "pages do not add up to the list".to_string())],
                );
            }
            None => self.add(
                "discovery.tags-link",
                Level::Optional,
                "with more tags than n, a Link: <...>; rel=\"next\" header that leads to the rest",
                "Link header with rel=\"next\"",
                Status::Info,
                "no Link header (the spec says MAY)".into(),
            ),
        }

        let r = self.get(&format!("/v2/{repo}/tags/list?n=0")).await;
        let body = r.json().unwrap_or(Value::Null);
        let empty = body
            .get("tags")
            .and_then(|t| t.as_array())
            .map(|a| a.is_empty())
            .unwrap_or(false);
        self.verdict(
            "discovery.tags-n0",
            Level::Required,
            "tags/list?n=0: an empty list and no Link header",
            "200, \"tags\": [], no Link",
            format!(
                "{} body {}",
                r.summary(),
                String::from_utf8_lossy(&r.body).trim()
            ),
            vec![
                ok_status(&r, &[200]),
                (!empty).then(|| "tags is not an empty list".to_string()),
                r.h("link").map(|l| format!("Link header present: {l}")),
            ],
        );

        let r = self
            .get(&format!("/v2/{repo}/tags/list?n=2&last=tag-b"))
            .await;
        let got = string_list(&r.json().unwrap_or(Value::Null), "tags");
        self.verdict(
            "discovery.tags-last",
            Level::Required,
            "tags/list?n=2&last=tag-b: the 2 tags after tag-b, tag-b excluded",
            "200, tags [\"tag-c\", \"tag-d\"]",
            format!("{} tags {got:?}", r.summary()),
            vec![
                ok_status(&r, &[200]),
                (got != Some(vec!["tag-c".into(), "tag-d".into()]))
                    .then(|| "wrong tags".to_string()),
            ],
        );
        let r = self.get(&format!("/v2/{repo}/tags/list?last=tag-b")).await;
        let got = string_list(&r.json().unwrap_or(Value::Null), "tags");
        let ok = match &got {
            Some(g) => {
                let want = ["tag-c", "tag-d", "tag-e"];
                g[..] == want[..]
                    || (next_link(&r).is_some()
                        && want.starts_with(&g.iter().map(|s| s.as_str()).collect::<Vec<_>>()[..])
                        && !g.is_empty())
            }
            None => false,
        };
        self.verdict(
            "discovery.tags-last-without-n",
            Level::Required,
            "tags/list?last=tag-b (n optional): the tags after tag-b",
            "200, tags [\"tag-c\", \"tag-d\", \"tag-e\"]",
            format!("{} tags {got:?}", r.summary()),
            vec![
                ok_status(&r, &[200]),
                (!ok).then(|| "wrong tags".to_string()),
            ],
        );

        // Moving a tag: push another manifest under an existing tag.
        let layer2 = random_bytes(701);
        let _ = self.upload(&repo, &layer2).await;
        let m2 = image_manifest(&config, &[&layer2]);
        let d2 = sha256(&m2);
        let put = self.put_manifest(&repo, "tag-a", OCI_MANIFEST, &m2).await;
        let g = self.get_manifest(&repo, "tag-a", Method::GET).await;
        self.cat = Category::Push;
        self.verdict(
            "push.tag-overwrite",
            Level::Required,
            "PUT of a different manifest under an existing tag moves the tag",
            &format!("201, then GET tag-a answers {d2}"),
            format!("{} ; then {}", put.summary(), g.summary()),
            vec![
                ok_status(&put, &[201]),
                ok_status(&g, &[200]),
                header_eq(&g, "docker-content-digest", &d2),
                body_eq(&g, &m2),
            ],
        );
        self.cat = Category::ContentDiscovery;

        let norepo = self.repo("no-such-repo");
        let r = self.get(&format!("/v2/{norepo}/tags/list")).await;
        self.verdict(
            "discovery.tags-unknown-repo",
            Level::Required,
            "tags/list of a repository that does not exist: 404 NAME_UNKNOWN",
            "404 NAME_UNKNOWN",
            r.summary(),
            vec![ok_status(&r, &[404]), has_code(&r, &["NAME_UNKNOWN"])],
        );
    }

    async fn catalog(&mut self, p: &Pushed) {
        let ours = vec![p.repo.clone(), self.repo("tags")];
        let req = "_catalog (MAY be implemented) lists the pushed repositories";
        let first = self.get("/v2/_catalog?n=100").await;
        if first.status != 200 {
            let status = if (400..500).contains(&first.status) {
                Status::Info
            } else {
                Status::Fail
            };
            self.add(
                "discovery.catalog",
                Level::Optional,
                req,
                "200 {repositories: [...]}",
                status,
                format!("{} (catalog not offered)", first.summary()),
            );
            return;
        }
        let mut all =
            string_list(&first.json().unwrap_or(Value::Null), "repositories").unwrap_or_default();
        let mut next = next_link(&first);
        let mut pages = 1;
        while let Some(u) = next.take() {
            pages += 1;
            if pages > 200 {
                break;
            }
            let r = self.get(&u).await;
            if r.status != 200 {
                break;
            }
            all.extend(
                string_list(&r.json().unwrap_or(Value::Null), "repositories").unwrap_or_default(),
            );
            next = next_link(&r);
        }
        let missing: Vec<&String> = ours.iter().filter(|r| !all.contains(r)).collect();
        self.verdict(
            "discovery.catalog",
            Level::Optional,
            req,
            &format!("{ours:?} among the repositories (following Link pages)"),
            format!(
                "{} ; {} repositories over {pages} page(s)",
                first.summary(),
                all.len()
            ),
            vec![(!missing.is_empty()).then(|| format!("missing {missing:?}"))],
        );

        let r = self.get("/v2/_catalog?n=1").await;
        let got = string_list(&r.json().unwrap_or(Value::Null), "repositories");
        let link = next_link(&r);
        self.verdict(
            "discovery.catalog-n",
            Level::Optional,
            "_catalog?n=1 returns one repository and a Link rel=\"next\" header",
            "200, 1 repository, Link rel=\"next\"",
            format!("{} repositories {got:?}", r.summary()),
            vec![
                ok_status(&r, &[200]),
                (got.as_ref().map(|g| g.len()) != Some(1))
                    .then(|| "not exactly one repository".to_string()),
                link.is_none().then(|| "no Link rel=\"next\"".to_string()),
            ],
        );
        if let Some(l) = link {
            let r2 = self.get(&l).await;
            let got2 = string_list(&r2.json().unwrap_or(Value::Null), "repositories");
            let dup = match (&got, &got2) {
                (Some(a), Some(b)) => a.iter().any(|x| b.contains(x)),
                _ => true,
            };
            self.verdict(
                "discovery.catalog-link",
                Level::Optional,
                "following the _catalog Link gives the next page",
                "200, a different repository",
                format!("{} repositories {got2:?}", r2.summary()),
                vec![
                    ok_status(&r2, &[200]),
                    dup.then(|| "next page repeats the first".to_string()),
                ],
            );
        }
        let last = p.repo.clone();
        let r = self.get(&format!("/v2/_catalog?n=5&last={last}")).await;
        let got = string_list(&r.json().unwrap_or(Value::Null), "repositories");
        let ok = got
            .as_ref()
            .map(|g| g.iter().all(|x| x.as_str() > last.as_str()))
            .unwrap_or(false);
        self.verdict(
            "discovery.catalog-last",
            Level::Optional,
            "_catalog?last=<repo> lists only repositories after <repo>",
            &format!("200, repositories all sorting after {last}"),
            format!("{} repositories {got:?}", r.summary()),
            vec![
                ok_status(&r, &[200]),
                (!ok).then(|| "a repository at or before `last`".to_string()),
            ],
        );
    }

    // -----------------------------------------------------------------------

    async fn referrers(&mut self) {
        let repo = self.repo("referrers");
        let unknown = sha256(&random_bytes(48));
        let probe = self.get(&format!("/v2/{repo}/referrers/{unknown}")).await;
        let supported = probe.status != 404;

        // Subject image and referrer artifacts (pushed regardless of support:
        // a manifest with a subject MUST be accepted either way).
        let config = config_blob();
        let layer = random_bytes(900);
        let payload = random_bytes(300);
        let own_config =
            to_bytes(&json!({"kind": "conformance", "n": hex::encode(random_bytes(4))}));
        let mut setup = Vec::new();
        for b in [
            &config[..],
            &layer[..],
            EMPTY_JSON,
            &payload[..],
            &own_config[..],
        ] {
            if let Err(e) = self.upload(&repo, b).await {
                setup.push(e);
            }
        }
        let subject = image_manifest(&config, &[&layer]);
        let subject_digest = sha256(&subject);
        let r = self
            .put_manifest(&repo, "subject", OCI_MANIFEST, &subject)
            .await;
        if r.status != 201 {
            setup.push(format!("subject push: {}", r.summary()));
        }
        let setup_note = if setup.is_empty() {
            String::new()
        } else {
            format!(" [setup problems: {}]", setup.join(" | "))
        };
        let subject_desc =
            json!({"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": subject.len()});
        let sbom_type = "application/vnd.conformance.sbom.v1+json";
        let sig_config_type = "application/vnd.conformance.sig.config.v1+json";
        let empty_desc = json!({"mediaType": OCI_EMPTY, "digest": sha256(EMPTY_JSON), "size": 2});
        // R1: artifactType + empty config + annotations.
        let r1 = to_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": sbom_type,
            "config": empty_desc,
            "layers": [descriptor("application/vnd.conformance.payload", &payload)],
            "subject": subject_desc,
            "annotations": {"org.example.conformance": "sbom", "org.opencontainers.image.created": "2026-11-29T00:00:00Z"},
        }));
        // R2: no artifactType; its config media type must stand in for it.
        let mut own_desc = descriptor(sig_config_type, &own_config);
        own_desc["mediaType"] = json!(sig_config_type);
        let r2 = to_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": own_desc,
            "layers": [descriptor("application/vnd.conformance.payload", &payload)],
            "subject": subject_desc,
            "annotations": {"org.example.conformance": "signature"},
        }));
        let d1 = sha256(&r1);
        let d2 = sha256(&r2);
        let p1 = self.put_manifest(&repo, &d1, OCI_MANIFEST, &r1).await;
        let p2 = self.put_manifest(&repo, &d2, OCI_MANIFEST, &r2).await;

        // R3: subject never pushed.
        let ghost = to_bytes(&json!({"ghost": hex::encode(random_bytes(8))}));
        let ghost_digest = sha256(&ghost);
        let r3 = to_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": sbom_type,
            "config": empty_desc,
            "layers": [descriptor("application/vnd.conformance.payload", &payload)],
            "subject": {"mediaType": OCI_MANIFEST, "digest": ghost_digest, "size": ghost.len()},
        }));
        let d3 = sha256(&r3);
        let p3 = self.put_manifest(&repo, &d3, OCI_MANIFEST, &r3).await;
        self.cat = Category::Push;
        self.verdict(
            "push.subject-missing-accepted",
            Level::Required,
            "a manifest whose subject does not exist in the repository MUST be accepted",
            "201",
            format!("{}{setup_note}", p3.summary()),
            vec![ok_status(&p3, &[201])],
        );
        self.verdict(
            "push.manifest-with-subject",
            Level::Required,
            "manifests with a subject (artifactType, empty config) are accepted",
            "201 for both referrers",
            format!("{} ; {}", p1.summary(), p2.summary()),
            vec![ok_status(&p1, &[201]), ok_status(&p2, &[201])],
        );
        self.cat = Category::ContentDiscovery;

        if !supported {
            let subj = [&p1, &p2, &p3]
                .iter()
                .filter_map(|p| p.h("oci-subject"))
                .collect::<Vec<_>>();
            self.add(
                "discovery.referrers-api",
                Level::Optional,
                "GET /v2/<name>/referrers/<digest> (1.1): supported registries answer 200, never 404",
                "200 with an image index",
                Status::Info,
                format!(
                    "{} (referrers API not supported; clients fall back to the tag schema; OCI-Subject headers seen: {subj:?})",
                    probe.summary()
                ),
            );
            for id in [
                "discovery.referrers-unknown-subject",
                "discovery.referrers-subject-header",
                "discovery.referrers-list",
                "discovery.referrers-missing-subject",
                "discovery.referrers-filter",
                "discovery.referrers-after-delete",
            ] {
                self.add(
                    id,
                    Level::Required,
                    "requires the referrers API",
                    "referrers API support",
                    Status::Info,
                    "skipped: the referrers API is not supported".into(),
                );
            }
            return;
        }

        self.add(
            "discovery.referrers-api",
            Level::Optional,
            "GET /v2/<name>/referrers/<digest> (1.1): supported registries answer 200, never 404",
            "200 with an image index",
            if probe.status == 200 {
                Status::Pass
            } else {
                Status::Fail
            },
            probe.summary(),
        );
        let body = probe.json().unwrap_or(Value::Null);
        let empty = body
            .get("manifests")
            .and_then(|m| m.as_array())
            .map(|a| a.is_empty())
            .unwrap_or(false);
        self.verdict(
            "discovery.referrers-unknown-subject",
            Level::Required,
            "referrers of a digest nothing refers to: 200 with an empty image index",
            &format!("200, Content-Type: {OCI_INDEX}, manifests: []"),
            format!(
                "{} body {}",
                probe.summary(),
                String::from_utf8_lossy(&probe.body).trim()
            ),
            vec![
                ok_status(&probe, &[200]),
                header_eq(&probe, "content-type", OCI_INDEX),
                (!empty).then(|| "manifests is not an empty list".to_string()),
                (body.get("schemaVersion") != Some(&json!(2)))
                    .then(|| "schemaVersion is not 2".to_string()),
            ],
        );
        self.verdict(
            "discovery.referrers-subject-header",
            Level::Required,
            "a manifest PUT with a subject answers OCI-Subject: <subject digest> (registry supports referrers)",
            &format!("OCI-Subject: {subject_digest} on both PUTs, {ghost_digest} on the third"),
            format!("{} ; {} ; {}", p1.summary(), p2.summary(), p3.summary()),
            vec![
                header_eq(&p1, "oci-subject", &subject_digest),
                header_eq(&p2, "oci-subject", &subject_digest),
                header_eq(&p3, "oci-subject", &ghost_digest),
            ],
        );

        let r = self
            .get(&format!("/v2/{repo}/referrers/{subject_digest}"))
            .await;
        let idx = r.json().unwrap_or(Value::Null);
        let descs: Vec<Value> = idx
            .get("manifests")
            .and_then(|m| m.as_array())
            .cloned()
            .unwrap_or_default();
        let find = |d: &str| {
            descs
                .iter()
                .find(|x| x.get("digest") == Some(&json!(d)))
                .cloned()
        };
        let mut problems = vec![
            ok_status(&r, &[200]),
            header_eq(&r, "content-type", OCI_INDEX),
            (idx.get("mediaType").is_some() && idx.get("mediaType") != Some(&json!(OCI_INDEX)))
                .then(|| "index mediaType is wrong".to_string()),
            (descs.len() != 2).then(|| format!("{} descriptors (want 2)", descs.len())),
        ];
        match find(&d1) {
            Some(x) => {
                problems.push(
                    (x.get("artifactType") != Some(&json!(sbom_type)))
                        .then(|| format!("R1 artifactType is {:?}", x.get("artifactType"))),
                );
                problems.push(
                    (x.get("annotations")
                        .and_then(|a| a.get("org.example.conformance"))
                        != Some(&json!("sbom")))
                    .then(|| "R1 annotations missing".to_string()),
                );
                problems.push(
                    (x.get("size") != Some(&json!(r1.len()))).then(|| "R1 size wrong".to_string()),
                );
                problems.push(
                    (x.get("mediaType") != Some(&json!(OCI_MANIFEST)))
                        .then(|| "R1 mediaType wrong".to_string()),
                );
            }
            None => problems.push(Some("R1 (artifactType) not listed".into())),
        }
        match find(&d2) {
            Some(x) => {
                problems.push(
                    (x.get("artifactType") != Some(&json!(sig_config_type))).then(|| {
                        format!(
                            "R2 artifactType is {:?} (want its config mediaType)",
                            x.get("artifactType")
                        )
                    }),
                );
                problems.push(
                    (x.get("annotations")
                        .and_then(|a| a.get("org.example.conformance"))
                        != Some(&json!("signature")))
                    .then(|| "R2 annotations missing".to_string()),
                );
            }
            None => problems.push(Some("R2 (no artifactType) not listed".into())),
        }
        self.verdict(
            "discovery.referrers-list",
            Level::Required,
            "GET /v2/<name>/referrers/<digest>: an image index of descriptors with artifactType (or config mediaType) and annotations",
            "200, index Content-Type, R1 and R2 with artifactType, annotations, size, mediaType",
            format!("{} body {}", r.summary(), String::from_utf8_lossy(&r.body).trim()),
            problems,
        );

        let r = self
            .get(&format!("/v2/{repo}/referrers/{ghost_digest}"))
            .await;
        let descs: Vec<Value> = r
            .json()
            .and_then(|v| v.get("manifests").and_then(|m| m.as_array()).cloned())
            .unwrap_or_default();
        let listed = descs.iter().any(|x| x.get("digest") == Some(&json!(d3)));
        self.verdict(
            "discovery.referrers-missing-subject",
            Level::Required,
            "referrers are listed also when the subject was never pushed",
            &format!("200 listing {d3}"),
            r.summary(),
            vec![
                ok_status(&r, &[200]),
                (!listed).then(|| "R3 not listed".to_string()),
            ],
        );

        let r = self
            .get(&format!(
                "/v2/{repo}/referrers/{subject_digest}?artifactType={}",
                // '+' must travel as %2B: a raw '+' in a query means a space
                // to form decoders.
                sbom_type.replace('+', "%2B")
            ))
            .await;
        let descs: Vec<Value> = r
            .json()
            .and_then(|v| v.get("manifests").and_then(|m| m.as_array()).cloned())
            .unwrap_or_default();
        let digests: Vec<String> = descs
            .iter()
            .filter_map(|d| d.get("digest").and_then(|x| x.as_str()).map(String::from))
            .collect();
        let applied = r
            .h("oci-filters-applied")
            .map(|v| v.split(',').any(|f| f.trim() == "artifactType"))
            .unwrap_or(false);
        self.verdict(
            "discovery.referrers-filter",
            Level::Recommended,
            "?artifactType= SHOULD filter; when applied the answer MUST carry OCI-Filters-Applied: artifactType",
            "200, OCI-Filters-Applied: artifactType, only R1",
            r.summary(),
            vec![
                ok_status(&r, &[200]),
                (!applied).then(|| "filter not applied (no OCI-Filters-Applied)".to_string()),
                (applied && digests != vec![d1.clone()])
                    .then(|| format!("filtered list is {digests:?}")),
            ],
        );

        // Deleting a referrer removes it from the list.
        let del = self
            .http
            .send(
                Method::DELETE,
                &format!("/v2/{repo}/manifests/{d2}"),
                &[],
                None,
            )
            .await;
        let req =
            "a deleted referrer leaves the referrers list (the list covers manifests in <name>)";
        if del.status == 202 {
            let r = self
                .get(&format!("/v2/{repo}/referrers/{subject_digest}"))
                .await;
            let digests: Vec<String> = r
                .json()
                .and_then(|v| v.get("manifests").and_then(|m| m.as_array()).cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|d| d.get("digest").and_then(|x| x.as_str()).map(String::from))
                .collect();
            self.verdict(
                "discovery.referrers-after-delete",
                Level::Required,
                req,
                &format!("200 listing only {d1}"),
                format!(
                    "{} ; then {} digests {digests:?}",
                    del.summary(),
                    r.summary()
                ),
                vec![
                    ok_status(&r, &[200]),
                    (digests != vec![d1.clone()]).then(|| "list not updated".to_string()),
                ],
            );
        } else {
            self.add(
                "discovery.referrers-after-delete",
                Level::Required,
                req,
                "202 on DELETE, then the referrer is gone",
                if del.status == 400 || del.status == 405 {
                    Status::Info
                } else {
                    Status::Fail
                },
                del.summary(),
            );
        }
    }

    // -----------------------------------------------------------------------

    /// Delete answers: 202 passes, 400/405 is "deletion disabled" (allowed).
    fn delete_verdict(&mut self, id: &str, requirement: &str, r: &Resp) -> bool {
        if r.status == 202 {
            self.add(
                id,
                Level::Required,
                requirement,
                "202",
                Status::Pass,
                r.summary(),
            );
            true
        } else if r.status == 400 || r.status == 405 {
            self.add(
                id,
                Level::Required,
                requirement,
                "202 (400/405 allowed when deletion is disabled)",
                Status::Info,
                format!("{} (deletion disabled/unsupported)", r.summary()),
            );
            false
        } else {
            self.add(
                id,
                Level::Required,
                requirement,
                "202 (400/405 allowed when deletion is disabled)",
                Status::Fail,
                r.summary(),
            );
            false
        }
    }

    async fn management(&mut self) {
        let repo = self.repo("delete");
        let config = config_blob();
        let layer_x = random_bytes(600);
        let layer_y = random_bytes(601);
        let mut setup = Vec::new();
        for b in [&config, &layer_x, &layer_y] {
            if let Err(e) = self.upload(&repo, b).await {
                setup.push(e);
            }
        }
        let mx = image_manifest(&config, &[&layer_x]);
        let my = image_manifest(&config, &[&layer_y]);
        let dx = sha256(&mx);
        let dy = sha256(&my);
        for (t, m) in [
            ("doomed-tag", &mx),
            ("kept-tag", &mx),
            ("y1", &my),
            ("y2", &my),
        ] {
            let r = self.put_manifest(&repo, t, OCI_MANIFEST, m).await;
            if r.status != 201 {
                setup.push(format!("setup: {}", r.summary()));
            }
        }
        let note = if setup.is_empty() {
            String::new()
        } else {
            format!(" [setup problems: {}]", setup.join(" | "))
        };

        let r = self
            .http
            .send(
                Method::DELETE,
                &format!("/v2/{repo}/manifests/doomed-tag"),
                &[],
                None,
            )
            .await;
        let mut r2 = r.clone();
        r2.method = format!("{}{note}", r2.method);
        if self.delete_verdict(
            "management.delete-tag",
            "DELETE /v2/<name>/manifests/<tag>: 202 Accepted",
            &r2,
        ) {
            let g = self.get_manifest(&repo, "doomed-tag", Method::GET).await;
            let k = self.get_manifest(&repo, &dx, Method::GET).await;
            self.verdict(
                "management.deleted-tag-gone",
                Level::Required,
                "after a tag delete, GET of the tag answers 404",
                "404 for the tag",
                format!("{} ; (manifest by digest: {})", g.summary(), k.summary()),
                vec![ok_status(&g, &[404])],
            );
        } else {
            self.add(
                "management.deleted-tag-gone",
                Level::Required,
                "after a tag delete, GET of the tag answers 404",
                "404 for the tag",
                Status::Info,
                "skipped: the tag delete did not succeed".into(),
            );
        }

        let r = self
            .http
            .send(
                Method::DELETE,
                &format!("/v2/{repo}/manifests/{dy}"),
                &[],
                None,
            )
            .await;
        if self.delete_verdict(
            "management.delete-manifest",
            "DELETE /v2/<name>/manifests/<digest>: 202 Accepted",
            &r,
        ) {
            let g = self.get_manifest(&repo, &dy, Method::GET).await;
            self.verdict(
                "management.deleted-manifest-gone",
                Level::Required,
                "after a manifest delete, GET by digest answers 404",
                "404 MANIFEST_UNKNOWN",
                g.summary(),
                vec![ok_status(&g, &[404]), has_code(&g, &["MANIFEST_UNKNOWN"])],
            );
            let g1 = self.get_manifest(&repo, "y1", Method::GET).await;
            let g2 = self.get_manifest(&repo, "y2", Method::GET).await;
            let l = self.get(&format!("/v2/{repo}/tags/list")).await;
            let tags = string_list(&l.json().unwrap_or(Value::Null), "tags").unwrap_or_default();
            self.verdict(
                "management.deleted-manifest-tags-gone",
                Level::Required,
                "after a manifest delete, every tag pointing at it answers 404 and leaves tags/list",
                "404 for y1 and y2; neither in tags/list",
                format!("{} ; {} ; {} tags {tags:?}", g1.summary(), g2.summary(), l.summary()),
                vec![
                    ok_status(&g1, &[404]),
                    ok_status(&g2, &[404]),
                    tags.iter()
                        .any(|t| t == "y1" || t == "y2")
                        .then(|| "tags/list still lists y1/y2".to_string()),
                ],
            );
        }

        let dl = sha256(&layer_y);
        let r = self
            .http
            .send(Method::DELETE, &format!("/v2/{repo}/blobs/{dl}"), &[], None)
            .await;
        if self.delete_verdict(
            "management.delete-blob",
            "DELETE /v2/<name>/blobs/<digest>: 202 Accepted",
            &r,
        ) {
            let g = self.get(&format!("/v2/{repo}/blobs/{dl}")).await;
            self.verdict(
                "management.deleted-blob-gone",
                Level::Required,
                "after a blob delete, GET of the blob answers 404 BLOB_UNKNOWN",
                "404 BLOB_UNKNOWN",
                g.summary(),
                vec![ok_status(&g, &[404]), has_code(&g, &["BLOB_UNKNOWN"])],
            );
        }

        let unknown = sha256(&random_bytes(40));
        let r = self
            .http
            .send(
                Method::DELETE,
                &format!("/v2/{repo}/blobs/{unknown}"),
                &[],
                None,
            )
            .await;
        self.verdict(
            "management.delete-unknown-blob",
            Level::Required,
            "DELETE of a blob that does not exist: 404",
            "404 (BLOB_UNKNOWN)",
            r.summary(),
            vec![ok_status(&r, &[404])],
        );
        let r = self
            .http
            .send(
                Method::DELETE,
                &format!("/v2/{repo}/manifests/{unknown}"),
                &[],
                None,
            )
            .await;
        self.verdict(
            "management.delete-unknown-manifest",
            Level::Required,
            "DELETE of a manifest that does not exist: 404",
            "404 (MANIFEST_UNKNOWN)",
            r.summary(),
            vec![ok_status(&r, &[404])],
        );
        let norepo = self.repo("no-such-repo-to-delete");
        let r = self
            .http
            .send(
                Method::DELETE,
                &format!("/v2/{norepo}/manifests/{unknown}"),
                &[],
                None,
            )
            .await;
        self.verdict(
            "management.delete-manifest-unknown-repo",
            Level::Required,
            "DELETE of a manifest in a repository that does not exist MUST return 404",
            "404",
            r.summary(),
            vec![ok_status(&r, &[404])],
        );
    }

    // -----------------------------------------------------------------------

    async fn errors(&mut self) {
        let upper = format!("{}/UpperCase", self.ns);
        let r = self.post_upload(&upper).await;
        self.verdict(
            "errors.name-uppercase",
            Level::Recommended,
            "a repository name outside [a-z0-9] components is invalid: 400 NAME_INVALID",
            "400 NAME_INVALID",
            r.summary(),
            vec![ok_status(&r, &[400]), has_code(&r, &["NAME_INVALID"])],
        );
        let r = self.get(&format!("/v2/{upper}/tags/list")).await;
        self.verdict(
            "errors.name-uppercase-read",
            Level::Recommended,
            "reading under an invalid (uppercase) repository name: 400 NAME_INVALID",
            "400 NAME_INVALID",
            r.summary(),
            vec![ok_status(&r, &[400]), has_code(&r, &["NAME_INVALID"])],
        );
        let dotdot = format!("/v2/{}/../escaped/blobs/uploads/", self.ns);
        let r = raw::request(&self.http.base, "POST", &dotdot).await;
        self.http.observe(&r);
        self.verdict(
            "errors.name-dotdot",
            Level::Recommended,
            "a repository name with a `..` component (sent raw, unnormalised): 400 NAME_INVALID",
            "400 NAME_INVALID (never a 2xx on a normalised path)",
            r.summary(),
            vec![ok_status(&r, &[400]), has_code(&r, &["NAME_INVALID"])],
        );
        let dotdot2 = format!("/v2/{}/a/../b/tags/list", self.ns);
        let r = raw::request(&self.http.base, "GET", &dotdot2).await;
        self.http.observe(&r);
        self.verdict(
            "errors.name-dotdot-read",
            Level::Recommended,
            "GET with a `..` name component (raw): 400 NAME_INVALID",
            "400 NAME_INVALID",
            r.summary(),
            vec![ok_status(&r, &[400]), has_code(&r, &["NAME_INVALID"])],
        );

        let repo = self.repo("errors");
        // Malformed digest on upload completion.
        let post = self.post_upload(&repo).await;
        if let Some(loc) = post.h("location") {
            let r = self
                .put_with_digest(&loc, "sha256:not-a-hex-digest", &[OCTET], random_bytes(10))
                .await;
            self.verdict(
                "errors.digest-invalid",
                Level::Required,
                "PUT ?digest= with a malformed digest: 400 DIGEST_INVALID",
                "400 DIGEST_INVALID",
                r.summary(),
                vec![ok_status(&r, &[400]), has_code(&r, &["DIGEST_INVALID"])],
            );
        }
        let post = self.post_upload(&repo).await;
        if let Some(loc) = post.h("location") {
            let md5ish = format!("md5:{}", &hex::encode(random_bytes(16)));
            let r = self
                .put_with_digest(&loc, &md5ish, &[OCTET], random_bytes(10))
                .await;
            self.verdict(
                "errors.digest-unsupported-algorithm",
                Level::Required,
                "PUT ?digest= with an unsupported algorithm (md5): 400 DIGEST_INVALID or UNSUPPORTED",
                "400 DIGEST_INVALID/UNSUPPORTED",
                r.summary(),
                vec![
                    ok_status(&r, &[400]),
                    has_code(&r, &["DIGEST_INVALID", "UNSUPPORTED"]),
                ],
            );
        }
        let r = self.get(&format!("/v2/{repo}/blobs/sha256:xyz")).await;
        self.verdict(
            "errors.blob-digest-invalid",
            Level::Recommended,
            "GET blob with a malformed digest: no blob has it, 404 BLOB_UNKNOWN (as a manifest \
             reference that cannot exist is 404 in the OCI conformance suite; 400 \
             DIGEST_INVALID tolerated)",
            "404 BLOB_UNKNOWN",
            r.summary(),
            vec![
                ok_status(&r, &[404, 400]),
                has_code(&r, &["BLOB_UNKNOWN", "DIGEST_INVALID"]),
            ],
        );

        // A reference that cannot name a manifest (not a tag, not a
        // digest) is not found, as the OCI conformance suite requires; so
        // is an upload id the registry could never have issued.
        for method in [Method::GET, Method::HEAD] {
            let r = self
                .get_manifest(&repo, ".INVALID_MANIFEST_NAME", method.clone())
                .await;
            let code = (method == Method::GET).then(|| has_code(&r, &["MANIFEST_UNKNOWN"]));
            self.verdict(
                &format!(
                    "errors.manifest-reference-invalid-{}",
                    method.as_str().to_lowercase()
                ),
                Level::Required,
                "GET/HEAD of a manifest whose reference is no valid tag: 404 (MANIFEST_UNKNOWN)",
                "404 MANIFEST_UNKNOWN",
                r.summary(),
                vec![ok_status(&r, &[404]), code.flatten()],
            );
        }
        let long_id = "x".repeat(300);
        let r = self
            .get(&format!("/v2/{repo}/blobs/uploads/{long_id}"))
            .await;
        self.verdict(
            "errors.upload-id-unknown",
            Level::Required,
            "GET of an upload id the registry never issued: 404 BLOB_UPLOAD_UNKNOWN",
            "404 BLOB_UPLOAD_UNKNOWN",
            r.summary(),
            vec![
                ok_status(&r, &[404]),
                has_code(&r, &["BLOB_UPLOAD_UNKNOWN"]),
            ],
        );
        // A malformed page size is the client's mistake: 400 with an OCI
        // error, never 405 (which is about the method).
        for target in [
            format!("/v2/{repo}/tags/list?n=-1"),
            format!("/v2/{repo}/tags/list?n=abc"),
            "/v2/_catalog?n=-1".to_owned(),
        ] {
            let r = self.get(&target).await;
            self.verdict(
                &format!("errors.pagination-n-malformed ({target})"),
                Level::Recommended,
                "a malformed n on a paginated listing: 400 with an error body",
                "400",
                r.summary(),
                vec![ok_status(&r, &[400]), has_code(&r, ERROR_CODES)],
            );
        }

        // Manifests: need blobs in this repository.
        let config = config_blob();
        let layer = random_bytes(200);
        let _ = self.upload(&repo, &config).await;
        let _ = self.upload(&repo, &layer).await;
        let malformed = br#"{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": "#;
        let r = self
            .put_manifest(&repo, "broken", OCI_MANIFEST, malformed)
            .await;
        self.verdict(
            "errors.manifest-malformed-json",
            Level::Required,
            "a manifest that is not valid JSON: 400 MANIFEST_INVALID",
            "400 MANIFEST_INVALID",
            r.summary(),
            vec![ok_status(&r, &[400]), has_code(&r, &["MANIFEST_INVALID"])],
        );

        let big = |size: usize| {
            let filler = "a".repeat(size);
            let mut v: Value = serde_json::from_slice(&image_manifest(&config, &[&layer])).unwrap();
            v["annotations"] = json!({"org.example.filler": filler});
            to_bytes(&v)
        };
        let near4 = big(4 * 1024 * 1024 - 4096);
        let r = self
            .put_manifest(&repo, "near-4mib", OCI_MANIFEST, &near4)
            .await;
        self.verdict(
            "errors.manifest-4mib-accepted",
            Level::Recommended,
            "registries SHOULD accept manifests of at least 4 MiB",
            &format!("201 for a {} byte manifest", near4.len()),
            r.summary(),
            vec![ok_status(&r, &[201])],
        );
        let huge = big(5 * 1024 * 1024);
        let r = self.put_manifest(&repo, "huge", OCI_MANIFEST, &huge).await;
        self.verdict(
            "errors.manifest-oversized",
            Level::Recommended,
            "a manifest over the registry's limit SHOULD be refused with 413 Payload Too Large",
            &format!("413 for a {} byte manifest", huge.len()),
            r.summary(),
            vec![ok_status(&r, &[413])],
        );

        let violations = self.http.envelope_violations.lock().unwrap().clone();
        let checked = *self.http.envelope_checked.lock().unwrap();
        self.verdict(
            "errors.json-envelope",
            Level::Required,
            "every 4xx JSON body is {\"errors\":[{\"code\",\"message\",...}]} with a code from the spec's list",
            "no violations",
            format!("{checked} JSON 4xx bodies seen during the run"),
            violations.into_iter().map(Some).collect(),
        );
        let server_errors = self.http.server_errors.lock().unwrap().clone();
        self.verdict(
            "errors.no-server-errors",
            Level::Recommended,
            "client mistakes draw 4xx, never 5xx",
            "no 5xx during the run",
            format!("{} 5xx responses", server_errors.len()),
            server_errors.into_iter().map(Some).collect(),
        );
    }
}
