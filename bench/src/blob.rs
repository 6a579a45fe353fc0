//! Blob content that is never held whole in memory.
//!
//! A run picks a seed and fills one pseudo-random 1 MiB base block from it.
//! Blob `id` of a run is that block repeated, each 1 MiB block starting with
//! a 24-byte header (seed, id, block number), so every blob and every block
//! differ and no registry can deduplicate them. The same bytes can be made
//! as often as needed: once to compute the digest before a push, once more
//! while sending. Sending costs no copy: pieces are slices of the shared
//! base block plus the small header.

use bytes::Bytes;
use futures_util::Stream;
use sha2::{Digest as _, Sha256};

pub const BLOCK: usize = 1 << 20;
const HEADER: usize = 24;

/// splitmix64: a fast, well-mixed 64-bit sequence.
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The content of one run: a seed and the base block made from it.
#[derive(Clone)]
pub struct Content {
    seed: u64,
    base: Bytes,
}

impl Content {
    pub fn new(seed: u64) -> Self {
        let mut state = seed;
        let mut base = vec![0u8; BLOCK];
        for word in base.chunks_exact_mut(8) {
            word.copy_from_slice(&splitmix(&mut state).to_le_bytes());
        }
        Content {
            seed,
            base: base.into(),
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn blob(&self, id: u64, size: u64) -> Blob {
        Blob {
            content: self.clone(),
            id,
            size,
        }
    }
}

/// One blob of a run, described by its id and size.
#[derive(Clone)]
pub struct Blob {
    content: Content,
    pub id: u64,
    pub size: u64,
}

impl Blob {
    fn header(&self, block: u64) -> [u8; HEADER] {
        let mut h = [0u8; HEADER];
        h[..8].copy_from_slice(&self.content.seed.to_le_bytes());
        h[8..16].copy_from_slice(&self.id.to_le_bytes());
        h[16..].copy_from_slice(&block.to_le_bytes());
        h
    }

    /// The bytes in `start..end`, as a sequence of pieces.
    pub fn pieces(&self, start: u64, end: u64) -> Pieces {
        Pieces {
            blob: self.clone(),
            pos: start,
            end: end.min(self.size),
        }
    }

    /// The bytes in `start..end` as a body stream.
    pub fn stream(
        &self,
        start: u64,
        end: u64,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static {
        futures_util::stream::iter(self.pieces(start, end).map(Ok))
    }

    /// `sha256:<hex>` of the whole blob.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for piece in self.pieces(0, self.size) {
            h.update(&piece);
        }
        format!("sha256:{}", hex::encode(h.finalize()))
    }

    /// The whole blob in memory: only for small blobs.
    pub fn to_bytes(&self) -> Bytes {
        let mut v = Vec::with_capacity(self.size as usize);
        for piece in self.pieces(0, self.size) {
            v.extend_from_slice(&piece);
        }
        v.into()
    }
}

pub struct Pieces {
    blob: Blob,
    pos: u64,
    end: u64,
}

impl Iterator for Pieces {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.pos >= self.end {
            return None;
        }
        let block = self.pos / BLOCK as u64;
        let off = (self.pos % BLOCK as u64) as usize;
        let stop = off + (((block + 1) * BLOCK as u64).min(self.end) - self.pos) as usize;
        let piece = if off < HEADER {
            let h = self.blob.header(block);
            Bytes::copy_from_slice(&h[off..stop.min(HEADER)])
        } else {
            self.blob.content.base.slice(off..stop)
        };
        self.pos += piece.len() as u64;
        Some(piece)
    }
}

/// `sha256:<hex>` of bytes in memory.
pub fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_concatenate_to_the_whole_blob() {
        let c = Content::new(7);
        let b = c.blob(3, 2 * BLOCK as u64 + 1000);
        let whole = b.to_bytes();
        assert_eq!(whole.len() as u64, b.size);
        assert_eq!(digest_of(&whole), b.digest());
        let cuts = [0, 5, 24, 30, BLOCK as u64 - 1, BLOCK as u64 + 10, b.size];
        let mut joined = Vec::new();
        for w in cuts.windows(2) {
            for p in b.pieces(w[0], w[1]) {
                joined.extend_from_slice(&p);
            }
        }
        assert_eq!(joined, whole.to_vec());
    }

    #[test]
    fn blobs_and_runs_differ() {
        let a = Content::new(1);
        let b = Content::new(2);
        assert_ne!(a.blob(0, 100).digest(), a.blob(1, 100).digest());
        assert_ne!(a.blob(0, 100).digest(), b.blob(0, 100).digest());
        assert_eq!(
            a.blob(0, 100).digest(),
            Content::new(1).blob(0, 100).digest()
        );
    }
}
