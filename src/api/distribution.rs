//! The distribution API (`/v2/...`): translates requests into calls on the
//! registry core and the results into the headers and bodies the OCI
//! distribution spec prescribes. No registry logic lives here.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::api::Shared;
use crate::api::auth as api_auth;
use crate::api::endpoint::Endpoint;
use crate::api::metrics::RouteName;
use crate::auth::scope::{Actions, ResourceScope};
use crate::auth::{Auth, Caller};
use crate::core::event::LazyOrigin;
use crate::core::names::{Digest, Reference, RepoName};
use crate::core::{BlobBody, RangeRequest, Registry, RegistryError, Result};
use crate::mirror::{Mirrors, Pulled, Route};
use crate::signature::Signatures;

/// Largest page of tags or repositories one request returns.
const MAX_PAGE: u32 = 10_000;

pub async fn dispatch(State(state): State<Shared>, request: Request) -> Response {
    let endpoint = match Endpoint::parse(request.uri().path()) {
        Ok(endpoint) => endpoint,
        Err(e) => return e.into_response(),
    };
    let route = RouteName(endpoint.route_name());
    let services = Services {
        registry: &state.registry,
        mirrors: &state.mirrors,
        signatures: &state.signatures,
    };
    let mut response = admit_and_route(services, &state.auth, endpoint, request).await;
    response.extensions_mut().insert(route);
    response
}

/// What the distribution API answers from.
#[derive(Clone, Copy)]
struct Services<'a> {
    registry: &'a Registry,
    mirrors: &'a Mirrors,
    signatures: &'a Signatures,
}

