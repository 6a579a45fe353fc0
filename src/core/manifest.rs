//! Reading a pushed manifest: what kind it is, whether it is well formed,
//! and which blobs and manifests it points at. Types come from oci-spec;
//! Docker schema 2 manifests and manifest lists share their shapes.

use std::str::FromStr;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::Deserialize;

use crate::core::json_object::JsonObject;
use crate::core::names::Digest;
use crate::core::{RegistryError, Result};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: [&str; 2] = [
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

/// A manifest's structure, as far as the registry cares.
#[derive(Debug)]
pub struct ParsedManifest {
    pub media_type: String,
    /// The type the referrers API reports: `artifactType`, or for an image
    /// manifest without one, its config's media type.
    pub artifact_type: Option<String>,
    pub subject: Option<Digest>,
    /// The manifest's annotations as JSON, for the referrers API.
    pub annotations: Option<String>,
    /// Blobs that must be in the repository: config and layers. Foreign
    /// layers that name external URLs are not among them.
    pub blobs: Vec<(Digest, u64)>,
    /// Manifests that must be in the repository (children of an index).
    pub manifests: Vec<Digest>,
}

impl ParsedManifest {
    /// Everything the manifest points at.
    pub fn references(&self) -> Vec<Digest> {
        let blobs = self.blobs.iter().map(|(d, _)| d.clone());
        blobs.chain(self.manifests.iter().cloned()).collect()
    }

    /// What the store records of this manifest, stored as `body` under
    /// `digest`; `references` are [`Self::references`].
    pub fn record<'a>(
        &'a self,
        digest: &'a Digest,
        body: &'a [u8],
        references: &'a [Digest],
    ) -> crate::meta::NewManifest<'a> {
        crate::meta::NewManifest {
            digest,
            media_type: &self.media_type,
            artifact_type: self.artifact_type.as_deref(),
            subject: self.subject.as_ref(),
            annotations: self.annotations.as_deref(),
            content: body,
            references,
        }
    }
}

/// Just enough of any manifest to decide how to read it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    schema_version: Option<serde_json::Value>,
    media_type: Option<String>,
    manifests: Option<serde::de::IgnoredAny>,
}

fn descriptor_digest(d: &Descriptor) -> Result<Digest> {
    Digest::from_str(d.digest().as_ref()).map_err(|e| {
        RegistryError::ManifestInvalid(format!("descriptor digest {}: {e}", d.digest()))
    })
}

fn invalid(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::ManifestInvalid(e.to_string())
}

/// Parses and checks a manifest body. `content_type` is the request's
/// Content-Type header, if any.
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<ParsedManifest> {
    // An object, so the typed reads below cannot take an array instead.
    let JsonObject(probe): JsonObject<Probe> =
        serde_json::from_slice(body).map_err(|e| invalid(format!("not a JSON manifest: {e}")))?;
    if probe.schema_version.as_ref().and_then(|v| v.as_u64()) != Some(2) {
        return Err(invalid("schemaVersion must be 2"));
    }
    // Content-Type parameters such as charset are not part of the type.
    let header = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| is_manifest_type(c));
    let media_type = match (&probe.media_type, header) {
        (Some(body_type), Some(header)) if body_type != header => {
            return Err(invalid(format!(
                "Content-Type {header} does not match the manifest's mediaType {body_type}"
            )));
        }
        (Some(body_type), _) => body_type.clone(),
        (None, Some(header)) => header.to_owned(),
        (None, None) if probe.manifests.is_some() => OCI_INDEX.to_owned(),
        (None, None) => OCI_MANIFEST.to_owned(),
    };
    if DOCKER_SCHEMA1.contains(&media_type.as_str()) {
        return Err(RegistryError::ManifestInvalid(
            "Docker schema 1 manifests are not supported; push schema 2 or OCI".into(),
        ));
    }
    match media_type.as_str() {
        OCI_INDEX | DOCKER_MANIFEST_LIST => parse_index(media_type, body),
        OCI_MANIFEST | DOCKER_MANIFEST => parse_image(media_type, body),
        other => Err(invalid(format!("unsupported manifest media type {other}"))),
    }
}

/// Whether a manifest of this type lists other manifests.
pub fn is_index_type(media_type: &str) -> bool {
    matches!(media_type, OCI_INDEX | DOCKER_MANIFEST_LIST)
}

/// `os/architecture[/variant]` from a platform object (an index entry's
/// `platform`, or an image config, which has the same fields).
pub fn platform_string(p: &serde_json::Value) -> Option<String> {
    let os = p["os"].as_str()?;
    let arch = p["architecture"].as_str()?;
    Some(match p["variant"].as_str() {
        Some(v) if !v.is_empty() => format!("{os}/{arch}/{v}"),
        _ => format!("{os}/{arch}"),
    })
}

