//! Trusted public keys: PEM `PUBLIC KEY` blocks (SubjectPublicKeyInfo, as
//! `cosign generate-key-pair` and `openssl pkey -pubout` write them) of
//! ECDSA P-256, RSA or Ed25519 keys, each under a name.
//!
//! What each algorithm's signature over a payload is, as cosign makes it:
//! ECDSA P-256 over SHA-256 (ASN.1 DER, or the fixed 64-byte form), RSA
//! PKCS#1 v1.5 over SHA-256, Ed25519 over the payload itself.

use p256::ecdsa::signature::Verifier;
use sha2::Digest as _;
use spki::DecodePublicKey;

enum PublicKey {
    EcdsaP256(p256::ecdsa::VerifyingKey),
    Rsa(rsa::pkcs1v15::VerifyingKey<sha2::Sha256>),
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// A public key signatures may be made with, and the name policies and
/// rules call it by.
pub struct TrustedKey {
    pub name: String,
    /// `ecdsa-p256`, `rsa` or `ed25519`.
    pub algorithm: &'static str,
    /// `sha256:<hex>` of the key's DER encoding: tells keys apart whatever
    /// their names.
    pub fingerprint: String,
    /// The PEM text it was read from.
    pub pem: String,
    key: PublicKey,
}

impl std::fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// Longest key name.
const MAX_NAME: usize = 64;

/// Whether `name` can name a key: 1 to 64 of `[A-Za-z0-9._-]`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    match ok {
        true => Ok(()),
        false => Err(format!(
            "key name {name:?}: 1 to {MAX_NAME} letters, digits, '.', '_' or '-'"
        )),
    }
}

impl TrustedKey {
    /// Reads a PEM public key; the error says what is wrong with it.
    pub fn from_pem(name: &str, pem: &str) -> Result<TrustedKey, String> {
        check_name(name)?;
        let what = |e: String| format!("key {name:?}: {e}");
        let (label, der) = pem_rfc7468::decode_vec(pem.trim().as_bytes())
            .map_err(|e| what(format!("not a PEM block: {e}")))?;
        if label != "PUBLIC KEY" {
            return Err(what(format!(
                "a PEM \"PUBLIC KEY\" block is needed, not {label:?}"
            )));
        }
        let (algorithm, key) = if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(&der) {
            ("ecdsa-p256", PublicKey::EcdsaP256(k))
        } else if let Ok(k) = rsa::PublicKey::from_public_key_der(&der) {
            ("rsa", PublicKey::Rsa(rsa::pkcs1v15::VerifyingKey::new(k)))
        } else if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_der(&der) {
            ("ed25519", PublicKey::Ed25519(k))
        } else {
            return Err(what("not an ECDSA P-256, RSA or Ed25519 public key".into()));
        };
        Ok(TrustedKey {
            name: name.to_owned(),
            algorithm,
            fingerprint: format!("sha256:{}", hex::encode(sha2::Sha256::digest(&der))),
            pem: pem.trim().to_owned() + "\n",
            key,
        })
    }

    /// Whether `signature` is this key's signature over exactly `payload`.
    pub fn verifies(&self, payload: &[u8], signature: &[u8]) -> bool {
        match &self.key {
            PublicKey::EcdsaP256(k) => {
                let parsed = p256::ecdsa::Signature::from_der(signature)
                    .or_else(|_| p256::ecdsa::Signature::from_slice(signature));
                let Ok(sig) = parsed else {
                    return false;
                };
                // P-256 verification takes either form of s, as openssl
                // and cosign make both.
                k.verify(payload, &sig).is_ok()
            }
            PublicKey::Rsa(k) => rsa::pkcs1v15::Signature::try_from(signature)
                .is_ok_and(|sig| k.verify(payload, &sig).is_ok()),
            PublicKey::Ed25519(k) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|sig| k.verify_strict(payload, &sig).is_ok()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer;
    use p256::pkcs8::{EncodePublicKey, LineEnding};

    fn p256_pair() -> (p256::ecdsa::SigningKey, String) {
        let key = p256::ecdsa::SigningKey::from_slice(&[9u8; 32]).unwrap();
        let pem = key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        (key, pem)
    }

    #[test]
    fn ecdsa_signatures_verify_over_exact_bytes() {
        let (signing, pem) = p256_pair();
        let key = TrustedKey::from_pem("ci", &pem).unwrap();
        assert_eq!(key.algorithm, "ecdsa-p256");
        assert!(key.fingerprint.starts_with("sha256:"));
        let payload = br#"{"critical":{}}"#;
        let signature: p256::ecdsa::Signature = signing.sign(payload);
        assert!(key.verifies(payload, signature.to_der().as_bytes()));
        assert!(key.verifies(payload, &signature.to_bytes()));
        assert!(!key.verifies(br#"{"critical":{} }"#, signature.to_der().as_bytes()));
        assert!(!key.verifies(payload, b"not a signature"));
    }

    #[test]
    fn bad_keys_and_names_are_refused() {
        let (_, pem) = p256_pair();
        assert!(TrustedKey::from_pem("a b", &pem).is_err());
        assert!(TrustedKey::from_pem("", &pem).is_err());
        assert!(TrustedKey::from_pem(&"k".repeat(65), &pem).is_err());
        let private = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let e = TrustedKey::from_pem("ci", private).unwrap_err();
        assert!(e.contains("PUBLIC KEY"), "{e}");
        let junk = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        assert!(TrustedKey::from_pem("ci", junk).is_err());
        assert!(TrustedKey::from_pem("ci", "not pem").is_err());
    }
}
