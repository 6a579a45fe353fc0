//! `berth-conformance`: runs the OCI distribution-spec conformance suite
//! against a registry and prints the report.

use std::process::ExitCode;

use berth_conformance::{Options, run};
use clap::Parser;

#[derive(Parser)]
#[command(version, about = "OCI distribution-spec conformance suite")]
struct Args {
    /// Base URL of the registry, e.g. http://127.0.0.1:5000
    #[arg(long, env = "OCI_ROOT_URL")]
    url: String,
    /// Prefix for the repositories the run creates (default conformance/<random>)
    #[arg(long)]
    namespace: Option<String>,
    /// Print the report as JSON instead of text
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let options = Options {
        namespace: args.namespace.unwrap_or_else(Options::random_namespace),
    };
    let report = run(&args.url, &options).await;
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("cannot serialise the report: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        print!("{}", report.to_text());
    }
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