async fn admit_and_route(
    services: Services<'_>,
    auth: &Auth,
    endpoint: Endpoint,
    request: Request,
) -> Response {
    let Services { mirrors, .. } = services;
    let asked = Asked::of(&request);
    let (endpoint, mirror, caller) = match asked.admit_routed(auth, mirrors, endpoint).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let peer = api_auth::peer(&request);
    let challenge = api_auth::challenge_scopes(&endpoint, request.method(), request.uri().query());
    // A mount from a repository the token does not cover, but the account
    // could: ask for a token that covers it, so the mount can happen
    // (a client that cannot get one uploads instead).
    if let Some(from) = api_auth::mount_source(&endpoint, request.method(), request.uri().query())
        && !caller.may(&from)
        && let Err(e @ RegistryError::InsufficientScope(_)) =
            Box::pin(auth.authorize(&caller, std::slice::from_ref(&from))).await
    {
        return api_auth::refusal(auth, request.headers(), &challenge, e);
    }
    let (parts, body) = request.into_parts();
    let origin = || api_auth::origin(&caller, peer, &parts.headers, &parts.method);
    let origin = LazyOrigin::new(&origin);
    let mirrored = mirror.as_ref().map(|route| (mirrors, route));
    match route(services, mirrored, &caller, &origin, endpoint, &parts, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

/// A manifest of a local repository, refused when a signature pull policy
/// protects it and it has no valid signature (a refused pull is no pull).
async fn pull_local_manifest(
    services: Services<'_>,
    repo: &RepoName,
    reference: &Reference,
    pulled_by: Option<&LazyOrigin<'_>>,
    origin: &LazyOrigin<'_>,
) -> Result<Arc<crate::meta::ManifestRow>> {
    let Services {
        registry,
        signatures,
        ..
    } = services;
    if signatures.policy_for(repo.as_str()).is_none() {
        return registry.get_manifest(repo, reference, pulled_by).await;
    }
    // Boxed: a protected pull is rarer than a plain one, whose future
    // would otherwise be as large as this path's (see `route`).
    Box::pin(async move {
        let row = registry.get_manifest(repo, reference, None).await?;
        signatures
            .check_pull(repo, reference, &row, origin.get())
            .await?;
        if let Some(origin) = pulled_by {
            registry.record_pull(repo, reference, &row, origin).await?;
        }
        Ok(row)
    })
    .await
}

/// What admission looks at in a request.
struct Asked<'a> {
    headers: &'a HeaderMap,
    method: Method,
    query: Option<String>,
    peer: Option<std::net::IpAddr>,
}

impl<'a> Asked<'a> {
    fn of(request: &'a Request) -> Asked<'a> {
        Asked {
            headers: request.headers(),
            method: request.method().clone(),
            query: request.uri().query().map(str::to_owned),
            peer: api_auth::peer(request),
        }
    }

    /// Admits the request on the repository it acts on: a mirror's, when a
    /// mirror answers it (a push into one is refused here). A name of no
    /// namespace that a mirror would answer is answered as a local name to
    /// a caller who may not pull through the mirror.
    async fn admit_routed(
        &self,
        auth: &Auth,
        mirrors: &Mirrors,
        endpoint: Endpoint,
    ) -> std::result::Result<(Endpoint, Option<Route>, Caller), Response> {
        let mirror = match self.mirror_route(mirrors, &endpoint).await {
            Ok(Some(mirror)) => mirror,
            Ok(None) => {
                let caller = self.admit(auth, &endpoint).await?;
                return Ok((endpoint, None, caller));
            }
            Err(e) => return Err(e.into_response()),
        };
        let routed = endpoint.clone().with_repository(mirror.local.clone());
        match self.admit(auth, &routed).await {
            Ok(caller) => Ok((routed, Some(mirror), caller)),
            Err(_) if mirror.unprefixed => {
                let caller = self.admit(auth, &endpoint).await?;
                Ok((endpoint, None, caller))
            }
            Err(refused) => Err(refused),
        }
    }

    /// Authenticates the request and checks it may do what `endpoint`
    /// needs; a refusal is the answer to send.
    async fn admit(
        &self,
        auth: &Auth,
        endpoint: &Endpoint,
    ) -> std::result::Result<Caller, Response> {
        let need = api_auth::needs(endpoint, &self.method);
        api_auth::admit(auth, self.headers, self.peer, need.as_ref())
            .await
            .map_err(|e| {
                let challenge =
                    api_auth::challenge_scopes(endpoint, &self.method, self.query.as_deref());
                api_auth::refusal(auth, self.headers, &challenge, e)
            })
    }

    /// The mirror that answers the request, if any (`ns` is how containerd
    /// names the registry an image belongs to).
    async fn mirror_route(&self, mirrors: &Mirrors, endpoint: &Endpoint) -> Result<Option<Route>> {
        let Some(repo) = endpoint.repository() else {
            return Ok(None);
        };
        let pull = matches!(self.method, Method::GET | Method::HEAD)
            && !matches!(endpoint, Endpoint::Uploads(_) | Endpoint::Upload(..));
        let query = Query::parse(self.query.as_deref());
        match mirrors.route(repo, query.get("ns"), pull).await? {
            Some(route) if !pull => Err(route.refuse_write()),
            route => Ok(route),
        }
    }
}

/// Answers an admitted request.
///
/// Large futures are boxed: an async fn's future is as large as its
/// largest arm, and every layer between hyper and here moves it by value
/// (an upload's future made this one 22 KB, copied about 28 times per
/// request, `GET /v2/` included). The cached reads (manifest GET, blob HEAD
/// and GET) stay unboxed, being small.
async fn route(
    services: Services<'_>,
    mirror: Option<(&Mirrors, &Route)>,
    caller: &Caller,
    origin: &LazyOrigin<'_>,
    endpoint: Endpoint,
    parts: &Parts,
    body: Body,
) -> Result<Response> {
    let registry = services.registry;
    let method = parts.method.clone();
    let query = Query::parse(parts.uri.query());
    let headers = &parts.headers;
    use Endpoint as E;
    match (endpoint, method) {
        // The version check every client starts with: an empty object,
        // the same every time.
        (E::Base, Method::GET | Method::HEAD) => Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            "{}",
        )
            .into_response()),
        (E::Catalog, Method::GET) => Box::pin(catalog(registry, &query)).await,
        (E::Tags(repo), Method::GET) => Box::pin(tags(registry, &repo, &query)).await,
        (E::Manifest(repo, reference), m @ (Method::GET | Method::HEAD)) => {
            let pulled_by = (m == Method::GET).then_some(origin);
            let Pulled {
                value: manifest,
                warning,
            } = match mirror {
                Some((mirrors, route)) => {
                    Box::pin(mirrors.pull_manifest(route, &reference, pulled_by)).await?
                }
                None => Pulled {
                    value: pull_local_manifest(services, &repo, &reference, pulled_by, origin)
                        .await?,
                    warning: None,
                },
            };
            let headers = [
                (header::CONTENT_TYPE, manifest.media_type.clone()),
                (header::CONTENT_LENGTH, manifest.content.len().to_string()),
                (DOCKER_CONTENT_DIGEST, manifest.digest.to_string()),
                (header::ETAG, format!("\"{}\"", manifest.digest)),
            ];
            let body = if m == Method::HEAD {
                Body::empty()
            } else {
                Body::from(manifest.content.clone())
            };
            let mut response = with_headers(StatusCode::OK, headers, body);
            if let Some(warning) = warning {
                set(
                    &mut response,
                    header::WARNING,
                    &crate::mirror::route::warning_value(&warning),
                );
            }
            Ok(response)
        }
        (E::Manifest(repo, reference), Method::PUT) => {
            let limit = registry.options().max_manifest_bytes;
            let content = read_bounded(body, limit).await?;
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            let pushed = Box::pin(registry.put_manifest(
                &repo,
                &reference,
                content_type,
                &content,
                origin.get(),
            ))
            .await?;
            let mut response = with_headers(
                StatusCode::CREATED,
                [
                    (
                        header::LOCATION,
                        format!("/v2/{repo}/manifests/{}", pushed.digest),
                    ),
                    (DOCKER_CONTENT_DIGEST, pushed.digest.to_string()),
                ],
                Body::empty(),
            );
            if let Some(subject) = pushed.subject {
                set(&mut response, OCI_SUBJECT, subject.as_str());
            }
            Ok(response)
        }
        (E::Blob(repo, digest), Method::HEAD) => {
            let size = match mirror {
                Some((mirrors, route)) => Box::pin(mirrors.pull_blob_size(route, &digest)).await?,
                None => registry.blob_size(&repo, &digest).await?,
            };
            Ok(blob_headers(StatusCode::OK, &digest, size, Body::empty()))
        }
        (E::Blob(repo, digest), Method::GET) => {
            let range = headers
                .get(header::RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(RangeRequest::parse);
            let read = match mirror {
                Some((mirrors, route)) => {
                    Box::pin(mirrors.pull_blob(route, &digest, range)).await?
                }
                None => registry.read_blob(&repo, &digest, range).await?,
            };
            let stream = match read.body {
                BlobBody::Stream(stream) => stream,
                BlobBody::Redirect(url) => {
                    return Ok(with_headers(
                        StatusCode::TEMPORARY_REDIRECT,
                        [
                            (header::LOCATION, url),
                            (DOCKER_CONTENT_DIGEST, digest.to_string()),
                            (header::CONTENT_LENGTH, "0".to_owned()),
                        ],
                        Body::empty(),
                    ));
                }
            };
            let body = Body::from_stream(stream);
            Ok(match read.range {
                None => blob_headers(StatusCode::OK, &digest, read.size, body),
                Some(r) => {
                    let len = r.end - r.start + 1;
                    let mut response =
                        blob_headers(StatusCode::PARTIAL_CONTENT, &digest, len, body);
                    set(
                        &mut response,
                        header::CONTENT_RANGE,
                        &format!("bytes {}-{}/{}", r.start, r.end, read.size),
                    );
                    response
                }
            })
        }
        (E::Uploads(repo), Method::POST) => {
            Box::pin(start_upload(registry, caller, &repo, &query, headers, body)).await
        }
        (E::Upload(repo, id), Method::GET) => {
            let size = registry.upload_size(&repo, &id).await?;
            Ok(upload_response(StatusCode::NO_CONTENT, &repo, &id, size))
        }
        (E::Upload(repo, id), Method::PATCH) => {
            let (start, length) = chunk_headers(headers)?;
            let size =
                Box::pin(registry.append_chunk(&repo, &id, start, length, body_stream(body)))
                    .await?;
            Ok(upload_response(StatusCode::ACCEPTED, &repo, &id, size))
        }
        (E::Upload(repo, id), Method::PUT) => {
            let digest = query.digest()?;
            let (start, length) = chunk_headers(headers)?;
            // A PUT with no body carries no last chunk.
            let last_chunk = (length != Some(0)).then(|| (start, length, body_stream(body)));
            Box::pin(registry.finish_upload(&repo, &id, &digest, last_chunk)).await?;
            Ok(blob_created(&repo, &digest))
        }
        (E::Upload(repo, id), Method::DELETE) => {
            Box::pin(registry.cancel_upload(&repo, &id)).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (E::Manifest(repo, reference), Method::DELETE) => {
            Box::pin(registry.delete_manifest(&repo, &reference, origin.get())).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        (E::Blob(repo, digest), Method::DELETE) => {
            Box::pin(registry.delete_blob(&repo, &digest)).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        (E::Referrers(repo, subject), Method::GET) => {
            Box::pin(referrers(registry, &repo, &subject, &query)).await
        }
        // Nothing is stored under a reference that is neither a tag nor a
        // digest: it is not found. A push to it is told why it is invalid.
        (E::UnnamedManifest(repo, reference), Method::GET | Method::HEAD | Method::DELETE) => Err(
            RegistryError::ManifestUnknown(format!("{repo}:{reference}")),
        ),
        (E::UnnamedManifest(_, reference), Method::PUT) => {
            match reference.parse::<crate::core::names::Reference>() {
                Err(e) => Err(e),
                Ok(_) => Err(RegistryError::TagInvalid(reference)),
            }
        }
        (E::UnnamedBlob(_, digest), Method::GET | Method::HEAD | Method::DELETE) => {
            Err(RegistryError::BlobUnknown(digest))
        }
        _ => Err(RegistryError::MethodNotAllowed),
    }
}

/// `POST /v2/<name>/blobs/uploads/`: a mount, a monolithic upload, or a new
/// upload session.
async fn start_upload(
    registry: &Registry,
    caller: &Caller,
    repo: &RepoName,
    query: &Query,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    if let Some(mount) = query.get("mount") {
        let digest: Digest = mount.parse()?;
        let from = query
            .get("from")
            .map(|f| f.parse::<RepoName>())
            .transpose()?;
        // A mount reads the blob from another repository: only from one
        // the caller may pull. Otherwise the client simply uploads.
        let may_read = match &from {
            Some(from) => caller.may(&ResourceScope::repository(from.clone(), Actions::PULL)),
            None => caller.may_pull_everything(),
        };
        if may_read && registry.mount_blob(repo, &digest, from.as_ref()).await? {
            return Ok(blob_created(repo, &digest));
        }
    } else if query.get("digest").is_some() {
        let digest = query.digest()?;
        let (_, length) = chunk_headers(headers)?;
        registry
            .push_blob(repo, &digest, length, body_stream(body))
            .await?;
        return Ok(blob_created(repo, &digest));
    }
    let id = registry.start_upload(repo).await?;
    Ok(upload_response(StatusCode::ACCEPTED, repo, &id, 0))
}

/// `GET /v2/<name>/referrers/<digest>`: an image index of the manifests
/// whose subject is `<digest>`.
async fn referrers(
    registry: &Registry,
    repo: &RepoName,
    subject: &Digest,
    query: &Query,
) -> Result<Response> {
    let artifact_type = query.get("artifactType").filter(|t| !t.is_empty());
    let rows = registry.referrers(repo, subject, artifact_type).await?;
    let manifests: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|row| {
            let mut descriptor = json!({
                "mediaType": row.media_type,
                "digest": row.digest,
                "size": row.size,
            });
            if let Some(t) = row.artifact_type {
                descriptor["artifactType"] = json!(t);
            }
            if let Some(a) = row
                .annotations
                .and_then(|a| serde_json::from_str::<serde_json::Value>(&a).ok())
            {
                descriptor["annotations"] = a;
            }
            descriptor
        })
        .collect();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": crate::core::manifest::OCI_INDEX,
        "manifests": manifests,
    });
    let mut response = json_response(StatusCode::OK, &index);
    set(
        &mut response,
        header::CONTENT_TYPE,
        crate::core::manifest::OCI_INDEX,
    );
    if artifact_type.is_some() {
        set(&mut response, OCI_FILTERS_APPLIED, "artifactType");
    }
    Ok(response)
}

async fn tags(registry: &Registry, repo: &RepoName, query: &Query) -> Result<Response> {
    let (n, last) = query.page()?;
    // `last` is where the previous page ended, compared as a string: a
    // value that is no tag simply falls between tags.
    let tags = registry.list_tags(repo, n, last).await?;
    let next = (n > 0 && tags.len() as u32 == n)
        .then(|| tags.last().cloned())
        .flatten();
    let mut response = json_response(
        StatusCode::OK,
        &json!({ "name": repo.as_str(), "tags": tags }),
    );
    if let Some(next) = next {
        set_link(
            &mut response,
            &format!("/v2/{repo}/tags/list?n={n}&last={next}"),
        );
    }
    Ok(response)
}

async fn catalog(registry: &Registry, query: &Query) -> Result<Response> {
    let (n, last) = query.page()?;
    let repositories = registry.list_repositories(n, last).await?;
    let next = (n > 0 && repositories.len() as u32 == n)
        .then(|| repositories.last().cloned())
        .flatten();
    let mut response = json_response(StatusCode::OK, &json!({ "repositories": repositories }));
    if let Some(next) = next {
        set_link(&mut response, &format!("/v2/_catalog?n={n}&last={next}"));
    }
    Ok(response)
}

// ---- request pieces ----------------------------------------------------

/// The query string's parameters, decoded.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: Option<&str>) -> Query {
        let pairs = form_urlencoded::parse(query.unwrap_or("").as_bytes());
        Query(
            pairs
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn digest(&self) -> Result<Digest> {
        self.get("digest")
            .ok_or_else(|| {
                RegistryError::DigestInvalid("the digest query parameter is required".into())
            })?
            .parse()
    }

    /// `n` and `last` of a paginated listing. A page larger than berth
    /// serves (however many digits) is cut to its largest, as the spec
    /// allows: the `Link` header leads on. An empty `n` is no `n`.
    fn page(&self) -> Result<(u32, Option<&str>)> {
        let n = match self.get("n").filter(|n| !n.is_empty()) {
            None => MAX_PAGE,
            Some(n) if n.bytes().all(|c| c.is_ascii_digit()) => {
                n.parse::<u32>().map_or(MAX_PAGE, |n| n.min(MAX_PAGE))
            }
            Some(n) => {
                return Err(RegistryError::PaginationNumberInvalid(format!(
                    "n={n:?} is not a page size: give a whole number from 0"
                )));
            }
        };
        Ok((n, self.get("last").filter(|l| !l.is_empty())))
    }
}

/// The chunk's start (from `Content-Range: <start>-<end>`) and declared
/// length (from `Content-Length`), checked against each other.
fn chunk_headers(headers: &HeaderMap) -> Result<(Option<u64>, Option<u64>)> {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Some(range) = headers.get(header::CONTENT_RANGE) else {
        return Ok((None, length));
    };
    let bad = || RegistryError::BlobUploadInvalid("Content-Range must be <start>-<end>".into());
    let range = range.to_str().map_err(|_| bad())?.trim();
    // The spec's form is bare `start-end`; some clients prefix a unit.
    let range = range
        .strip_prefix("bytes=")
        .or_else(|| range.strip_prefix("bytes "))
        .unwrap_or(range);
    let (start, end) = range.split_once('-').ok_or_else(bad)?;
    let start: u64 = start.parse().map_err(|_| bad())?;
    let end: u64 = end.parse().map_err(|_| bad())?;
    if end < start {
        return Err(bad());
    }
    if let Some(length) = length
        && length != end - start + 1
    {
        return Err(RegistryError::SizeInvalid(format!(
            "Content-Range {start}-{end} is {} bytes but Content-Length is {length}",
            end - start + 1
        )));
    }
    Ok((Some(start), length.or(Some(end - start + 1))))
}

/// A request body as the core takes it.
fn body_stream(body: Body) -> impl crate::core::BodyStream {
    futures_util::TryStreamExt::map_err(body.into_data_stream(), std::io::Error::other)
}

/// Reads a small body whole, refusing it past `limit` bytes. An oversized
/// body is still read (and dropped) up to `DRAIN_LIMIT`, so the client,
/// which is busy sending, gets to read the refusal instead of a broken pipe.
async fn read_bounded(body: Body, limit: u64) -> Result<bytes::Bytes> {
    use futures_util::StreamExt;
    const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;
    let mut stream = body.into_data_stream();
    let mut content = bytes::BytesMut::new();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| RegistryError::BodyRead(e.to_string()))?;
        size += chunk.len() as u64;
        if size <= limit {
            content.extend_from_slice(&chunk);
        } else if size > DRAIN_LIMIT {
            break;
        }
    }
    if size > limit {
        return Err(RegistryError::ManifestTooLarge { size, limit });
    }
    Ok(content.freeze())
}

