//! The `berth` command line beyond `serve`: one file per resource.
//!
//! - [`accounts`]: users, robots and grants, written to the metadata store
//!   directly (they work before the first start and while berth serves).
//! - [`deploys`]: the deploy and delivery logs, and rollbacks.
//! - [`gc`]: garbage collection now, from this process.
//! - [`admin`]: a client of a running berth's admin API.
//! - [`mirrors`]: `berth admin mirror`, pull-through mirrors through it.
//! - [`signatures`]: `berth admin signature`, trusted keys and which
//!   manifests are signed, through it.
//! - [`table`]: how answers are printed.

pub mod accounts;
pub mod admin;
pub mod deploys;
pub mod gc;
pub mod mirrors;
pub mod signatures;
pub mod table;
