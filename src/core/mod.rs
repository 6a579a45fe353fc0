//! The registry core: push, pull and validation logic, with no HTTP in
//! sight. The API layer translates requests into calls on [`Registry`].

pub mod error;
pub mod hashing;
pub mod manifest;
pub mod names;
mod registry;
mod upload_locks;

pub use error::{RegistryError, Result};
pub use registry::{BlobRead, ByteRange, ManifestPushed, RangeRequest, Registry, RegistryLimits};
