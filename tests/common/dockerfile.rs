//! Reading the repository's Dockerfile, for tests that must agree with it.
//!
//! Used as `#[path = "common/dockerfile.rs"] mod dockerfile;`, next to
//! `mod common;`.

/// The default of `ARG NAME=...` in the Dockerfile.
pub fn arg(name: &str) -> String {
    let path = crate::common::repo_root().join("Dockerfile");
    let dockerfile = std::fs::read_to_string(&path).unwrap();
    let prefix = format!("ARG {name}=");
    dockerfile
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no `{prefix}...` in {}", path.display()))
        .trim()
        .to_owned()
}
