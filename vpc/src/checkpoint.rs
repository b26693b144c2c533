//! The node's pod address allocations on disk, so that an agent restart keeps every pod's
//! ENI address (the AWS VPC CNI keeps the same kind of file at
//! `/var/run/aws-node/ipam.json`).
//!
//! The file is replaced atomically: the new content goes to a temporary file in the same
//! directory, is fsynced, renamed over the old file, and the directory is fsynced so the
//! rename itself survives a power loss. A crash at any point leaves either the old file or
//! the new one, never a mix; at worst a stray temporary file, which the next write
//! overwrites and [`load`] never reads. One writer per file is assumed (the agent's pool
//! owner): the temporary file has a fixed name.
//!
//! ```json
//! {"version":1,"allocations":[{"container_id":"4f1c..","ifname":"eth0",
//!   "ip":"10.0.1.23","eni_id":"eni-0abc","allocated_at":1767225600}]}
//! ```

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The format this code writes and reads. A file of another version is refused rather than
/// misread: losing track of allocations would hand one address to two pods.
pub const VERSION: u32 = 1;

/// One pod interface's address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// The pod sandbox's container ID, with `ifname` the CNI key of the allocation.
    pub container_id: String,
    pub ifname: String,
    pub ip: Ipv4Addr,
    /// The ENI the address belongs to.
    pub eni_id: String,
    /// When the address was given to the pod, in seconds since the Unix epoch.
    pub allocated_at: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    allocations: Vec<Allocation>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("reading checkpoint {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("checkpoint {} is corrupt: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("checkpoint {} has version {found}; this agent reads version {VERSION}", path.display())]
    Version { path: PathBuf, found: u32 },
    #[error("writing checkpoint {}: {step}", path.display())]
    Write {
        path: PathBuf,
        step: &'static str,
        #[source]
        source: io::Error,
    },
}

/// The allocations in `path`; none when the file does not exist (a node's first start).
pub fn load(path: &Path) -> Result<Vec<Allocation>, CheckpointError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CheckpointError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let corrupt = |detail: String| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    // The version first, so a future format is reported as such and not as a parse error.
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| corrupt(format!("not JSON: {e}")))?;
    match value.get("version").map(serde_json::Value::as_u64) {
        Some(Some(v)) if v == u64::from(VERSION) => {}
        Some(Some(found)) => {
            return Err(CheckpointError::Version {
                path: path.to_path_buf(),
                found: u32::try_from(found).unwrap_or(u32::MAX),
            })
        }
        Some(None) => return Err(corrupt("\"version\" is not a number".to_string())),
        None => return Err(corrupt("no \"version\" field".to_string())),
    }
    let file: OnDisk = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
    let mut ips = HashSet::new();
    let mut keys = HashSet::new();
    for a in &file.allocations {
        if !ips.insert(a.ip) {
            return Err(corrupt(format!("address {} is allocated twice", a.ip)));
        }
        if !keys.insert((&a.container_id, &a.ifname)) {
            return Err(corrupt(format!(
                "container {} interface {} has two addresses",
                a.container_id, a.ifname
            )));
        }
    }
    Ok(file.allocations)
}

/// Replaces the content of `path` with `allocations`, atomically (see the module comment).
pub fn store(path: &Path, allocations: &[Allocation]) -> Result<(), CheckpointError> {
    let failed = |step: &'static str| {
        move |source: io::Error| CheckpointError::Write {
            path: path.to_path_buf(),
            step,
            source,
        }
    };
    let file = OnDisk {
        version: VERSION,
        allocations: allocations.to_vec(),
    };
    let mut bytes = serde_json::to_vec(&file)
        .map_err(|e| failed("encoding")(io::Error::new(io::ErrorKind::InvalidData, e)))?;
    bytes.push(b'\n');

    let temp = temp_path(path);
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .map_err(failed("creating the temporary file"))?;
    out.write_all(&bytes)
        .map_err(failed("writing the temporary file"))?;
    out.sync_all()
        .map_err(failed("syncing the temporary file"))?;
    drop(out);
    fs::rename(&temp, path).map_err(failed("renaming the temporary file over it"))?;
    File::open(parent_dir(path))
        .and_then(|dir| dir.sync_all())
        .map_err(failed("syncing its directory"))?;
    Ok(())
}

