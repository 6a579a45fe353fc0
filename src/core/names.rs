//! Validated names at the edge: repository names, tags, digests and the
//! references that are either. Past the HTTP layer no code re-checks a
//! string; holding one of these types is the proof that it is valid.

use std::fmt;
use std::str::FromStr;

use crate::core::RegistryError;

/// Longest repository name accepted, slashes included. The spec says a name
/// plus the registry host should stay under 256 characters.
const MAX_NAME_LEN: usize = 255;

/// A repository name: `/`-separated components, each matching
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_name_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    // Separators are `.`, `_`, `__` or one or more `-`, always between
    // alphanumerics.
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

impl FromStr for RepoName {
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > MAX_NAME_LEN {
            return Err(RegistryError::NameInvalid(format!(
                "repository name must be 1 to {MAX_NAME_LEN} characters"
            )));
        }
        if !s.split('/').all(is_name_component) {
            return Err(RegistryError::NameInvalid(format!(
                "invalid repository name {s:?}: each /-separated component must match \
                 [a-z0-9]+((.|_|__|-+)[a-z0-9]+)*"
            )));
        }
        Ok(RepoName(s.to_owned()))
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let first_ok = b
            .first()
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_');
        let rest_ok = b
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if !first_ok || !rest_ok || b.len() > 128 {
            return Err(RegistryError::TagInvalid(s.to_owned()));
        }
        Ok(Tag(s.to_owned()))
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The hash functions berth computes. The grammar allows any algorithm
/// name; these are the ones the image spec registers and berth supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A content digest, `algorithm:hex`, with a supported algorithm and a
/// lowercase hex part of the right length. The grammar itself is checked by
/// oci-spec's parser.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn algorithm(&self) -> Algorithm {
        if self.0.starts_with("sha512:") {
            Algorithm::Sha512
        } else {
            Algorithm::Sha256
        }
    }

    /// The hex part, after the colon.
    pub fn hex(&self) -> &str {
        let split = self.0.find(':').expect("validated digest has a colon");
        &self.0[split + 1..]
    }

    /// Builds a digest from a finished hash.
    pub fn from_hash(algorithm: Algorithm, hash: &[u8]) -> Digest {
        Digest(format!("{}:{}", algorithm.name(), hex::encode(hash)))
    }
}

impl FromStr for Digest {
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parsed = oci_spec::image::Digest::from_str(s)
            .map_err(|e| RegistryError::DigestInvalid(format!("invalid digest {s:?}: {e}")))?;
        let algorithm = match parsed.algorithm().as_ref() {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => {
                return Err(RegistryError::DigestInvalid(format!(
                    "unsupported digest algorithm {other:?}: use sha256 or sha512"
                )));
            }
        };
        let hex = parsed.digest();
        let hex_ok = hex
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
        if hex.len() != algorithm.hex_len() || !hex_ok {
            return Err(RegistryError::DigestInvalid(format!(
                "invalid digest {s:?}: {} needs {} lowercase hex characters",
                algorithm.name(),
                algorithm.hex_len()
            )));
        }
        Ok(Digest(s.to_owned()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What follows `/manifests/`: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // A tag can never contain ':', so anything with one is meant as a
        // digest and is judged as one.
        if s.contains(':') {
            s.parse().map(Reference::Digest)
        } else {
            s.parse().map(Reference::Tag)
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA256: &str = "sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b";

    #[test]
    fn repository_names() {
        for ok in [
            "a",
            "library/ubuntu",
            "team/sub/image",
            "a.b_c__d---e/f0",
            "127.0.0.1/x",
        ] {
            assert!(ok.parse::<RepoName>().is_ok(), "{ok} should be valid");
        }
        for bad in [
            "",
            "A",
            "a//b",
            "/a",
            "a/",
            "a..b",
            "a___b",
            "-a",
            "a-",
            "..",
            "a/../b",
            "a\\b",
            "a\0b",
            "a%2e%2e",
            "a b",
            &"a".repeat(256),
        ] {
            assert!(
                bad.parse::<RepoName>().is_err(),
                "{bad:?} should be invalid"
            );
        }
    }

    #[test]
    fn tags() {
        for ok in ["latest", "v1.2.3", "_x", "A-b_c.d", &"t".repeat(128)] {
            assert!(ok.parse::<Tag>().is_ok(), "{ok} should be valid");
        }
        for bad in ["", ".x", "-x", "a:b", "a/b", &"t".repeat(129)] {
            assert!(bad.parse::<Tag>().is_err(), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn digests() {
        let d: Digest = SHA256.parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.hex().len(), 64);
        let sha512 = format!("sha512:{}", "ab".repeat(64));
        assert_eq!(
            sha512.parse::<Digest>().unwrap().algorithm(),
            Algorithm::Sha512
        );
        for bad in [
            "sha256:totallywrong",
            "sha256:",
            "sha256",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "SHA256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b",
            "sha256:6C3C624B58DBBCD3C0DD82B4C53F04194D1247C6EEBDAAB7C610CF7D66709B3B",
            "sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3",
        ] {
            assert!(
                matches!(bad.parse::<Digest>(), Err(RegistryError::DigestInvalid(_))),
                "{bad:?} should be DIGEST_INVALID"
            );
        }
    }

    #[test]
    fn references() {
        assert!(matches!(
            "latest".parse::<Reference>(),
            Ok(Reference::Tag(_))
        ));
        assert!(matches!(
            SHA256.parse::<Reference>(),
            Ok(Reference::Digest(_))
        ));
        assert!(matches!(
            "sha256:totallywrong".parse::<Reference>(),
            Err(RegistryError::DigestInvalid(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC*") {
            let _ = s.parse::<RepoName>();
            let _ = s.parse::<Tag>();
            let _ = s.parse::<Digest>();
            let _ = s.parse::<Reference>();
        }

        #[test]
        fn valid_names_round_trip(s in "[a-z0-9]{1,8}([._-][a-z0-9]{1,8}){0,2}(/[a-z0-9]{1,8}){0,3}") {
            let name: RepoName = s.parse().unwrap();
            proptest::prop_assert_eq!(name.as_str(), s.as_str());
        }
    }
}
