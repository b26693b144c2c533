//! One golden file per NetworkPolicy semantic: `tests/golden/semantics/NAME.yaml` (the policy,
//! with a comment saying what the rendering must show) against `NAME.nft` (node-1's whole
//! transaction over the e2e cluster of `cluster`). `TRELLIS_UPDATE_GOLDEN=1` rewrites the
//! `.nft` files; review the diff. Every transaction is also handed to the kernel, in a network
//! namespace of the test's own (needs root).

mod cluster;

use std::path::PathBuf;
use std::process::Command;

use cluster::{cluster, compile};
use trellis_policy::render::render_node;

fn cases() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/semantics");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    names.sort();
    let m = cluster();
    names
        .into_iter()
        .map(|path| {
            let yaml = std::fs::read_to_string(&path).unwrap();
            let text = render_node(&compile(&yaml, &m), &m, "node-1");
            (path.with_extension("nft").display().to_string(), text)
        })
        .collect()
}

#[test]
fn every_semantic_renders_as_its_golden_file() {
    let cases = cases();
    assert!(cases.len() >= 14, "{} cases", cases.len());
    let mut differ = Vec::new();
    for (path, got) in &cases {
        if std::env::var_os("TRELLIS_UPDATE_GOLDEN").is_some() {
            std::fs::write(path, got).unwrap();
        }
        let want = std::fs::read_to_string(path).unwrap_or_default();
        if &want != got {
            differ.push(format!("{path} differs; got:\n{got}"));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

#[test]
fn the_kernel_takes_every_golden_transaction() {
    let ns = format!("trl-gold{}", std::process::id());
    let run = |args: &[&str]| Command::new("ip").args(args).output().unwrap();
    let add = run(&["netns", "add", &ns]);
    assert!(
        add.status.success(),
        "creates a network namespace: run as root (CI does): {}",
        String::from_utf8_lossy(&add.stderr)
    );
    let mut refused = Vec::new();
    for (path, text) in cases() {
        // A fresh table per case: each transaction stands alone.
        let _ = run(&[
            "netns", "exec", &ns, "nft", "delete", "table", "inet", "trellis",
        ]);
        let file = std::env::temp_dir().join(format!("{ns}.nft"));
        std::fs::write(&file, &text).unwrap();
        let out = run(&["netns", "exec", &ns, "nft", "-f", file.to_str().unwrap()]);
        let _ = std::fs::remove_file(&file);
        if !out.status.success() {
            refused.push(format!("{path}: {}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    let _ = run(&["netns", "delete", &ns]);
    assert!(refused.is_empty(), "{}", refused.join("\n"));
}
