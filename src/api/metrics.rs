//! `/metrics` for Prometheus, and the layer that times and counts every
//! request for it.
//!
//! On the main listener `/metrics` needs what listing the catalog needs
//! (pull on `*`): the registry may face the internet, and the numbers tell
//! outsiders more than they should. With `[metrics] listen` set it is
//! served there instead, without credentials, for a scraper on a private
//! network, and the main listener answers 404.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::future::BoxFuture;
use http_body::Frame;

use crate::api::auth as api_auth;
use crate::auth::Auth;
use crate::auth::scope::ResourceScope;
use crate::core::{Registry, RegistryError};
use crate::metrics;

/// The route a request is counted under, when its handler knows it better
/// than the path does (every `/v2/` request is one path pattern).
#[derive(Clone, Copy)]
pub struct RouteName(pub &'static str);

/// Whether `/metrics` is served on the main listener or on its own.
#[derive(Clone, Copy)]
pub struct MetricsPlace {
    pub on_main_listener: bool,
}

/// Counts each request, its duration to the response headers, and the
/// body bytes each way. A plain tower layer rather than
/// `middleware::from_fn`: this sits on every manifest GET, and from_fn's
/// boxed service per request cost over twice as many instructions.
#[derive(Clone, Copy, Default)]
pub struct TrackLayer;

impl<S> tower::Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track { inner }
    }
}

#[derive(Clone)]
pub struct Track<S> {
    inner: S,
}

impl<S> tower::Service<Request> for Track<S>
where
    S: tower::Service<Request, Response = Response>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        let method = method_label(request.method());
        let path_route = path_route(request.uri().path());
        // Most requests have no body: they get no counter either.
        let received = (!request.body().is_end_stream()).then(|| Arc::new(AtomicU64::new(0)));
        let request = match &received {
            Some(count) => {
                let count = count.clone();
                request.map(|body| {
                    Body::new(Counted::new(body, move |n| {
                        count.fetch_add(n, Ordering::Relaxed);
                    }))
                })
            }
            None => request,
        };
        let uri = request.uri().clone();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            if response.status().is_server_error() {
                let id = response.headers().get("x-request-id");
                let id = id.and_then(|v| v.to_str().ok()).unwrap_or("");
                tracing::warn!(id, method, %uri, status = response.status().as_u16(), "request failed");
            }
            let route = response
                .extensions()
                .get::<RouteName>()
                .map_or(path_route, |r| r.0);
            metrics::request_answered(
                route,
                method,
                response.status().as_str(),
                started.elapsed().as_secs_f64(),
            );
            if let Some(count) = received {
                // The handler has returned, so it read all it was going to.
                metrics::bytes_received(route, count.load(Ordering::Relaxed));
            }
            Ok(count_sent(route, response))
        })
    }
}

/// Counts the response body: at once when it is in memory (its size is
/// known), else frame by frame as it streams out.
fn count_sent(route: &'static str, response: Response) -> Response {
    match response.body().size_hint().exact() {
        Some(0) => response,
        Some(size) => {
            metrics::bytes_sent(route).inc_by(size);
            response
        }
        None => {
            let sent = metrics::bytes_sent(route);
            response.map(|body| Body::new(Counted::new(body, move |n| sent.inc_by(n))))
        }
    }
}

/// Routes outside `/v2/`, named by their path; a `/v2/` request that got
/// this far without a [`RouteName`] named no endpoint.
fn path_route(path: &str) -> &'static str {
    match path {
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        "/auth/token" => "token",
        "/metrics" => "metrics",
        _ if path.starts_with("/admin/") => "admin",
        _ => "unknown",
    }
}

/// Methods beyond HTTP's own are one label, whatever a client sends.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// `GET /metrics` on the main listener.
pub async fn scrape(
    State(registry): State<Arc<Registry>>,
    State(auth): State<Arc<Auth>>,
    State(place): State<MetricsPlace>,
    request: Request,
) -> Response {
    if !place.on_main_listener {
        return RegistryError::RouteUnknown.into_response();
    }
    let need = ResourceScope::catalog();
    let peer = api_auth::peer(&request);
    if let Err(e) = api_auth::admit(&auth, request.headers(), peer, Some(&need)).await {
        return api_auth::refusal(&auth, request.headers(), std::slice::from_ref(&need), e);
    }
    exposition(&registry).await
}

/// The router of the separate metrics listener: `/metrics`, open to all
/// who can reach the address.
pub fn listener_router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(registry): State<Arc<Registry>>| async move { exposition(&registry).await }),
        )
        .with_state(registry)
}

async fn exposition(registry: &Registry) -> Response {
    let _settled = metrics::settled().await;
    match registry.usage().await {
        Ok(usage) => (
            [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
            metrics::render(&usage),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// A body that reports the size of each data frame as it passes.
struct Counted<F> {
    inner: Body,
    add: F,
}

impl<F: Fn(u64)> Counted<F> {
    fn new(inner: Body, add: F) -> Counted<F> {
        Counted { inner, add }
    }
}

impl<F: Fn(u64) + Unpin> HttpBody for Counted<F> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            (self.add)(data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