// ---- response pieces ---------------------------------------------------

const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
const DOCKER_UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

/// The `Range` header of an upload holding `size` bytes. Distribution
/// answers `0-0` for an empty upload, and clients expect that.
pub fn range_header(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

fn upload_response(status: StatusCode, repo: &RepoName, id: &str, size: u64) -> Response {
    with_headers(
        status,
        [
            (header::LOCATION, format!("/v2/{repo}/blobs/uploads/{id}")),
            (header::RANGE, range_header(size)),
            (DOCKER_UPLOAD_UUID, id.to_owned()),
            (header::CONTENT_LENGTH, "0".to_owned()),
        ],
        Body::empty(),
    )
}

fn blob_created(repo: &RepoName, digest: &Digest) -> Response {
    with_headers(
        StatusCode::CREATED,
        [
            (header::LOCATION, format!("/v2/{repo}/blobs/{digest}")),
            (DOCKER_CONTENT_DIGEST, digest.to_string()),
            (header::CONTENT_LENGTH, "0".to_owned()),
        ],
        Body::empty(),
    )
}

fn blob_headers(status: StatusCode, digest: &Digest, length: u64, body: Body) -> Response {
    with_headers(
        status,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, length.to_string()),
            (DOCKER_CONTENT_DIGEST, digest.to_string()),
            (header::ACCEPT_RANGES, "bytes".to_owned()),
            (header::ETAG, format!("\"{digest}\"")),
        ],
        body,
    )
}

