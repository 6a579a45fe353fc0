//! Request bodies that stall: one that sends nothing for the timeout ends
//! with an error, which the handler reading it reports (an upload keeps
//! what was acknowledged before). The clock runs only while a handler
//! waits for bytes, so a slow disk or store on berth's side never counts
//! against the client.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::Request;
use http_body::{Frame, SizeHint};
use tokio::time::Sleep;

/// `request` with its body timed (boxed once, as the router would box it).
pub fn timed<B>(request: Request<B>, timeout: Duration) -> Request<Body>
where
    B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let (parts, body) = request.into_parts();
    let body = Body::new(Timed {
        inner: body,
        timeout,
        waiting: None,
    });
    Request::from_parts(parts, body)
}

struct Timed<B> {
    inner: B,
    timeout: Duration,
    /// Running while the handler waits and nothing arrives.
    waiting: Option<Pin<Box<Sleep>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("the request body sent nothing for {0} s (server.body_read_timeout_seconds)")]
struct Stalled(u64);

impl<B> http_body::Body for Timed<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let sleep = this
                    .waiting
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Stalled(timeout.as_secs()).into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
