//! Changing every workload endpoint of one pod (`trellisctl label pod`, `trellisctl ports pod`):
//! each is written with compare-and-swap, and a lost race reads them all again.

use anyhow::{bail, Context};
use trellis_datastore::codec;
use trellis_datastore::resources::{WorkloadEndpoint, WorkloadEndpointSpec};
use trellis_datastore::Datastore;

/// Applies `change` to every endpoint of pod `ns/pod`, validates the result (errors say it is
/// `what` of the pod that is wrong) and writes it; returns how many endpoints were written.
/// Nothing is written for an endpoint whose change or validation fails.
pub async fn update_pod_endpoints(
    ds: &dyn Datastore,
    ns: &str,
    pod: &str,
    what: &str,
    mut change: impl FnMut(&mut WorkloadEndpoint) -> anyhow::Result<()>,
) -> anyhow::Result<usize> {
    loop {
        let weps = codec::list_objects::<WorkloadEndpointSpec>(ds)
            .await
            .context("listing workload endpoints")?;
        let mine: Vec<_> = weps
            .into_iter()
            .filter(|w| {
                w.value.metadata.namespace.as_deref().unwrap_or("default") == ns
                    && w.value.spec.pod == pod
            })
            .collect();
        if mine.is_empty() {
            bail!("pod {ns}/{pod} has no workload endpoint (is it running?)");
        }
        let (mut updated, mut lost_race) = (0, false);
        for mut w in mine {
            change(&mut w.value)?;
            w.value
                .validate()
                .map_err(|e| anyhow::anyhow!("{what} of {ns}/{pod}: {e}"))?;
            let value = codec::encode_object(&w.value)?;
            match ds.update(&w.key, value, w.revision).await {
                Ok(_) => updated += 1,
                Err(e) if e.lost_race() => lost_race = true,
                Err(e) => return Err(e).context(format!("writing {}", w.key)),
            }
        }
        if !lost_race {
            return Ok(updated);
        }
    }
}

#[cfg(test)]
pub mod tests {
    use trellis_datastore::codec;
    use trellis_datastore::memory::MemoryDatastore;
    use trellis_datastore::resources::{WorkloadEndpoint, WorkloadEndpointSpec};
    use trellis_datastore::{Datastore, ObjectMeta};

    /// Stores endpoint `iface` of pod `x/POD` on node n1 with address `addr`.
    pub async fn put_wep(ds: &MemoryDatastore, pod: &str, iface: &str, addr: &str) {
        let mut meta = ObjectMeta::named(format!("n1-k8s-{pod}-{iface}"));
        meta.namespace = Some("x".into());
        let w = WorkloadEndpoint::new(
            meta,
            WorkloadEndpointSpec {
                node: "n1".into(),
                pod: pod.into(),
                endpoint: iface.into(),
                interface_name: format!("trl{pod}{iface}"),
                container_id: format!("c{pod}"),
                handle_id: format!("c{pod}.{iface}"),
                ip_networks: vec![format!("{addr}/32").parse().unwrap()],
                ..Default::default()
            },
        );
        ds.put(&w.key(), codec::encode_object(&w).unwrap())
            .await
            .unwrap();
    }
}
