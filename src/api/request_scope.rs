//! Every request's id and log span. A request keeps the id it came with
//! (`X-Request-Id`) or gets a new one; its handler's log lines carry the id
//! (the `request` span), and so do its answer and the events it causes.
//!
//! One plain layer rather than tower-http's request-id and trace layers:
//! those put the id in the request's extensions (a map allocated per
//! request) and wrap every response body, costs every `GET /v2/` paid.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(Clone, Copy, Default)]
pub struct RequestScopeLayer;

impl<S> tower::Layer<S> for RequestScopeLayer {
    type Service = RequestScope<S>;

    fn layer(&self, inner: S) -> RequestScope<S> {
        RequestScope { inner }
    }
}

#[derive(Clone)]
pub struct RequestScope<S> {
    inner: S,
}

impl<S> tower::Service<Request> for RequestScope<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Answer<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let id = match request.headers().get(X_REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let id = new_id();
                request.headers_mut().insert(X_REQUEST_ID, id.clone());
                id
            }
        };
        // Display, not Debug: a string's Debug escapes it char by char.
        let span = tracing::info_span!("request", id = %id.to_str().unwrap_or(""));
        let answer = span.in_scope(|| self.inner.call(request));
        Answer {
            answer,
            span,
            id: Some(id),
        }
    }
}

/// A random UUID, as text.
fn new_id() -> HeaderValue {
    let mut text = uuid::Uuid::encode_buffer();
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
    HeaderValue::from_str(text).expect("a UUID is a valid header value")
}

pin_project_lite::pin_project! {
    /// The handler's answer, carrying the request's id.
    pub struct Answer<F> {
        #[pin]
        answer: F,
        span: tracing::Span,
        id: Option<HeaderValue>,
    }
}

impl<F, E> Future for Answer<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let mut response = ready!(this.answer.poll(cx))?;
        tracing::debug!(status = response.status().as_u16(), "answered");
        if let Some(id) = this.id.take() {
            response.headers_mut().entry(X_REQUEST_ID).or_insert(id);
        }
        Poll::Ready(Ok(response))
    }
}
