//! `deploy/install-cni.sh`, the DaemonSet's init container, run against a temporary directory
//! tree: it installs the plugin and the conflist by rename (new inode, no temporary file left),
//! running it again changes nothing (same inodes and mtimes), an update replaces only what
//! changed, and bad input fails naming it with nothing replaced.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

struct Tree {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Tree {
    fn new() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        std::fs::create_dir_all(root.join("src")).unwrap();
        Tree { _dir: dir, root }
    }

    fn bin_dir(&self) -> PathBuf {
        self.root.join("host/opt/cni/bin")
    }

    fn net_dir(&self) -> PathBuf {
        self.root.join("host/etc/cni/net.d")
    }

    fn plugin(&self, content: &str) {
        std::fs::write(self.root.join("src/trellis"), content).unwrap();
    }

    /// Runs the installer with `env` on top of the tree's directories; (success, stdout+stderr).
    fn install(&self, env: &[(&str, &str)]) -> (bool, String) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/install-cni.sh");
        let out = Command::new("sh")
            .arg(script)
            .env("CNI_BIN_DIR", self.bin_dir())
            .env("CNI_NET_DIR", self.net_dir())
            .env("TRELLIS_CNI_BIN", self.root.join("src/trellis"))
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// (inode, mtime in ns) of each installed file.
    fn stamps(&self) -> [(u64, i64); 2] {
        let s = |p: PathBuf| {
            let m = std::fs::metadata(p).unwrap();
            (m.ino(), m.mtime() * 1_000_000_000 + m.mtime_nsec())
        };
        [
            s(self.bin_dir().join("trellis")),
            s(self.net_dir().join("10-trellis.conflist")),
        ]
    }

    /// Every name in both directories (temporary files would show here).
    fn names(&self) -> Vec<String> {
        let mut out = Vec::new();
        for d in [self.bin_dir(), self.net_dir()] {
            for e in std::fs::read_dir(d).unwrap() {
                out.push(e.unwrap().file_name().to_string_lossy().into_owned());
            }
        }
        out.sort();
        out
    }
}

#[test]
fn installs_atomically_is_idempotent_and_replaces_only_what_changed() {
    let t = Tree::new();
    t.plugin("plugin v1");
    let (ok, out) = t.install(&[("TRELLIS_AGENT_SOCKET", "/run/x/agent.sock")]);
    assert!(ok, "{out}");
    assert_eq!(t.names(), vec!["10-trellis.conflist", "trellis"]);
    let bin = t.bin_dir().join("trellis");
    assert_eq!(std::fs::read_to_string(&bin).unwrap(), "plugin v1");
    assert_eq!(
        std::fs::metadata(&bin).unwrap().permissions().mode() & 0o777,
        0o755
    );
    let conf: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(t.net_dir().join("10-trellis.conflist")).unwrap(),
    )
    .unwrap();
    assert_eq!(conf["plugins"][0]["type"], "trellis");
    assert_eq!(conf["plugins"][0]["agent_socket"], "/run/x/agent.sock");
    assert_eq!(conf["plugins"][0]["mtu"], 0);
    assert_eq!(conf["plugins"][1]["type"], "portmap");
    assert_eq!(conf["plugins"][1]["capabilities"]["portMappings"], true);
    // The plugin accepts its entry as a runtime hands it over (cniVersion and name added).
    let mut entry = conf["plugins"][0].clone();
    entry["cniVersion"] = conf["cniVersion"].clone();
    entry["name"] = conf["name"].clone();
    let parsed = trellis_cni::spec::config::NetConf::parse(&entry.to_string()).unwrap();
    assert_eq!(parsed.agent_socket, PathBuf::from("/run/x/agent.sock"));
    assert_eq!(parsed.mtu, None, "mtu 0: the agent decides");

    // Again: nothing is rewritten.
    let before = t.stamps();
    let (ok, out) = t.install(&[("TRELLIS_AGENT_SOCKET", "/run/x/agent.sock")]);
    assert!(ok, "{out}");
    assert!(out.contains("up to date"), "{out}");
    assert_eq!(t.stamps(), before);

    // A new plugin: it alone is replaced, by rename (a new inode), nothing left behind.
    t.plugin("plugin v2");
    let (ok, out) = t.install(&[("TRELLIS_AGENT_SOCKET", "/run/x/agent.sock")]);
    assert!(ok, "{out}");
    let after = t.stamps();
    assert_ne!(after[0].0, before[0].0, "the plugin arrives by rename");
    assert_eq!(after[1], before[1], "the conflist is untouched");
    assert_eq!(std::fs::read_to_string(&bin).unwrap(), "plugin v2");
    assert_eq!(t.names(), vec!["10-trellis.conflist", "trellis"]);
}

#[test]
fn bad_input_is_named_and_replaces_nothing() {
    let t = Tree::new();
    t.plugin("plugin v1");
    assert!(t.install(&[]).0);
    let before = t.stamps();
    t.plugin("plugin v2");

    let (ok, out) = t.install(&[("CNI_MTU", "big")]);
    assert!(!ok);
    assert!(
        out.contains("CNI_MTU must be a number of bytes, got 'big'"),
        "{out}"
    );

    let (ok, out) = t.install(&[("CNI_NETWORK_CONFIG", "{\"plugins\": [")]);
    assert!(!ok);
    assert!(
        out.contains("CNI_NETWORK_CONFIG is not valid JSON"),
        "{out}"
    );

    let (ok, out) = t.install(&[("CNI_CONF_NAME", "../evil.conflist")]);
    assert!(!ok);
    assert!(
        out.contains("CNI_CONF_NAME must be a plain file name"),
        "{out}"
    );

    let (ok, out) = t.install(&[("TRELLIS_CNI_BIN", "/nonexistent/trellis")]);
    assert!(!ok);
    assert!(
        out.contains("the plugin /nonexistent/trellis does not exist"),
        "{out}"
    );

    assert_eq!(t.stamps(), before, "nothing was replaced");
    assert_eq!(
        std::fs::read_to_string(t.bin_dir().join("trellis")).unwrap(),
        "plugin v1"
    );
    assert_eq!(
        t.names(),
        vec!["10-trellis.conflist", "trellis"],
        "no temporary file left"
    );
}
