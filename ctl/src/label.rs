//! `trellisctl label pod NS/POD KEY=VALUE... KEY-...`: sets or removes labels on a pod's
//! workload endpoints, which is what policy selectors match (the orchestrator's job on a real
//! cluster, done by hand or by the lab here). Every endpoint of the pod gets the same labels,
//! each written with compare-and-swap.

use anyhow::bail;
use trellis_datastore::Datastore;

use crate::pod_endpoints::update_pod_endpoints;

/// One change: `key=value` sets, `key-` removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Set(String, String),
    Remove(String),
}

pub fn parse_change(text: &str) -> anyhow::Result<Change> {
    if let Some((k, v)) = text.split_once('=') {
        if k.is_empty() {
            bail!("{text:?}: the label key is empty");
        }
        return Ok(Change::Set(k.to_string(), v.to_string()));
    }
    match text.strip_suffix('-') {
        Some(k) if !k.is_empty() => Ok(Change::Remove(k.to_string())),
        _ => bail!("{text:?} is neither KEY=VALUE (set) nor KEY- (remove)"),
    }
}

/// Applies `changes` to every endpoint of pod `ns/pod`; returns how many were updated.
pub async fn label_pod(
    ds: &dyn Datastore,
    ns: &str,
    pod: &str,
    changes: &[Change],
) -> anyhow::Result<usize> {
    update_pod_endpoints(ds, ns, pod, "labels", |w| {
        for c in changes {
            match c {
                Change::Set(k, v) => {
                    w.spec.labels.insert(k.clone(), v.clone());
                }
                Change::Remove(k) => {
                    w.spec.labels.remove(k);
                }
            }
        }
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod_endpoints::tests::put_wep;
    use trellis_datastore::codec;
    use trellis_datastore::memory::MemoryDatastore;
    use trellis_datastore::resources::WorkloadEndpointSpec;

    async fn labels_of(ds: &MemoryDatastore, pod: &str) -> Vec<String> {
        codec::list_objects::<WorkloadEndpointSpec>(ds)
            .await
            .unwrap()
            .into_iter()
            .filter(|w| w.value.spec.pod == pod)
            .map(|w| format!("{:?}", w.value.spec.labels))
            .collect()
    }

    #[tokio::test]
    async fn every_endpoint_of_the_pod_and_only_those() {
        let ds = MemoryDatastore::new();
        put_wep(&ds, "a", "eth0", "10.0.0.1").await;
        put_wep(&ds, "a", "net1", "10.1.0.1").await;
        put_wep(&ds, "b", "eth0", "10.0.0.2").await;
        let set = [
            parse_change("pod=a").unwrap(),
            parse_change("tier=web").unwrap(),
        ];
        assert_eq!(label_pod(&ds, "x", "a", &set).await.unwrap(), 2);
        assert_eq!(
            labels_of(&ds, "a").await,
            [r#"{"pod": "a", "tier": "web"}"#; 2]
        );
        assert_eq!(labels_of(&ds, "b").await, ["{}"]);
        let remove = [parse_change("tier-").unwrap()];
        label_pod(&ds, "x", "a", &remove).await.unwrap();
        assert_eq!(labels_of(&ds, "a").await, [r#"{"pod": "a"}"#; 2]);
        let e = label_pod(&ds, "x", "nope", &set).await.unwrap_err();
        assert!(e.to_string().contains("x/nope"), "{e}");
    }

    #[test]
    fn changes_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_change("pod=a").unwrap(),
            Change::Set("pod".into(), "a".into())
        );
        assert_eq!(parse_change("pod-").unwrap(), Change::Remove("pod".into()));
        assert!(parse_change("=a")
            .unwrap_err()
            .to_string()
            .contains("empty"));
        assert!(parse_change("pod")
            .unwrap_err()
            .to_string()
            .contains("KEY=VALUE"));
    }
}
