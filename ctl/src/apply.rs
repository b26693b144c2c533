//! `trellisctl apply -f FILE|-`: validate every resource in the input, then write them all in one
//! etcd transaction. Any problem means nothing is written.

use std::collections::BTreeSet;
use std::io::Read;

use anyhow::{bail, Context};
use trellis_datastore::codec;
use trellis_datastore::resources::ippool::validate_against_existing;
use trellis_datastore::resources::{parse_documents_numbered, AnyResource, IpPool, IpPoolSpec};
use trellis_datastore::{Datastore, TxnOp};

/// What happened to one resource.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Configured,
    Unchanged,
}

fn read_input(path: &str) -> anyhow::Result<(String, String)> {
    if path == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
        Ok((text, "<stdin>".to_string()))
    } else {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        Ok((text, path.to_string()))
    }
}

/// Seconds since the epoch as RFC 3339 (UTC), for `metadata.creationTimestamp`.
fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses and validates `path` and returns the resources, or one line naming every problem.
pub async fn load(ds: &dyn Datastore, path: &str) -> anyhow::Result<Vec<AnyResource>> {
    let (text, source) = read_input(path)?;
    let parsed = parse_documents_numbered(&text, &source).map_err(|e| anyhow::anyhow!("{e}"))?;
    if parsed.is_empty() {
        bail!("{source}: no resources found");
    }
    let mut problems = Vec::new();
    let mut keys = BTreeSet::new();
    let mut resources = Vec::new();
    for (doc, mut r) in parsed {
        default_namespace(&mut r);
        let at = format!("{source} document {doc} ({})", r.describe());
        if !AnyResource::user_managed(r.kind()) {
            problems.push(format!(
                "{at}: {} objects are managed by Trellis IPAM and cannot be applied",
                r.kind()
            ));
            continue;
        }
        if let Err(e) = r.validate() {
            problems.push(format!("{at}: {e}"));
        }
        if !keys.insert(r.key()) {
            problems.push(format!("{at}: appears more than once in the input"));
        }
        resources.push((at, r));
    }
    // Pools must not overlap the stored pools nor each other.
    let stored: Vec<IpPool> = codec::list_objects::<IpPoolSpec>(ds)
        .await?
        .into_iter()
        .map(|v| v.value)
        .collect();
    let incoming: Vec<&IpPool> = resources
        .iter()
        .filter_map(|(_, r)| {
            if let AnyResource::IpPool(p) = r {
                Some(p)
            } else {
                None
            }
        })
        .collect();
    for (at, r) in &resources {
        if let AnyResource::IpPool(p) = r {
            let mut others: Vec<IpPool> = stored.clone();
            others.extend(
                incoming
                    .iter()
                    .filter(|o| o.metadata.name != p.metadata.name)
                    .map(|o| (*o).clone()),
            );
            if let Err(e) = validate_against_existing(p, &others) {
                problems.push(format!("{at}: {e}"));
            }
        }
    }
    if !problems.is_empty() {
        bail!("nothing applied: {}", problems.join("; "));
    }
    Ok(resources.into_iter().map(|(_, r)| r).collect())
}

fn default_namespace(r: &mut AnyResource) {
    if AnyResource::namespaced(r.kind()) == Some(true) {
        let meta = match r {
            AnyResource::NetworkPolicy(o) => &mut o.metadata,
            AnyResource::WorkloadEndpoint(o) => &mut o.metadata,
            _ => return,
        };
        meta.namespace.get_or_insert_with(|| "default".to_string());
    }
}

/// Writes `resources` in one transaction; returns the outcome of each.
pub async fn write_all(
    ds: &dyn Datastore,
    resources: &[AnyResource],
) -> anyhow::Result<Vec<Outcome>> {
    let mut ops = Vec::new();
    let mut outcomes = Vec::new();
    for r in resources {
        let key = r.key();
        let current = ds.get(&key).await?;
        let mut json = r.to_json();
        let existing = match &current {
            Some(kv) => Some(AnyResource::decode(r.kind(), kv)?.to_json()),
            None => None,
        };
        // Keep what the store assigned on creation; ignore the revision the user's copy carries.
        let created_at = existing
            .as_ref()
            .and_then(|e| e.pointer("/metadata/creationTimestamp").cloned())
            .unwrap_or_else(|| serde_json::Value::String(rfc3339_now()));
        json["metadata"]["creationTimestamp"] = created_at;
        if let Some(m) = json["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        let value = serde_json::to_vec(&json)?;
        match (&current, existing) {
            (Some(kv), Some(mut old)) => {
                if let Some(m) = old["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
                if old == json {
                    ops.push(TxnOp::Check {
                        key,
                        expected_revision: kv.mod_revision,
                    });
                    outcomes.push(Outcome::Unchanged);
                } else {
                    ops.push(TxnOp::Update {
                        key,
                        value,
                        expected_revision: kv.mod_revision,
                    });
                    outcomes.push(Outcome::Configured);
                }
            }
            _ => {
                ops.push(TxnOp::Create { key, value });
                outcomes.push(Outcome::Created);
            }
        }
    }
    match ds.txn(ops).await {
        Ok(_) => Ok(outcomes),
        Err(e) if e.lost_race() => {
            bail!("nothing applied: {e}; another writer changed it, run apply again")
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_rfc3339() {
        let t = super::rfc3339_now();
        assert_eq!(t.len(), 20, "{t}");
        assert!(
            t.starts_with("20") && t.ends_with('Z') && &t[10..11] == "T",
            "{t}"
        );
    }
}
