//! `tether-conformance`: runs the protocol's test vectors.
//!
//! ```text
//! tether-conformance vectors [DIR]          run every vector below DIR (default: the committed ones)
//! tether-conformance record-wire DIR [--force]   write the wire vectors from the built-in samples
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use tether_conformance::{record, run_dir, vectors_dir};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["vectors"] => vectors(vectors_dir()),
        ["vectors", dir] => vectors(PathBuf::from(dir)),
        ["record-wire", dir] => record_wire(dir, false),
        ["record-wire", dir, "--force"] => record_wire(dir, true),
        _ => {
            eprintln!(
                "usage:\n  tether-conformance vectors [DIR]\n  tether-conformance record-wire DIR [--force]"
            );
            ExitCode::from(2)
        }
    }
}

fn vectors(dir: PathBuf) -> ExitCode {
    let outcomes = match run_dir(&dir) {
        Ok(outcomes) => outcomes,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let mut failed = 0;
    for outcome in &outcomes {
        let shown = outcome.path.strip_prefix(&dir).unwrap_or(&outcome.path);
        match &outcome.result {
            Ok(()) => println!("ok   {}", shown.display()),
            Err(reason) => {
                failed += 1;
                println!("FAIL {}: {reason}", shown.display());
            }
        }
    }
    println!("{} passed, {} failed", outcomes.len() - failed, failed);
    if failed == 0 && !outcomes.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn record_wire(dir: &str, overwrite: bool) -> ExitCode {
    match record::write_all(&PathBuf::from(dir), overwrite) {
        Ok(count) => {
            println!("wrote {count} wire vectors to {dir}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
