//! Answers sent before the request body was read (a refused chunk, an
//! oversized manifest) leave unread bytes on the connection. Rather than
//! letting the client reuse a connection in that state, such answers close
//! it: the client reads the error, then opens a fresh connection.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use futures_util::future::{BoxFuture, Either};
use http_body::Frame;

/// Closes the connection after an answer that left request body bytes
/// unread. A plain tower layer (like the metrics' one): it sits on every
/// request, and requests without a body, most of them, pass untouched.
#[derive(Clone, Copy, Default)]
pub struct CloseIfUnreadLayer;

impl<S> tower::Layer<S> for CloseIfUnreadLayer {
    type Service = CloseIfUnread<S>;

    fn layer(&self, inner: S) -> CloseIfUnread<S> {
        CloseIfUnread { inner }
    }
}

#[derive(Clone)]
pub struct CloseIfUnread<S> {
    inner: S,
}

impl<S> tower::Service<Request> for CloseIfUnread<S>
where
    S: tower::Service<Request, Response = Response>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if request.body().is_end_stream() {
            return Either::Left(self.inner.call(request));
        }
        let read = Arc::new(AtomicBool::new(false));
        let request = request.map(|body| {
            Body::new(Tracked {
                inner: body,
                read: read.clone(),
            })
        });
        let answer = self.inner.call(request);
        Either::Right(Box::pin(async move {
            let mut response = answer.await?;
            if !read.load(Ordering::Acquire) {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(response)
        }))
    }
}

/// A request body that records whether it was read to its end.
struct Tracked {
    inner: Body,
    read: Arc<AtomicBool>,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.read.store(true, Ordering::Release);
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

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.read.store(true, Ordering::Release);
        }
    }
}
