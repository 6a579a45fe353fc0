//! The registry core: push, pull and validation logic, with no HTTP in
//! sight. The API layer translates requests into calls on [`Registry`].

mod cached;
pub mod clock;
pub mod error;
pub mod event;
pub mod gc;
pub mod hashing;
pub mod json_object;
pub mod manifest;
pub mod names;
mod read_cache;
mod registry;
pub mod retention;
mod upload_locks;

pub use cached::Evicted;
pub use error::{RegistryError, Result};
pub use registry::{
    BlobBody, BlobRead, ByteRange, ManifestPushed, RangeRequest, Registry, RegistryOptions,
    tag_order,
};

/// A request body as the core sees it: bytes as they arrive, or the error
/// that cut the stream short.
pub trait BodyStream:
    futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Unpin + Send
{
}

impl<T> BodyStream for T where
    T: futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Unpin + Send
{
}