/// `DIR/.NAME.tmp`: in the same directory, so the rename stays within one file system.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent_dir(path).join(format!(".{name}.tmp"))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(container: &str, ip: [u8; 4], eni: &str) -> Allocation {
        Allocation {
            container_id: container.to_string(),
            ifname: "eth0".to_string(),
            ip: Ipv4Addr::from(ip),
            eni_id: eni.to_string(),
            allocated_at: 1_767_225_600,
        }
    }

    fn two() -> Vec<Allocation> {
        vec![
            alloc("c1", [10, 0, 1, 23], "eni-0a"),
            alloc("c2", [10, 0, 1, 40], "eni-0b"),
        ]
    }

    #[test]
    fn round_trip_with_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.json");
        store(&path, &two()).unwrap();
        assert_eq!(load(&path).unwrap(), two());
        let raw: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(raw["version"], 1);
        assert_eq!(raw["allocations"][0]["ip"], "10.0.1.23");
        assert_eq!(raw["allocations"][1]["eni_id"], "eni-0b");
        assert!(!temp_path(&path).exists(), "temporary file renamed away");
    }

    #[test]
    fn store_replaces_the_whole_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.json");
        store(&path, &two()).unwrap();
        let one = vec![alloc("c3", [10, 0, 2, 5], "eni-0c")];
        store(&path, &one).unwrap();
        assert_eq!(load(&path).unwrap(), one);
        store(&path, &[]).unwrap();
        assert_eq!(load(&path).unwrap(), vec![]);
    }

    #[test]
    fn missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(&dir.path().join("ipam.json")).unwrap(), vec![]);
        assert_eq!(
            load(&dir.path().join("no/such/dir/ipam.json")).unwrap(),
            vec![]
        );
    }

    #[test]
    fn corrupt_file_is_refused_with_path_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.json");
        let cases = [
            (
                "{\"version\":1,\"allocations\":[",
                "not JSON: EOF while parsing",
            ),
            ("", "not JSON: EOF while parsing a value at line 1 column 0"),
            ("{\"allocations\":[]}", "no \"version\" field"),
            (
                "{\"version\":\"1\",\"allocations\":[]}",
                "\"version\" is not a number",
            ),
            (
                "{\"version\":1,\"allocations\":[{\"container_id\":\"c1\"}]}",
                "missing field `ifname`",
            ),
            (
                "{\"version\":1,\"allocations\":[{\"container_id\":\"c\",\"ifname\":\"eth0\",\
                 \"ip\":\"10.0.0.300\",\"eni_id\":\"eni-1\",\"allocated_at\":0}]}",
                "invalid IPv4 address syntax",
            ),
        ];
        for (content, reason) in cases {
            fs::write(&path, content).unwrap();
            let err = load(&path).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, CheckpointError::Corrupt { .. }), "{msg}");
            assert!(
                msg.starts_with(&format!("checkpoint {} is corrupt: ", path.display())),
                "{msg}"
            );
            assert!(msg.contains(reason), "{content:?}: {msg}");
        }
    }

    #[test]
    fn duplicates_are_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.json");
        let mut same_ip = two();
        same_ip[1].ip = same_ip[0].ip;
        store(&path, &same_ip).unwrap();
        let msg = load(&path).unwrap_err().to_string();
        assert!(
            msg.ends_with("is corrupt: address 10.0.1.23 is allocated twice"),
            "{msg}"
        );

        let mut same_key = two();
        same_key[1].container_id = "c1".to_string();
        store(&path, &same_key).unwrap();
        let msg = load(&path).unwrap_err().to_string();
        assert!(
            msg.ends_with("container c1 interface eth0 has two addresses"),
            "{msg}"
        );
    }

    #[test]
    fn other_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.json");
        fs::write(&path, "{\"version\":2,\"allocations\":[],\"new\":true}").unwrap();
        let err = load(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "checkpoint {} has version 2; this agent reads version 1",
                path.display()
            )
        );
    }

    /// A crash after the temporary file was (partly) written but before the rename leaves
    /// the old checkpoint as it was; the next write goes through.
    #[test]
    fn crash_before_rename_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.json");
        store(&path, &two()).unwrap();
        fs::write(temp_path(&path), "{\"version\":1,\"allocations\":[{\"conta").unwrap();

        assert_eq!(load(&path).unwrap(), two());

        let one = vec![alloc("c3", [10, 0, 2, 5], "eni-0c")];
        store(&path, &one).unwrap();
        assert_eq!(load(&path).unwrap(), one);
        assert!(!temp_path(&path).exists());
    }

    #[test]
    fn write_errors_name_path_and_step() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("ipam.json");
        let err = store(&path, &two()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "writing checkpoint {}: creating the temporary file",
                path.display()
            )
        );
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn temp_file_is_a_sibling() {
        assert_eq!(
            temp_path(Path::new("/var/run/trellis/ipam.json")),
            Path::new("/var/run/trellis/.ipam.json.tmp")
        );
        assert_eq!(
            temp_path(Path::new("ipam.json")),
            Path::new("./.ipam.json.tmp")
        );
    }
}
