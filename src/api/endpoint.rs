//! Parses a `/v2/...` path into an [`Endpoint`] before anything is
//! dispatched. Repository names have any number of `/` segments, so the
//! path is read from its end: the last segments say what is asked for, the
//! rest is the name. The raw path is used as sent: percent-escapes are
//! never decoded, so `%2e%2e` is simply an invalid name.

use crate::core::names::{Digest, Reference, RepoName};
use crate::core::{RegistryError, Result};

#[derive(Clone, Debug, PartialEq)]
pub enum Endpoint {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags(RepoName),
    /// `/v2/<name>/manifests/<reference>`
    Manifest(RepoName, Reference),
    /// `/v2/<name>/blobs/<digest>`
    Blob(RepoName, Digest),
    /// `/v2/<name>/blobs/uploads/`
    Uploads(RepoName),
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload(RepoName, String),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(RepoName, Digest),
    /// `/v2/<name>/manifests/<reference>` whose reference is neither a tag
    /// nor a digest: nothing can be stored under it, so reading it finds
    /// nothing, and writing to it is refused as the reference's parser
    /// says.
    UnnamedManifest(RepoName, String),
    /// `/v2/<name>/blobs/<digest>` whose digest is malformed: no blob has
    /// it.
    UnnamedBlob(RepoName, String),
}

impl Endpoint {
    /// `path` is the whole request path, starting with `/v2/`.
    pub fn parse(path: &str) -> Result<Endpoint> {
        if path == "/v2" {
            return Ok(Endpoint::Base);
        }
        let Some(rest) = path.strip_prefix("/v2/") else {
            return Err(RegistryError::RouteUnknown);
        };
        if rest.is_empty() {
            return Ok(Endpoint::Base);
        }
        if rest == "_catalog" {
            return Ok(Endpoint::Catalog);
        }
        let segments: Vec<&str> = rest.split('/').collect();
        let n = segments.len();
        let name_of = |len: usize| -> Result<RepoName> {
            if len == 0 {
                return Err(RegistryError::RouteUnknown);
            }
            segments[..len].join("/").parse()
        };
        let last = segments[n - 1];
        if n >= 4 && segments[n - 3..n - 1] == ["blobs", "uploads"] {
            if last.is_empty() {
                return Ok(Endpoint::Uploads(name_of(n - 3)?));
            }
            // A dot segment climbs out of the path: no endpoint. Any other
            // id names an upload: one berth never issued is an unknown
            // upload, not an unknown route.
            if last == "." || last == ".." {
                return Err(RegistryError::RouteUnknown);
            }
            return Ok(Endpoint::Upload(name_of(n - 3)?, last.to_owned()));
        }
        if n >= 2 && segments[n - 2..] == ["blobs", "uploads"] {
            return Ok(Endpoint::Uploads(name_of(n - 2)?));
        }
        if n < 2 {
            return Err(RegistryError::RouteUnknown);
        }
        match segments[n - 2] {
            "tags" if last == "list" => Ok(Endpoint::Tags(name_of(n - 2)?)),
            "manifests" => {
                let name = name_of(n - 2)?;
                Ok(match last.parse() {
                    Ok(reference) => Endpoint::Manifest(name, reference),
                    Err(_) => Endpoint::UnnamedManifest(name, last.to_owned()),
                })
            }
            "blobs" => {
                let name = name_of(n - 2)?;
                Ok(match last.parse() {
                    Ok(digest) => Endpoint::Blob(name, digest),
                    Err(_) => Endpoint::UnnamedBlob(name, last.to_owned()),
                })
            }
            "referrers" => {
                let name = name_of(n - 2)?;
                Ok(Endpoint::Referrers(name, last.parse()?))
            }
            _ => Err(RegistryError::RouteUnknown),
        }
    }

