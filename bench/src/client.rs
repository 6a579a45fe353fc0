//! The distribution API calls the workloads make, over one shared
//! keep-alive connection pool.

use anyhow::{Context as _, bail};
use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Deserialize;

use crate::blob::{Blob, digest_of};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

#[derive(Clone)]
pub struct Registry {
    http: reqwest::Client,
    base: String,
}

/// The `rel="next"` target of a Link header, if any.
pub fn next_link(value: &str) -> Option<&str> {
    value.split(',').find_map(|part| {
        let part = part.trim();
        let (target, params) = part.strip_prefix('<')?.split_once('>')?;
        params
            .split(';')
            .map(str::trim)
            .any(|p| p == "rel=\"next\"" || p == "rel=next")
            .then_some(target)
    })
}

/// Adds `key=value` to a URL that may already have a query.
fn with_query(url: &str, kv: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{kv}")
}

async fn expect(resp: Response, want: StatusCode, what: &str) -> anyhow::Result<Response> {
    if resp.status() == want {
        return Ok(resp);
    }
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.chars().take(300).collect();
    bail!("{what}: expected {want}, got {status}: {body}")
}

fn location(resp: &Response) -> anyhow::Result<String> {
    Ok(resp
        .headers()
        .get(header::LOCATION)
        .context("no Location header")?
        .to_str()?
        .to_owned())
}

#[derive(Deserialize)]
struct ListPage {
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    repositories: Option<Vec<String>>,
}

