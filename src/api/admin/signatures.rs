//! Signatures: the trusted keys (those of the config file are listed, and
//! changed only there), the pull policies, and whether each manifest of a
//! repository is signed, and by which key.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::repositories::existing_repo;
use super::{AdminCaller, ApiError, ApiResult, Body, Segments};
use crate::core::names::Digest;
use crate::meta::{MetaStore, format_ms};
use crate::signature::{Signatures, TrustedKey, Verdict};

#[derive(Serialize, ToSchema)]
pub struct KeyInfo {
    pub name: String,
    /// `ecdsa-p256`, `rsa` or `ed25519`.
    pub algorithm: String,
    /// `sha256:` of the key's DER encoding.
    pub fingerprint: String,
    /// The PEM public key.
    pub public_key: String,
    /// Defined in the config file: the API cannot remove it.
    pub from_config: bool,
    pub added_at: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// Letters, digits, `.`, `_`, `-`; what policies and rules call it.
    pub name: String,
    /// A PEM `PUBLIC KEY` block: ECDSA P-256 (cosign's default), RSA or
    /// Ed25519.
    pub public_key: String,
}

#[derive(Serialize, ToSchema)]
pub struct PolicyInfo {
    /// Pulls of `<namespace>/...` need a valid signature.
    pub namespace: String,
    /// By one of these keys; empty: any trusted key.
    pub keys: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ManifestSignature {
    pub digest: String,
    pub tags: Vec<String>,
    /// A valid signature by a trusted key exists.
    pub signed: bool,
    /// The trusted key that signed it.
    pub key: Option<String>,
    /// The signature manifest that holds the signature.
    pub signature: Option<String>,
    /// Why it counts as unsigned.
    pub reason: Option<String>,
    /// The pull policy protecting the repository, if any.
    pub policy: Option<String>,
}

fn key_info(key: &TrustedKey, from_config: bool, added_at: Option<i64>) -> KeyInfo {
    KeyInfo {
        name: key.name.clone(),
        algorithm: key.algorithm.into(),
        fingerprint: key.fingerprint.clone(),
        public_key: key.pem.clone(),
        from_config,
        added_at: added_at.map(format_ms),
    }
}

#[utoipa::path(get, path = "/admin/v1/signatures/keys", tag = "signatures",
    responses((status = 200, body = Vec<KeyInfo>)))]
pub(super) async fn list_keys(
    _admin: AdminCaller,
    State(signatures): State<Arc<Signatures>>,
) -> ApiResult<Json<Vec<KeyInfo>>> {
    let set = signatures.key_set();
    Ok(Json(
        set.keys
            .iter()
            .map(|k| {
                key_info(
                    k,
                    set.from_config.contains(&k.name),
                    set.added_at.get(&k.name).copied(),
                )
            })
            .collect(),
    ))
}

/// Trusts a public key from now on: images it signed pass pull policies
/// and deploy rules that name it.
#[utoipa::path(post, path = "/admin/v1/signatures/keys", tag = "signatures",
    request_body = NewKey,
    responses((status = 201, body = KeyInfo), (status = 400, body = ApiError), (status = 409, body = ApiError)))]
pub(super) async fn add_key(
    admin: AdminCaller,
    State(signatures): State<Arc<Signatures>>,
    State(meta): State<MetaStore>,
    Body(new): Body<NewKey>,
) -> ApiResult<(StatusCode, Json<KeyInfo>)> {
    let key = signatures.add_key(&new.name, &new.public_key).await?;
    admin
        .audit(&meta, "signature_key.create", &key.name, &key.fingerprint)
        .await;
    let added_at = signatures.key_set().added_at.get(&key.name).copied();
    Ok((StatusCode::CREATED, Json(key_info(&key, false, added_at))))
}

/// Trusts a key no longer: signatures made with it stop counting at once.
#[utoipa::path(delete, path = "/admin/v1/signatures/keys/{name}", tag = "signatures",
    params(("name" = String, Path, description = "The key's name")),
    responses((status = 204, description = "No longer trusted"), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub(super) async fn remove_key(
    admin: AdminCaller,
    State(signatures): State<Arc<Signatures>>,
    State(meta): State<MetaStore>,
    Segments(name): Segments<String>,
) -> ApiResult<StatusCode> {
    signatures.remove_key(&name).await?;
    admin.audit(&meta, "signature_key.delete", &name, "").await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/admin/v1/signatures/policies", tag = "signatures",
    responses((status = 200, body = Vec<PolicyInfo>)))]
pub(super) async fn list_policies(
    _admin: AdminCaller,
    State(signatures): State<Arc<Signatures>>,
) -> ApiResult<Json<Vec<PolicyInfo>>> {
    Ok(Json(
        signatures
            .policies()
            .iter()
            .map(|p| PolicyInfo {
                namespace: p.namespace.clone(),
                keys: p.keys.clone(),
            })
            .collect(),
    ))
}

/// Each image manifest of the repository (signatures and other attached
/// artifacts left out): whether it is signed, and by which trusted key.
/// The keys asked for are the protecting policy's, or every trusted key.
#[utoipa::path(get, path = "/admin/v1/repositories/{name}/signatures", tag = "signatures",
    params(("name" = String, Path, description = "Repository name, percent-encoded")),
    responses((status = 200, body = Vec<ManifestSignature>), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub(super) async fn repository_signatures(
    _admin: AdminCaller,
    State(signatures): State<Arc<Signatures>>,
    State(meta): State<MetaStore>,
    Segments(name): Segments<String>,
) -> ApiResult<Json<Vec<ManifestSignature>>> {
    let repo = existing_repo(&meta, &name).await?;
    let policy = signatures.policy_for(repo.as_str()).cloned();
    let keys = policy.as_ref().map(|p| p.keys.clone()).unwrap_or_default();
    let mut out = Vec::new();
    for m in meta.manifest_summaries(&repo).await? {
        let Ok(digest) = m.digest.parse::<Digest>() else {
            continue;
        };
        let Some(row) = meta.manifest_by_digest(&repo, &digest).await? else {
            continue;
        };
        let verdict = signatures
            .verdict(&repo, &digest, Some(&row.content), &keys)
            .await?;
        let (signed, key, signature, reason) = match verdict.as_ref() {
            Verdict::Attached => continue,
            Verdict::Signed { key, signature } => {
                (true, Some(key.clone()), Some(signature.clone()), None)
            }
            Verdict::Unsigned { reason } => (false, None, None, Some(reason.clone())),
        };
        out.push(ManifestSignature {
            digest: m.digest,
            tags: m.tags,
            signed,
            key,
            signature,
            reason,
            policy: policy.as_ref().map(|p| p.describe()),
        });
    }
    Ok(Json(out))
}
