//! # tether-conformance
//!
//! Language-neutral test vectors for the tether protocol and the runner that checks this
//! implementation against them. The vector formats are documented in `README.md` beside
//! this crate so that an implementation in another language can use the same files.

pub mod behaviour;
pub mod behaviour_record;
pub mod record;
pub mod sim;
pub mod wire_vectors;

use std::path::{Path, PathBuf};

/// The outcome of one vector file.
#[derive(Debug)]
pub struct VectorOutcome {
    /// The file.
    pub path: PathBuf,
    /// `Ok` or why it failed.
    pub result: Result<(), String>,
}

/// Writes `(relative path, value)` pairs below `dir` as pretty JSON files, refusing to
/// replace existing files unless `overwrite` is set. Returns how many were written.
pub fn write_json_files<T: serde::Serialize>(
    dir: &Path,
    files: &[(String, T)],
    overwrite: bool,
) -> Result<usize, String> {
    for (name, value) in files {
        let path = dir.join(name);
        if path.exists() && !overwrite {
            return Err(format!(
                "{} exists (pass --force to replace)",
                path.display()
            ));
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        let mut text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
        text.push('\n');
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(files.len())
}

/// The folder holding the committed vectors of this crate.
pub fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors")
}

/// Runs every vector file below `dir`. A file's kind is told by the folder it is in
/// (`wire/` for wire vectors).
pub fn run_dir(dir: &Path) -> Result<Vec<VectorOutcome>, String> {
    let files = wire_vectors::files(dir)?;
    Ok(files
        .into_iter()
        .map(|path| {
            let kind = |name: &str| path.components().any(|c| c.as_os_str() == name);
            let result = if kind("wire") {
                wire_vectors::load(&path).and_then(|vector| vector.check())
            } else if kind("client") || kind("hub") {
                behaviour::load(&path).and_then(|vector| vector.check())
            } else {
                Err("not below a folder of a known vector kind (wire/, client/, hub/)".into())
            };
            VectorOutcome { path, result }
        })
        .collect())
}
