//! Answering pulls through a mirror.
//!
//! - A manifest or blob by digest is served from the cache whenever it is
//!   there: content by digest never changes, so it never goes upstream
//!   again.
//! - A tag is trusted for the mirror's `tag_ttl_seconds` after the upstream
//!   last confirmed it; then a HEAD (which Docker Hub does not count as a
//!   pull) asks whether it moved, and only a moved tag is fetched.
//! - When that check fails (the upstream is unreachable, times out,
//!   answers 5xx or 429), the cached tag is served anyway, with a
//!   `Warning` header. A tag never cached gets an error naming the
//!   upstream's answer.
//! - What is fetched is checked against its digest before anything is
//!   stored or handed out whole.

use std::str::FromStr;
use std::sync::Arc;

use futures_util::StreamExt;
use reqwest::Method;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};

use crate::core::event::LazyOrigin;
use crate::core::hashing::digest_bytes;
use crate::core::names::{Algorithm, Digest, Reference, Tag};
use crate::core::{BlobBody, BlobRead, RangeRequest, Registry, RegistryError, Result};
use crate::meta::{ManifestRow, now_ms};
use crate::mirror::flights::{BlobFlight, BlobFlights, BlobState};
use crate::mirror::route::Route;
use crate::mirror::upstream::{UpstreamError, chain};
use crate::mirror::usage::{Answer, UseLog};
use crate::mirror::{Mirror, Mirrors};

/// The manifest types asked of upstreams: every one berth stores.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// What a mirror answered with, and a warning for the client when the
/// answer is a stale one.
pub struct Pulled<T> {
    pub value: T,
    pub warning: Option<String>,
}

/// How a tag's pull was answered.
#[derive(Clone, Debug)]
pub enum TagAnswer {
    /// From the cache, confirmed within the tag TTL.
    Confirmed,
    /// Fetched from the upstream now.
    Fetched,
    /// From the cache, unconfirmed: the upstream failed so.
    Stale(String),
}

/// Why a mirror could not answer, as shared by every waiter of a flight.
#[derive(Clone, Debug)]
pub struct Failure {
    kind: FailureKind,
    message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FailureKind {
    /// The upstream says there is no such thing.
    NotFound,
    /// The upstream failed, or sent what cannot be right.
    Upstream,
    /// Something on berth's side.
    Internal,
}

impl Failure {
    fn upstream(message: String) -> Failure {
        Failure {
            kind: FailureKind::Upstream,
            message,
        }
    }

    fn internal(e: RegistryError) -> Failure {
        Failure {
            kind: FailureKind::Internal,
            message: e.to_string(),
        }
    }

    /// How a blob's flight ends on this failure.
    fn into_state(self) -> BlobState {
        BlobState::Failed {
            not_found: self.kind == FailureKind::NotFound,
            message: self.message,
        }
    }

    fn of(mirror: &Mirror, e: UpstreamError) -> Failure {
        if !e.not_found {
            crate::metrics::mirror_upstream_error(mirror.namespace());
        }
        Failure {
            kind: match e.not_found {
                true => FailureKind::NotFound,
                false => FailureKind::Upstream,
            },
            message: e.message,
        }
    }

    /// The error a client gets for a manifest. An upstream that failed is
    /// answered 404 with its answer quoted: clients print the message of a
    /// 4xx only (and a node with other hosts to try goes on to them).
    fn for_manifest(self, what: &str) -> RegistryError {
        match self.kind {
            FailureKind::NotFound => RegistryError::ManifestUnknown(format!(
                "{what}: the upstream has none: {}",
                self.message
            )),
            FailureKind::Upstream => RegistryError::ManifestUnknown(format!(
                "{what} is not cached, and the upstream failed: {}",
                self.message
            )),
            FailureKind::Internal => RegistryError::Internal(self.message),
        }
    }
}

impl Mirror {
    fn tag_ttl_ms(&self) -> i64 {
        self.config.tag_ttl_seconds.saturating_mul(1000) as i64
    }