impl Registry {
    pub fn new(url: &str, user: Option<&str>, password: Option<&str>) -> anyhow::Result<Self> {
        let mut headers = HeaderMap::new();
        if let Some(user) = user {
            // Let reqwest encode the credentials once; send them on every request.
            let probe = reqwest::Client::new()
                .get(url)
                .basic_auth(user, password)
                .build()?;
            let value: HeaderValue = probe.headers()[header::AUTHORIZATION].clone();
            headers.insert(header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .http1_only()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1024)
            .default_headers(headers)
            .build()?;
        Ok(Registry {
            http,
            base: url.trim_end_matches('/').to_owned(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A Location or Link target made absolute.
    fn resolve(&self, target: &str) -> String {
        if target.starts_with("http://") || target.starts_with("https://") {
            target.to_owned()
        } else if target.starts_with('/') {
            self.url(target)
        } else {
            format!("{}/{target}", self.base)
        }
    }

    fn req(&self, method: Method, url: &str) -> RequestBuilder {
        self.http.request(method, url)
    }

    pub async fn ping(&self) -> anyhow::Result<()> {
        let r = self.req(Method::GET, &self.url("/v2/")).send().await?;
        expect(r, StatusCode::OK, "GET /v2/").await?;
        Ok(())
    }

    async fn start_upload(&self, repo: &str) -> anyhow::Result<String> {
        let r = self
            .req(
                Method::POST,
                &self.url(&format!("/v2/{repo}/blobs/uploads/")),
            )
            .header(header::CONTENT_LENGTH, 0)
            .send()
            .await?;
        let r = expect(r, StatusCode::ACCEPTED, "POST upload").await?;
        Ok(self.resolve(&location(&r)?))
    }

    /// POST, then PUT ?digest= with the whole blob as the body. 2 requests.
    pub async fn push_monolithic(
        &self,
        repo: &str,
        blob: &Blob,
        digest: &str,
    ) -> anyhow::Result<u64> {
        let loc = self.start_upload(repo).await?;
        let r = self
            .req(Method::PUT, &with_query(&loc, &format!("digest={digest}")))
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, blob.size)
            .body(reqwest::Body::wrap_stream(blob.stream(0, blob.size)))
            .send()
            .await?;
        expect(r, StatusCode::CREATED, "PUT blob").await?;
        Ok(2)
    }

    /// POST, one PATCH per `chunk` bytes, then PUT ?digest=. Returns the
    /// number of requests.
    pub async fn push_chunked(
        &self,
        repo: &str,
        blob: &Blob,
        digest: &str,
        chunk: u64,
    ) -> anyhow::Result<u64> {
        let mut loc = self.start_upload(repo).await?;
        let mut requests = 1;
        let mut pos = 0;
        while pos < blob.size {
            let end = (pos + chunk).min(blob.size);
            let r = self
                .req(Method::PATCH, &loc)
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .header(header::CONTENT_LENGTH, end - pos)
                .header(header::CONTENT_RANGE, format!("{pos}-{}", end - 1))
                .body(reqwest::Body::wrap_stream(blob.stream(pos, end)))
                .send()
                .await?;
            let r = expect(r, StatusCode::ACCEPTED, "PATCH chunk").await?;
            loc = self.resolve(&location(&r)?);
            requests += 1;
            pos = end;
        }
        let r = self
            .req(Method::PUT, &with_query(&loc, &format!("digest={digest}")))
            .header(header::CONTENT_LENGTH, 0)
            .send()
            .await?;
        expect(r, StatusCode::CREATED, "PUT close upload").await?;
        Ok(requests + 1)
    }

    /// A small blob held in memory, pushed monolithically. Returns its digest.
    pub async fn push_bytes(&self, repo: &str, data: Bytes) -> anyhow::Result<String> {
        let digest = digest_of(&data);
        let loc = self.start_upload(repo).await?;
        let r = self
            .req(Method::PUT, &with_query(&loc, &format!("digest={digest}")))
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(data)
            .send()
            .await?;
        expect(r, StatusCode::CREATED, "PUT blob").await?;
        Ok(digest)
    }

    /// Cross-repository mount; falls back to uploading `data` when the
    /// registry starts a plain upload instead (202).
    pub async fn mount_or_push(
        &self,
        repo: &str,
        from: &str,
        digest: &str,
        data: &Bytes,
    ) -> anyhow::Result<u64> {
        let r = self
            .req(
                Method::POST,
                &self.url(&format!(
                    "/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"
                )),
            )
            .header(header::CONTENT_LENGTH, 0)
            .send()
            .await?;
        match r.status() {
            StatusCode::CREATED => Ok(1),
            StatusCode::ACCEPTED => {
                let loc = self.resolve(&location(&r)?);
                let r = self
                    .req(Method::PUT, &with_query(&loc, &format!("digest={digest}")))
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .body(data.clone())
                    .send()
                    .await?;
                expect(r, StatusCode::CREATED, "PUT blob after refused mount").await?;
                Ok(2)
            }
            _ => {
                expect(r, StatusCode::CREATED, "POST mount").await?;
                unreachable!()
            }
        }
    }

    pub async fn blob_exists(&self, repo: &str, digest: &str) -> anyhow::Result<bool> {
        let r = self
            .req(
                Method::HEAD,
                &self.url(&format!("/v2/{repo}/blobs/{digest}")),
            )
            .send()
            .await?;
        match r.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => bail!("HEAD blob: unexpected {s}"),
        }
    }

    pub async fn head_blob(&self, repo: &str, digest: &str) -> anyhow::Result<()> {
        let r = self
            .req(
                Method::HEAD,
                &self.url(&format!("/v2/{repo}/blobs/{digest}")),
            )
            .send()
            .await?;
        expect(r, StatusCode::OK, "HEAD blob").await?;
        Ok(())
    }

    /// GET a blob, reading and discarding the body. Returns its length.
    pub async fn get_blob(&self, repo: &str, digest: &str) -> anyhow::Result<u64> {
        let r = self
            .req(
                Method::GET,
                &self.url(&format!("/v2/{repo}/blobs/{digest}")),
            )
            .send()
            .await?;
        let mut r = expect(r, StatusCode::OK, "GET blob").await?;
        let mut n = 0;
        while let Some(chunk) = r.chunk().await? {
            n += chunk.len() as u64;
        }
        Ok(n)
    }

    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        body: Bytes,
    ) -> anyhow::Result<()> {
        let r = self
            .req(
                Method::PUT,
                &self.url(&format!("/v2/{repo}/manifests/{reference}")),
            )
            .header(header::CONTENT_TYPE, OCI_MANIFEST)
            .body(body)
            .send()
            .await?;
        expect(r, StatusCode::CREATED, "PUT manifest").await?;
        Ok(())
    }

    /// GET a manifest, reading the body. Returns its length.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> anyhow::Result<u64> {
        let r = self
            .req(
                Method::GET,
                &self.url(&format!("/v2/{repo}/manifests/{reference}")),
            )
            .header(header::ACCEPT, MANIFEST_ACCEPT)
            .send()
            .await?;
        let r = expect(r, StatusCode::OK, "GET manifest").await?;
        Ok(r.bytes().await?.len() as u64)
    }

    /// GETs `path` and every page its Link headers lead to (at most
    /// `max_pages`). Returns (pages, entries listed).
    pub async fn walk(&self, path: &str, max_pages: u64) -> anyhow::Result<(u64, u64)> {
        let mut url = self.url(path);
        let (mut pages, mut entries) = (0, 0);
        loop {
            let r = self.req(Method::GET, &url).send().await?;
            let r = expect(r, StatusCode::OK, "GET list").await?;
            let next = r
                .headers()
                .get(header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(next_link)
                .map(|t| self.resolve(t));
            let page: ListPage = serde_json::from_slice(&r.bytes().await?)?;
            let listed = page.tags.or(page.repositories).unwrap_or_default().len() as u64;
            pages += 1;
            entries += listed;
            match next {
                Some(n) if listed > 0 && pages < max_pages => url = n,
                _ => break,
            }
        }
        Ok((pages, entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header_next() {
        assert_eq!(
            next_link(r#"</v2/_catalog?last=a%2Fb&n=100>; rel="next""#),
            Some("/v2/_catalog?last=a%2Fb&n=100")
        );
        assert_eq!(
            next_link(r#"<https://r.example/v2/x/tags/list?n=2&last=b>;rel=next"#),
            Some("https://r.example/v2/x/tags/list?n=2&last=b")
        );
        assert_eq!(
            next_link(r#"</a>; rel="prev", </b>; rel="next""#),
            Some("/b")
        );
        assert_eq!(next_link(r#"</a>; rel="prev""#), None);
        assert_eq!(next_link(""), None);
    }

    #[test]
    fn query_and_location() {
        assert_eq!(with_query("/u/1", "digest=d"), "/u/1?digest=d");
        assert_eq!(
            with_query("/u/1?_state=x", "digest=d"),
            "/u/1?_state=x&digest=d"
        );
        let r = Registry::new("http://127.0.0.1:5000/", None, None).unwrap();
        assert_eq!(r.resolve("/v2/x"), "http://127.0.0.1:5000/v2/x");
        assert_eq!(r.resolve("http://h/v2/x"), "http://h/v2/x");
    }
}
