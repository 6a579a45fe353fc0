//! Typed configuration. Precedence, lowest first: built-in defaults, the
//! config file, environment variables, command-line flags. Unknown keys in
//! the file are an error, so a typo never silently falls back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address and port the registry listens on.
    pub listen: SocketAddr,
    /// Directory for blobs, uploads in progress and the metadata database.
    pub data_dir: PathBuf,
    /// Whether clients may delete manifests, tags and blobs. When false,
    /// deletes answer 405 UNSUPPORTED.
    pub delete_enabled: bool,
    /// Limits on what clients may send.
    pub limits: Limits,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest manifest accepted, in bytes.
    pub max_manifest_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "0.0.0.0:8888".parse().expect("valid default address"),
            data_dir: PathBuf::from("./data"),
            delete_enabled: true,
            limits: Limits::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest_bytes: 4 * 1024 * 1024,
        }
    }
}

impl Config {
    /// Reads a config file. A missing file is an error only if it was named
    /// explicitly (`required`).
    pub fn load(path: &Path, required: bool) -> anyhow::Result<Config> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Config::default());
            }
            Err(e) => anyhow::bail!("reading {}: {e}", path.display()),
        };
        let config: Config =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.limits.max_manifest_bytes >= 1024,
            "limits.max_manifest_bytes must be at least 1024"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_file_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let shipped = Config::load(&path, true).unwrap();
        let defaults = Config::default();
        assert_eq!(shipped.listen, defaults.listen);
        assert_eq!(shipped.data_dir, defaults.data_dir);
        assert_eq!(shipped.delete_enabled, defaults.delete_enabled);
        assert_eq!(
            shipped.limits.max_manifest_bytes,
            defaults.limits.max_manifest_bytes
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<Config>("listne = \"0.0.0.0:1\"").unwrap_err();
        assert!(err.to_string().contains("listne"));
    }
}