    /// Whether this process confirmed `tag` within the tag TTL.
    fn recently_checked(&self, repo: &str, tag: &str) -> bool {
        let ttl = std::time::Duration::from_secs(self.config.tag_ttl_seconds);
        self.checked
            .lock()
            .expect("checked tags")
            .get(&(repo.to_owned(), tag.to_owned()))
            .is_some_and(|at| at.elapsed() < ttl)
    }

    fn remember_checked(&self, repo: &str, tag: &str) {
        let mut checked = self.checked.lock().expect("checked tags");
        if checked.len() >= 100_000 {
            checked.clear();
        }
        checked.insert((repo.to_owned(), tag.to_owned()), std::time::Instant::now());
    }
}

impl Mirrors {
    /// A manifest through the mirror `route` names. `pulled_by` records a
    /// pull event, as for any pull.
    pub async fn pull_manifest(
        &self,
        route: &Route,
        reference: &Reference,
        pulled_by: Option<&LazyOrigin<'_>>,
    ) -> Result<Pulled<Arc<ManifestRow>>> {
        let registry = &self.registry;
        let (mirror, local) = (&route.mirror, &route.local);
        let what = format!("{local}:{reference}");
        let cached = match reference {
            Reference::Digest(_) => true,
            Reference::Tag(tag) => mirror.recently_checked(local.as_str(), tag.as_str()),
        };
        if cached {
            match registry.get_manifest(local, reference, pulled_by).await {
                Ok(row) => {
                    self.note(route, &row.digest, true, Answer::Hit);
                    return Ok(Pulled {
                        value: row,
                        warning: None,
                    });
                }
                // Not cached, or evicted since.
                Err(RegistryError::ManifestUnknown(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let key = format!("{local}/{reference}");
        let answer = mirror
            .manifests
            .run(&key, || async {
                match reference {
                    Reference::Digest(_) => self
                        .fetch_manifest(route, reference, None)
                        .await
                        .map(|()| TagAnswer::Fetched),
                    Reference::Tag(tag) => self.check_tag(route, tag).await,
                }
            })
            .await
            .map_err(|f| f.for_manifest(&what))?;
        let row = registry.get_manifest(local, reference, pulled_by).await?;
        let (answer, warning) = match answer {
            TagAnswer::Confirmed => (Answer::Hit, None),
            TagAnswer::Fetched => (Answer::Miss, None),
            TagAnswer::Stale(why) => (
                Answer::Stale,
                Some(format!(
                    "{what} is served from berth's cache unconfirmed: the upstream failed: {why}"
                )),
            ),
        };
        self.note(route, &row.digest, true, answer);
        Ok(Pulled {
            value: row,
            warning,
        })
    }

    fn note(&self, route: &Route, digest: &Digest, manifest: bool, answer: Answer) {
        self.uses.note(
            route.mirror.namespace(),
            route.local.as_str(),
            digest.as_str(),
            manifest,
            answer,
        );
    }

    /// Whether a cached `tag` still stands upstream: trusted within the
    /// tag TTL, else asked with a HEAD; a tag not cached is fetched.
    async fn check_tag(&self, route: &Route, tag: &Tag) -> std::result::Result<TagAnswer, Failure> {
        let (mirror, local) = (&route.mirror, &route.local);
        let cached = self
            .registry
            .cached_tag(local, tag)
            .await
            .map_err(Failure::internal)?;
        let Some(cached) = cached else {
            self.fetch_manifest(route, &Reference::Tag(tag.clone()), Some(tag))
                .await?;
            return Ok(TagAnswer::Fetched);
        };
        // Another process (or an earlier flight) confirmed it lately.
        if now_ms() - cached.checked_at < mirror.tag_ttl_ms() {
            mirror.remember_checked(local.as_str(), tag.as_str());
            return Ok(TagAnswer::Confirmed);
        }
        let path = format!("manifests/{tag}");
        let head = mirror
            .upstream
            .get(Method::HEAD, &route.upstream, &path, Some(ACCEPT))
            .await;
        let upstream_digest = match head {
            Ok(response) => header_digest(&response),
            Err(e) if e.not_found => return Err(Failure::of(mirror, e)),
            Err(e) => {
                let failure = Failure::of(mirror, e);
                return Ok(TagAnswer::Stale(failure.message));
            }
        };
        let fetched = match upstream_digest {
            Some(digest) if digest == cached.digest => {
                self.registry
                    .confirm_cached_tag(local, tag, &digest)
                    .await
                    .map_err(Failure::internal)?;
                mirror.remember_checked(local.as_str(), tag.as_str());
                return Ok(TagAnswer::Confirmed);
            }
            // Moved: the new manifest, by digest, so what is stored is
            // exactly what the HEAD named.
            Some(digest) => {
                self.fetch_manifest(route, &Reference::Digest(digest), Some(tag))
                    .await
            }
            // An upstream that does not name the digest: the tag's bytes.
            None => {
                self.fetch_manifest(route, &Reference::Tag(tag.clone()), Some(tag))
                    .await
            }
        };
        match fetched {
            Ok(()) => Ok(TagAnswer::Fetched),
            Err(f) if f.kind == FailureKind::Upstream => Ok(TagAnswer::Stale(f.message)),
            Err(f) => Err(f),
        }
    }

    /// Fetches `reference` from the upstream and stores it, tagged `tag` if
    /// given, once its bytes proved to be what was asked for.
    async fn fetch_manifest(
        &self,
        route: &Route,
        reference: &Reference,
        tag: Option<&Tag>,
    ) -> std::result::Result<(), Failure> {
        let mirror = &route.mirror;
        let path = format!("manifests/{reference}");
        let url = format!("{}/v2/{}/{path}", mirror.upstream.base(), route.upstream);
        let response = mirror
            .upstream
            .get(Method::GET, &route.upstream, &path, Some(ACCEPT))
            .await
            .map_err(|e| Failure::of(mirror, e))?;
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let named = header_digest(&response);
        let limit = self.registry.options().max_manifest_bytes;
        let body = read_limited(response, limit).await.map_err(|e| {
            crate::metrics::mirror_upstream_error(mirror.namespace());
            Failure::upstream(format!("GET {url}: {e}"))
        })?;
        crate::metrics::mirror_upstream_bytes(mirror.namespace()).inc_by(body.len() as u64);
        let digest = match (reference, named) {
            (Reference::Digest(d), _) => d.clone(),
            (Reference::Tag(_), Some(named)) if named.algorithm() != Algorithm::Sha256 => named,
            (Reference::Tag(_), named) => {
                let actual = digest_bytes(Algorithm::Sha256, &body);
                if let Some(named) = named.filter(|n| n != &actual) {
                    crate::metrics::mirror_upstream_error(mirror.namespace());
                    return Err(Failure::upstream(format!(
                        "GET {url}: the upstream named {named}, but its bytes hash to {actual}"
                    )));
                }
                actual
            }
        };
        let stored = self
            .registry
            .store_cached_manifest(
                &route.local,
                mirror.namespace(),
                tag,
                &digest,
                content_type.as_deref(),
                &body,
            )
            .await;
        match stored {
            Ok(_) => {}
            // What the upstream sent cannot be right: its fault, not ours.
            Err(
                e @ (RegistryError::DigestInvalid(_)
                | RegistryError::ManifestInvalid(_)
                | RegistryError::ManifestTooLarge { .. }),
            ) => {
                crate::metrics::mirror_upstream_error(mirror.namespace());
                return Err(Failure::upstream(format!("GET {url}: {e}")));
            }
            Err(e) => return Err(Failure::internal(e)),
        }
        if let Some(tag) = tag {
            mirror.remember_checked(route.local.as_str(), tag.as_str());
        }
        mirror.evict_soon(self.registry.clone(), self.uses.clone());
        Ok(())
    }

    /// The size of a blob through the mirror: cached, in flight, or as the
    /// upstream's HEAD says (nothing is fetched for a HEAD).
    pub async fn pull_blob_size(&self, route: &Route, digest: &Digest) -> Result<u64> {
        match self.registry.blob_size(&route.local, digest).await {
            Ok(size) => {
                self.note(route, digest, false, Answer::Hit);
                return Ok(size);
            }
            Err(RegistryError::BlobUnknown(_)) => {}
            Err(e) => return Err(e),
        }
        if let Some(flight) = self.blobs.get(digest) {
            match flight.started().await {
                BlobState::Streaming {
                    size: Some(size), ..
                }
                | BlobState::Done { size } => return Ok(size),
                _ => {}
            }
        }
        let mirror = &route.mirror;
        let response = mirror
            .upstream
            .get(
                Method::HEAD,
                &route.upstream,
                &format!("blobs/{digest}"),
                None,
            )
            .await
            .map_err(|e| blob_error(digest, Failure::of(mirror, e)))?;
        content_length(&response).ok_or_else(|| {
            RegistryError::BlobUnknown(format!(
                "{digest} is not cached, and the upstream's HEAD named no size"
            ))
        })
    }

    /// A blob through the mirror: from the cache, else from the one fetch
    /// of it in flight (started now if none is), read as it arrives.
    pub async fn pull_blob(
        &self,
        route: &Route,
        digest: &Digest,
        range: Option<RangeRequest>,
    ) -> Result<BlobRead> {
        match self.registry.read_blob(&route.local, digest, range).await {
            Ok(read) => {
                self.note(route, digest, false, Answer::Hit);
                return Ok(read);
            }
            Err(RegistryError::BlobUnknown(_)) => {}
            Err(e) => return Err(e),
        }
        let (flight, first) = self.blobs.join(digest, &route.local);
        if first {
            tokio::spawn(fetch_blob(
                self.registry.clone(),
                self.blobs.clone(),
                self.uses.clone(),
                route.clone(),
                digest.clone(),
                flight.clone(),
            ));
        }
        let read = match flight.started().await {
            BlobState::Streaming {
                upload,
                size: Some(size),
                ..
            } if size > 0 => {
                self.follow(route, digest, &flight, &upload, size, range)
                    .await?
            }
            _ => None,
        };
        let read = match read {
            Some(read) => read,
            // Gone past streaming, or no file to follow: the stored blob.
            None => {
                if let BlobState::Failed { not_found, message } = flight.finished().await {
                    let kind = match not_found {
                        true => FailureKind::NotFound,
                        false => FailureKind::Upstream,
                    };
                    return Err(blob_error(digest, Failure { kind, message }));
                }
                self.link_if_elsewhere(route, digest, &flight).await?;
                self.registry.read_blob(&route.local, digest, range).await?
            }
        };
        self.note(route, digest, false, Answer::Miss);
        Ok(read)
    }

    /// The bytes of `flight` as they are written, when the storage keeps
    /// them in a file this process can read.
    async fn follow(
        &self,
        route: &Route,
        digest: &Digest,
        flight: &Arc<BlobFlight>,
        upload: &str,
        size: u64,
        range: Option<RangeRequest>,
    ) -> Result<Option<BlobRead>> {
        let range = range.map(|r| r.resolve(size)).transpose()?;
        let Ok(Some(file)) = self.registry.follow_upload(upload).await else {
            return Ok(None);
        };
        let (start, end) = range.map_or((0, size - 1), |r| (r.start, r.end));
        let body = flight.follow(file, start, end);
        if flight.repo != route.local {
            // Fetched for another repository: linked here too once stored.
            let (mirrors_registry, route, digest, flight) = (
                self.registry.clone(),
                route.clone(),
                digest.clone(),
                flight.clone(),
            );
            tokio::spawn(async move {
                if let BlobState::Done { .. } = flight.finished().await
                    && let Err(e) = mirrors_registry
                        .link_cached_blob(&route.local, &digest, route.mirror.namespace())
                        .await
                {
                    tracing::warn!(error = %e, "linking a fetched blob");
                }
            });
        }
        Ok(Some(BlobRead {
            size,
            range,
            body: BlobBody::Stream(body),
        }))
    }

    async fn link_if_elsewhere(
        &self,
        route: &Route,
        digest: &Digest,
        flight: &BlobFlight,
    ) -> Result<()> {
        if flight.repo != route.local {
            self.registry
                .link_cached_blob(&route.local, digest, route.mirror.namespace())
                .await?;
        }
        Ok(())
    }
}

/// The error a client gets for a blob.
fn blob_error(digest: &Digest, failure: Failure) -> RegistryError {
    match failure.kind {
        FailureKind::NotFound => RegistryError::BlobUnknown(format!(
            "{digest}: the upstream has none: {}",
            failure.message
        )),
        FailureKind::Upstream => RegistryError::BlobUnknown(format!(
            "{digest} is not cached, and the upstream failed: {}",
            failure.message
        )),
        FailureKind::Internal => RegistryError::Internal(failure.message),
    }
}

/// The one fetch of a blob: from the upstream into an upload, through the
/// push path (hashed as it streams, checked against `digest`, synced,
/// committed), then marked as the mirror's.
async fn fetch_blob(
    registry: Arc<Registry>,
    flights: Arc<BlobFlights>,
    uses: Arc<UseLog>,
    route: Route,
    digest: Digest,
    flight: Arc<BlobFlight>,
) {
    let outcome = fetch_blob_into(&registry, &route, &digest, &flight).await;
    if let BlobState::Done { .. } = outcome {
        route.mirror.evict_soon(registry.clone(), uses);
    }
    flight.set(outcome);
    flights.land(&digest);
}

/// A blob's flight ended by berth's side, not by the upstream's answer.
fn failed(message: String) -> BlobState {
    BlobState::Failed {
        not_found: false,
        message,
    }
}

async fn fetch_blob_into(
    registry: &Arc<Registry>,
    route: &Route,
    digest: &Digest,
    flight: &Arc<BlobFlight>,
) -> BlobState {
    let (mirror, local) = (&route.mirror, &route.local);
    let ns = mirror.namespace();
    // Stored by a fetch that just ended.
    if let Ok(size) = registry.blob_size(local, digest).await {
        return BlobState::Done { size };
    }
    let path = format!("blobs/{digest}");
    // Stored for another repository (a layer two images share): linked
    // once the upstream confirms this repository has it, not fetched.
    if let Ok(Some(_)) = registry.stored_blob_size(digest).await {
        match mirror
            .upstream
            .get(Method::HEAD, &route.upstream, &path, None)
            .await
        {
            Ok(_) => match registry.link_cached_blob(local, digest, ns).await {
                Ok(true) => {
                    if let Ok(size) = registry.blob_size(local, digest).await {
                        return BlobState::Done { size };
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "linking a stored blob"),
            },
            Err(e) => return Failure::of(mirror, e).into_state(),
        }
    }
    // A collector deleting this digest (evicted a moment ago) refuses
    // the commit; the bytes are fetched again once it is done with them.
    // Whoever follows the first attempt's file keeps reading it: its
    // bytes were verified, and the last is released when a fetch is done.
    let mut pause = std::time::Duration::from_millis(100);
    loop {
        match fetch_and_store(registry, route, digest, flight, &path).await {
            Ok(()) => break,
            Err(Store::Collected) if pause <= COLLECTED_PATIENCE => {
                tracing::info!(mirror = ns, %digest, "a collector was deleting the fetched blob: fetching it again");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Err(Store::Collected) => {
                return failed(format!(
                    "{digest} stayed in garbage collection while it was fetched"
                ));
            }
            Err(Store::Failed(state)) => return state,
        }
    }
    if let Err(e) = registry.mark_cached_blob(local, digest, ns).await {
        tracing::warn!(error = %e, "marking a fetched blob as cached");
    }
    match registry.blob_size(local, digest).await {
        Ok(size) => BlobState::Done { size },
        Err(e) => failed(e.to_string()),
    }
}

/// Why one fetch into an upload stored nothing.
enum Store {
    /// A collector was deleting the digest: worth fetching again.
    Collected,
    /// What the flight ends in.
    Failed(BlobState),
}

/// How long, doubling from 100 ms, a fetch waits for a collector before
/// fetching again.
const COLLECTED_PATIENCE: std::time::Duration = std::time::Duration::from_millis(1600);

/// One GET of the blob from the upstream, through the push path into an
/// upload of its own (hashed as it streams, checked against `digest`,
/// synced, committed).
async fn fetch_and_store(
    registry: &Arc<Registry>,
    route: &Route,
    digest: &Digest,
    flight: &Arc<BlobFlight>,
    path: &str,
) -> std::result::Result<(), Store> {
    let (mirror, local) = (&route.mirror, &route.local);
    let ns = mirror.namespace();
    let response = match mirror
        .upstream
        .get(Method::GET, &route.upstream, path, None)
        .await
    {
        Ok(response) => response,
        Err(e) => return Err(Store::Failed(Failure::of(mirror, e).into_state())),
    };
    let url = format!("{}/v2/{}/{path}", mirror.upstream.base(), route.upstream);
    let size = response.content_length();
    let upload = match registry.start_upload(local).await {
        Ok(id) => id,
        Err(e) => return Err(Store::Failed(failed(e.to_string()))),
    };
    flight.set(BlobState::Streaming {
        upload: upload.clone(),
        size,
        received: 0,
    });
    let counter = crate::metrics::mirror_upstream_bytes(ns);
    let counting = flight.clone();
    let body = response
        .bytes_stream()
        .map(move |item| match item {
            Ok(bytes) => {
                counting.received(bytes.len() as u64);
                counter.inc_by(bytes.len() as u64);
                Ok(bytes)
            }
            Err(e) => Err(std::io::Error::other(chain(&e))),
        })
        .boxed();
    let finished = registry
        .finish_upload(local, &upload, digest, Some((Some(0), size, body)))
        .await;
    if let Err(e) = finished {
        // Nothing stays: the upload goes (a digest mismatch removed it
        // already).
        let _ = registry.cancel_upload(local, &upload).await;
        if let RegistryError::BlobBeingCollected(_) = e {
            return Err(Store::Collected);
        }
        crate::metrics::mirror_upstream_error(ns);
        let why = match &e {
            RegistryError::DigestInvalid(m) => format!("the bytes of GET {url} do not match: {m}"),
            RegistryError::BodyRead(m) => format!("GET {url} broke off: {m}"),
            RegistryError::SizeInvalid(m) => format!("GET {url}: {m}"),
            other => format!("storing GET {url}: {other}"),
        };
        tracing::warn!(mirror = ns, %digest, error = %why, "a blob fetch failed");
        return Err(Store::Failed(failed(why)));
    }
    Ok(())
}

/// The digest an upstream names in `Docker-Content-Digest`, if valid.
fn header_digest(response: &reqwest::Response) -> Option<Digest> {
    response
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Digest::from_str(v.trim()).ok())
}

/// `Content-Length` as sent (HEAD answers included, which have no body).
fn content_length(response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// A small body, refused past `limit` bytes.
async fn read_limited(
    response: reqwest::Response,
    limit: u64,
) -> std::result::Result<Vec<u8>, String> {
    let mut stream = response.bytes_stream();
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| chain(&e))?;
        body.extend_from_slice(&chunk);
        if body.len() as u64 > limit {
            return Err(format!(
                "the manifest exceeds berth's limit of {limit} bytes"
            ));
        }
    }
    Ok(body)
}
