//! Hashing as the bytes pass. An upload's running SHA-256 state is saved
//! with its offset after every chunk, so a chunked upload resumes after a
//! restart (or on another replica) without reading its bytes again.

use sha2::digest::common::hazmat::SerializableState;
use sha2::{Digest as _, Sha256, Sha512};

use crate::core::names::{Algorithm, Digest};

/// The running hash of an upload.
#[derive(Clone, Default)]
pub struct UploadHasher(Sha256);

impl UploadHasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn finish(self) -> Digest {
        Digest::from_hash(Algorithm::Sha256, &self.0.finalize())
    }

    /// The state to persist; `restore` reverses it.
    pub fn save(&self) -> Vec<u8> {
        self.0.serialize().to_vec()
    }

    /// Restores a state written by `save`; `None` if the bytes are not one.
    pub fn restore(state: &[u8]) -> Option<UploadHasher> {
        let state = state.try_into().ok()?;
        Sha256::deserialize(state).ok().map(UploadHasher)
    }
}

/// Hashes everything a reader yields with the given algorithm. Used for
/// digests other than the running SHA-256 (sha512 uploads).
pub fn hash_reader(
    algorithm: Algorithm,
    mut reader: impl std::io::Read,
) -> std::io::Result<Digest> {
    let mut buf = vec![0u8; 1 << 20];
    macro_rules! run {
        ($h:expr) => {{
            let mut h = $h;
            loop {
                let n = reader.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            Digest::from_hash(algorithm, &h.finalize())
        }};
    }
    Ok(match algorithm {
        Algorithm::Sha256 => run!(Sha256::new()),
        Algorithm::Sha512 => run!(Sha512::new()),
    })
}

/// A hash of any supported algorithm, fed as bytes arrive (rehashing an
/// upload from object storage).
pub enum BlobHasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl BlobHasher {
    pub fn new(algorithm: Algorithm) -> BlobHasher {
        match algorithm {
            Algorithm::Sha256 => BlobHasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => BlobHasher::Sha512(Sha512::new()),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            BlobHasher::Sha256(h) => h.update(bytes),
            BlobHasher::Sha512(h) => h.update(bytes),
        }
    }

    pub fn finish(self) -> Digest {
        match self {
            BlobHasher::Sha256(h) => Digest::from_hash(Algorithm::Sha256, &h.finalize()),
            BlobHasher::Sha512(h) => Digest::from_hash(Algorithm::Sha512, &h.finalize()),
        }
    }
}

/// The digest of bytes already in memory (manifests).
pub fn digest_bytes(algorithm: Algorithm, bytes: &[u8]) -> Digest {
    match algorithm {
        Algorithm::Sha256 => Digest::from_hash(algorithm, &Sha256::digest(bytes)),
        Algorithm::Sha512 => Digest::from_hash(algorithm, &Sha512::digest(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_state_resumes_the_same_hash() {
        let mut whole = UploadHasher::default();
        whole.update(b"hello ");
        whole.update(b"world, this is more than one block? no, but it does not matter");

        let mut first = UploadHasher::default();
        first.update(b"hello ");
        let saved = first.save();
        let mut resumed = UploadHasher::restore(&saved).expect("state restores");
        resumed.update(b"world, this is more than one block? no, but it does not matter");

        assert_eq!(whole.finish(), resumed.finish());
        assert!(UploadHasher::restore(b"garbage").is_none());
    }

    #[test]
    fn known_digests() {
        assert_eq!(
            digest_bytes(Algorithm::Sha256, b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hash_reader(Algorithm::Sha256, &b""[..]).unwrap(),
            UploadHasher::default().finish()
        );
    }
}
