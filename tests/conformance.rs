//! berth against its own OCI distribution-spec conformance suite
//! (conformance/), over HTTP, as any registry would be tested.

mod common;

use berth_conformance::{Options, run};

#[tokio::test]
async fn berth_passes_the_conformance_suite() {
    let b = common::Berth::start();
    let report = run(&b.url(""), &Options::default()).await;
    assert!(report.passed > 0, "no check ran");
    assert!(report.ok(), "{}", report.to_text());
}