    /// The endpoint's kind, as metrics label requests: fixed names, never
    /// the repository. They are the handler names registry:2 reports.
    pub fn route_name(&self) -> &'static str {
        match self {
            Endpoint::Base => "base",
            Endpoint::Catalog => "catalog",
            Endpoint::Tags(_) => "tags",
            Endpoint::Manifest(..) | Endpoint::UnnamedManifest(..) => "manifest",
            Endpoint::Blob(..) | Endpoint::UnnamedBlob(..) => "blob",
            Endpoint::Uploads(_) => "blob_upload",
            Endpoint::Upload(..) => "blob_upload_chunk",
            Endpoint::Referrers(..) => "referrers",
        }
    }

    /// The same endpoint on another repository (a mirror keeps what
    /// clients name one way under another name).
    pub fn with_repository(self, name: RepoName) -> Endpoint {
        match self {
            Endpoint::Base | Endpoint::Catalog => self,
            Endpoint::Tags(_) => Endpoint::Tags(name),
            Endpoint::Manifest(_, r) => Endpoint::Manifest(name, r),
            Endpoint::Blob(_, d) => Endpoint::Blob(name, d),
            Endpoint::Uploads(_) => Endpoint::Uploads(name),
            Endpoint::Upload(_, id) => Endpoint::Upload(name, id),
            Endpoint::Referrers(_, d) => Endpoint::Referrers(name, d),
            Endpoint::UnnamedManifest(_, r) => Endpoint::UnnamedManifest(name, r),
            Endpoint::UnnamedBlob(_, d) => Endpoint::UnnamedBlob(name, d),
        }
    }

    /// The repository the endpoint acts on, if any.
    pub fn repository(&self) -> Option<&RepoName> {
        match self {
            Endpoint::Base | Endpoint::Catalog => None,
            Endpoint::Tags(r)
            | Endpoint::Manifest(r, _)
            | Endpoint::Blob(r, _)
            | Endpoint::Uploads(r)
            | Endpoint::Upload(r, _)
            | Endpoint::Referrers(r, _)
            | Endpoint::UnnamedManifest(r, _)
            | Endpoint::UnnamedBlob(r, _) => Some(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b";

    fn name(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    #[test]
    fn paths() {
        let cases: Vec<(String, Endpoint)> = vec![
            ("/v2/".into(), Endpoint::Base),
            ("/v2/_catalog".into(), Endpoint::Catalog),
            ("/v2/a/tags/list".into(), Endpoint::Tags(name("a"))),
            (
                "/v2/team/sub/img/tags/list".into(),
                Endpoint::Tags(name("team/sub/img")),
            ),
            (
                "/v2/a/b/manifests/latest".into(),
                Endpoint::Manifest(name("a/b"), "latest".parse().unwrap()),
            ),
            (
                format!("/v2/a/manifests/{D}"),
                Endpoint::Manifest(name("a"), D.parse().unwrap()),
            ),
            (
                format!("/v2/x/blobs/{D}"),
                Endpoint::Blob(name("x"), D.parse().unwrap()),
            ),
            // A repository may itself have components named like endpoints.
            (
                format!("/v2/blobs/uploads/blobs/{D}"),
                Endpoint::Blob(name("blobs/uploads"), D.parse().unwrap()),
            ),
            (
                "/v2/manifests/tags/list".into(),
                Endpoint::Tags(name("manifests")),
            ),
            (
                "/v2/a/b/blobs/uploads/".into(),
                Endpoint::Uploads(name("a/b")),
            ),
            ("/v2/a/blobs/uploads".into(), Endpoint::Uploads(name("a"))),
            (
                "/v2/a/b/blobs/uploads/0f8b3c2e-1d2c-4c1e-9f00-3a2b1c0d9e8f".into(),
                Endpoint::Upload(name("a/b"), "0f8b3c2e-1d2c-4c1e-9f00-3a2b1c0d9e8f".into()),
            ),
            (
                format!("/v2/a/referrers/{D}"),
                Endpoint::Referrers(name("a"), D.parse().unwrap()),
            ),
            // An id berth never issued still names an (unknown) upload.
            (
                format!("/v2/a/blobs/uploads/{}", "x".repeat(300)),
                Endpoint::Upload(name("a"), "x".repeat(300)),
            ),
        ];
        for (path, expected) in cases {
            assert_eq!(Endpoint::parse(&path).unwrap(), expected, "{path}");
        }
    }

    #[test]
    fn bad_paths() {
        let cases = [
            ("/v2/A/tags/list", "NameInvalid"),
            ("/v2/a/../b/tags/list", "NameInvalid"),
            ("/v2/a/%2e%2e/tags/list", "NameInvalid"),
            ("/v2/a%5cb/tags/list", "NameInvalid"),
            ("/v2/tags/list", "RouteUnknown"),
            ("/v2/a", "RouteUnknown"),
            ("/v2/a/nothing/here", "RouteUnknown"),
            ("/v2/a/blobs/uploads/..", "RouteUnknown"),
            ("/v1/a/tags/list", "RouteUnknown"),
        ];
        for (path, expected) in cases {
            let got = format!("{:?}", Endpoint::parse(path).unwrap_err());
            assert!(got.starts_with(expected), "{path}: {got}");
        }
    }

    #[test]
    fn references_that_name_nothing() {
        let manifest = |r: &str| Endpoint::UnnamedManifest(name("a"), r.into());
        for (path, expected) in [
            (
                "/v2/a/manifests/sha256:totallywrong",
                manifest("sha256:totallywrong"),
            ),
            (
                "/v2/a/manifests/.INVALID_MANIFEST_NAME",
                manifest(".INVALID_MANIFEST_NAME"),
            ),
            ("/v2/a/manifests/-bad", manifest("-bad")),
            (
                "/v2/a/blobs/notadigest",
                Endpoint::UnnamedBlob(name("a"), "notadigest".into()),
            ),
        ] {
            assert_eq!(Endpoint::parse(path).unwrap(), expected, "{path}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_paths_never_panic(p in "/v2/[a-z0-9/:._-]{0,40}") {
            let _ = Endpoint::parse(&p);
        }
    }
}
