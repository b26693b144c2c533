//! Replays the fuzz corpus (and any saved crash artifacts) through the fuzz target's function,
//! so every input the fuzzer found interesting stays a regression test on stable Rust.

use std::path::{Path, PathBuf};

use trellis_bgp_speaker::wire::fuzz_decode_roundtrip;

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

fn replay(paths: &[PathBuf]) {
    for path in paths {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let outcome = std::panic::catch_unwind(|| fuzz_decode_roundtrip(&data));
        assert!(outcome.is_ok(), "fuzz input {} fails", path.display());
    }
}

#[test]
fn corpus_replays_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode");
    let corpus = files(&dir);
    assert!(
        !corpus.is_empty(),
        "the fuzz corpus {} is empty or missing",
        dir.display()
    );
    replay(&corpus);
}

#[test]
fn crash_artifacts_replay_cleanly() {
    // Written by `cargo fuzz run` when it finds a failure; absent normally.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/artifacts/decode");
    replay(&files(&dir));
}