fn is_manifest_type(t: &str) -> bool {
    [
        OCI_MANIFEST,
        OCI_INDEX,
        DOCKER_MANIFEST,
        DOCKER_MANIFEST_LIST,
    ]
    .contains(&t)
        || DOCKER_SCHEMA1.contains(&t)
}

fn subject_of(subject: Option<&Descriptor>) -> Result<Option<Digest>> {
    subject.map(descriptor_digest).transpose()
}

fn annotations_json(a: Option<&std::collections::HashMap<String, String>>) -> Option<String> {
    a.filter(|a| !a.is_empty())
        .map(|a| serde_json::to_string(a).expect("string map serializes"))
}

fn parse_image(media_type: String, body: &[u8]) -> Result<ParsedManifest> {
    let m: ImageManifest = serde_json::from_slice(body).map_err(invalid)?;
    let mut blobs = vec![(descriptor_digest(m.config())?, m.config().size())];
    for layer in m.layers() {
        let media_type = layer.media_type().as_ref();
        let foreign = layer.urls().as_ref().is_some_and(|u| !u.is_empty())
            && (media_type.contains("foreign") || media_type.contains("nondistributable"));
        if !foreign {
            blobs.push((descriptor_digest(layer)?, layer.size()));
        }
    }
    Ok(ParsedManifest {
        media_type,
        artifact_type: Some(
            m.artifact_type()
                .as_ref()
                .unwrap_or(m.config().media_type())
                .to_string(),
        ),
        subject: subject_of(m.subject().as_ref())?,
        annotations: annotations_json(m.annotations().as_ref()),
        blobs,
        manifests: vec![],
    })
}

fn parse_index(media_type: String, body: &[u8]) -> Result<ParsedManifest> {
    let index: ImageIndex = serde_json::from_slice(body).map_err(invalid)?;
    let manifests = index
        .manifests()
        .iter()
        .map(descriptor_digest)
        .collect::<Result<Vec<_>>>()?;
    Ok(ParsedManifest {
        media_type,
        artifact_type: index.artifact_type().as_ref().map(|t| t.to_string()),
        subject: subject_of(index.subject().as_ref())?,
        annotations: annotations_json(index.annotations().as_ref()),
        blobs: vec![],
        manifests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn image(media_type: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{media_type}",
            "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":7}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{D2}","size":9}}]}}"#
        )
    }

    #[test]
    fn image_manifests_list_their_blobs() {
        for t in [OCI_MANIFEST, DOCKER_MANIFEST] {
            let m = parse(Some(t), image(t).as_bytes()).unwrap();
            assert_eq!(m.media_type, t);
            assert_eq!(m.blobs.len(), 2);
            assert_eq!(m.blobs[1], (D2.parse().unwrap(), 9));
        }
    }

    #[test]
    fn a_manifest_is_an_object_not_an_array_of_its_fields() {
        // serde reads a struct from an array of its fields in order.
        let fields = format!(
            r#"[2, "{OCI_MANIFEST}", null,
            {{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":7}},
            [], null, null]"#
        );
        assert!(serde_json::from_str::<ImageManifest>(&fields).is_ok());
        let e = parse(Some(OCI_MANIFEST), fields.as_bytes()).unwrap_err();
        assert!(matches!(e, RegistryError::ManifestInvalid(_)), "{e:?}");
    }

    #[test]
    fn index_lists_children() {
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":3,
            "platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
        );
        let m = parse(Some(OCI_INDEX), body.as_bytes()).unwrap();
        assert_eq!(m.media_type, OCI_INDEX);
        assert_eq!(m.manifests, vec![D1.parse().unwrap()]);
    }

    #[test]
    fn bad_manifests_are_invalid() {
        let mismatched = parse(Some(DOCKER_MANIFEST), image(OCI_MANIFEST).as_bytes());
        let cases = [
            parse(None, b"not json"),
            parse(None, b"{}"),
            parse(None, br#"{"schemaVersion":1}"#),
            parse(None, br#"{"schemaVersion":2,"mediaType":"text/plain"}"#),
            parse(None, br#"{"schemaVersion":2,"config":{}}"#),
            parse(
                None,
                image(OCI_MANIFEST).replace(D2, "sha256:nothex").as_bytes(),
            ),
            mismatched,
        ];
        for (i, case) in cases.into_iter().enumerate() {
            assert!(
                matches!(case, Err(RegistryError::ManifestInvalid(_))),
                "case {i}: {case:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse(None, &body);
            let _ = parse(Some(OCI_INDEX), &body);
        }
    }
}