fn with_headers<const N: usize>(
    status: StatusCode,
    headers: [(HeaderName, String); N],
    body: Body,
) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    for (name, value) in headers {
        set(&mut response, name, &value);
    }
    response
}

/// Sets a header whose value berth built; values come from validated names
/// and digests, so a failure to encode one would be a bug, and is skipped.
fn set(response: &mut Response, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

fn set_link(response: &mut Response, url: &str) {
    set(response, header::LINK, &format!("<{url}>; rel=\"next\""));
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(range: Option<&str>, length: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(r) = range {
            h.insert(header::CONTENT_RANGE, HeaderValue::from_str(r).unwrap());
        }
        if let Some(l) = length {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from_str(l).unwrap());
        }
        h
    }

    #[test]
    fn content_range_headers() {
        assert_eq!(
            chunk_headers(&headers(None, Some("5"))).unwrap(),
            (None, Some(5))
        );
        assert_eq!(
            chunk_headers(&headers(Some("0-9"), Some("10"))).unwrap(),
            (Some(0), Some(10))
        );
        assert_eq!(
            chunk_headers(&headers(Some("10-19"), None)).unwrap(),
            (Some(10), Some(10))
        );
        assert!(matches!(
            chunk_headers(&headers(Some("0-9"), Some("3"))),
            Err(RegistryError::SizeInvalid(_))
        ));
        for bad in ["9-0", "a-b", "10", "-5", "0-", ""] {
            assert!(
                matches!(
                    chunk_headers(&headers(Some(bad), None)),
                    Err(RegistryError::BlobUploadInvalid(_))
                ),
                "{bad}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn content_range_parser_never_panics(range in "[ -~]{0,40}", length in "[0-9]{0,25}") {
            let _ = chunk_headers(&headers(Some(&range), Some(&length)));
        }
    }
}
