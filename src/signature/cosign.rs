//! cosign's formats, as its key-based `cosign sign` stores them:
//!
//! - a signature manifest: an OCI image manifest whose layers are
//!   simple-signing payloads, each with the base64 signature over the
//!   payload's bytes in the `dev.cosignproject.cosign/signature`
//!   annotation. It is found under the tag `sha256-<hex>.sig` beside the
//!   image, or (`COSIGN_REGISTRY_REFERRERS_MODE=oci-1-1`) as a referrer
//!   whose `subject` is the image;
//! - a payload: JSON whose `critical.image.docker-manifest-digest` names
//!   the signed manifest (for an index, the index).

use base64::Engine as _;
use serde::Deserialize;

use crate::core::names::Digest;

pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The artifact type cosign gives a signature pushed as a referrer.
pub const SIGNATURE_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";

/// The tag cosign stores `digest`'s signatures under.
pub fn signature_tag(digest: &Digest) -> String {
    let text = digest.as_str();
    let (algorithm, hex) = text.split_once(':').unwrap_or(("sha256", text));
    format!("{algorithm}-{hex}.sig")
}

/// Whether `tag` is one of the tags cosign attaches to an image (its
/// signatures, attestations, SBOMs): never an image of its own.
pub fn is_attachment_tag(tag: &str) -> bool {
    let Some(rest) = tag.strip_prefix("sha256-") else {
        return false;
    };
    let Some((hex, kind)) = rest.split_once('.') else {
        return false;
    };
    hex.len() == 64
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
        && matches!(kind, "sig" | "att" | "sbom")
}

/// One simple-signing layer of a signature manifest.
#[derive(Debug)]
pub struct SignatureLayer {
    pub payload: Digest,
    pub payload_size: u64,
    /// The annotation's text, if present.
    pub signature: Option<String>,
}

impl SignatureLayer {
    /// The signature's bytes, or why there are none.
    pub fn signature_bytes(&self) -> Result<Vec<u8>, String> {
        let text = self
            .signature
            .as_deref()
            .ok_or_else(|| format!("the payload layer has no {SIGNATURE_ANNOTATION} annotation"))?;
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| format!("the {SIGNATURE_ANNOTATION} annotation is not base64 ({e})"))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    layers: Vec<Layer>,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    subject: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Layer {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    annotations: std::collections::HashMap<String, String>,
}

/// The simple-signing layers of a manifest: none if it is no signature
/// manifest. A layer whose digest is malformed is left out (berth would
/// not have stored a manifest naming it).
pub fn signature_layers(manifest: &[u8]) -> Vec<SignatureLayer> {
    let Ok(m) = serde_json::from_slice::<Manifest>(manifest) else {
        return Vec::new();
    };
    m.layers
        .into_iter()
        .filter(|l| l.media_type == SIMPLE_SIGNING)
        .filter_map(|l| {
            Some(SignatureLayer {
                payload: l.digest.parse().ok()?,
                payload_size: l.size,
                signature: l.annotations.get(SIGNATURE_ANNOTATION).cloned(),
            })
        })
        .collect()
}

/// Whether a manifest is an artifact attached to another (a signature, or
/// any manifest with a `subject`) rather than an image to protect.
pub fn is_attached_artifact(manifest: &[u8]) -> bool {
    let Ok(m) = serde_json::from_slice::<Manifest>(manifest) else {
        return false;
    };
    m.subject.is_some()
        || m.artifact_type.as_deref() == Some(SIGNATURE_ARTIFACT)
        || m.layers.iter().any(|l| l.media_type == SIMPLE_SIGNING)
}

#[derive(Deserialize)]
struct Payload {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    image: Image,
}

#[derive(Deserialize)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// The digest a simple-signing payload signs.
pub fn signed_digest(payload: &[u8]) -> Result<String, String> {
    serde_json::from_slice::<Payload>(payload)
        .map(|p| p.critical.image.docker_manifest_digest)
        .map_err(|e| format!("the payload is not a simple-signing payload ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_tags() {
        let hex = "a".repeat(64);
        assert!(is_attachment_tag(&format!("sha256-{hex}.sig")));
        assert!(is_attachment_tag(&format!("sha256-{hex}.att")));
        assert!(!is_attachment_tag(&format!("sha256-{hex}")));
        assert!(!is_attachment_tag("sha256-abc.sig"));
        assert!(!is_attachment_tag("1.2.3"));
        let d: Digest = format!("sha256:{hex}").parse().unwrap();
        assert_eq!(signature_tag(&d), format!("sha256-{hex}.sig"));
    }

    #[test]
    fn payloads_name_their_digest() {
        let p = br#"{"critical":{"identity":{"docker-reference":"r/a"},"image":{"docker-manifest-digest":"sha256:abc"},"type":"cosign container image signature"},"optional":null}"#;
        assert_eq!(signed_digest(p).unwrap(), "sha256:abc");
        assert!(signed_digest(b"{}").is_err());
        assert!(signed_digest(b"not json").is_err());
    }

    #[test]
    fn layers_and_annotations() {
        let m = format!(
            r#"{{"schemaVersion":2,"layers":[{{"mediaType":"{SIMPLE_SIGNING}","digest":"sha256:{}","size":3,"annotations":{{"{SIGNATURE_ANNOTATION}":"not base64!"}}}},{{"mediaType":"{SIMPLE_SIGNING}","digest":"sha256:{}","size":3}}]}}"#,
            "b".repeat(64),
            "c".repeat(64)
        );
        let layers = signature_layers(m.as_bytes());
        assert_eq!(layers.len(), 2);
        assert!(layers[0].signature_bytes().unwrap_err().contains("base64"));
        assert!(
            layers[1]
                .signature_bytes()
                .unwrap_err()
                .contains("no dev.cosignproject.cosign/signature")
        );
        assert!(is_attached_artifact(m.as_bytes()));
        assert!(!is_attached_artifact(br#"{"schemaVersion":2,"layers":[]}"#));
    }
}
