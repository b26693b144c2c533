//! `trellisctl get` and `trellisctl delete`.

use anyhow::bail;
use trellis_datastore::codec;
use trellis_datastore::resources::{AnyResource, IpPoolSpec, IpamBlockSpec};
use trellis_datastore::{keys, Datastore};

use crate::table::Table;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Wide,
    Yaml,
    Json,
}

/// Which namespace(s) a namespaced kind is read from.
#[derive(Debug, Clone)]
pub enum Scope {
    Namespace(String),
    All,
}

/// Every stored object of `kind` in `scope` (cluster kinds ignore the scope).
pub async fn list(
    ds: &dyn Datastore,
    kind: &str,
    scope: &Scope,
) -> anyhow::Result<Vec<AnyResource>> {
    let prefix = AnyResource::key_prefix(kind).expect("resolved kind");
    let listing = ds.list(prefix).await?;
    let mut out = Vec::new();
    for kv in &listing.items {
        let r = AnyResource::decode(kind, kv)?;
        if AnyResource::namespaced(kind) == Some(true) {
            if let Scope::Namespace(ns) = scope {
                if r.metadata().namespace.as_deref().unwrap_or("default") != ns {
                    continue;
                }
            }
        }
        out.push(r);
    }
    Ok(out)
}

pub async fn get(
    ds: &dyn Datastore,
    kind: &str,
    name: Option<&str>,
    scope: &Scope,
    output: Output,
) -> anyhow::Result<String> {
    let mut items = list(ds, kind, scope).await?;
    if let Some(n) = name {
        items.retain(|r| r.metadata().name == n);
        if items.is_empty() {
            bail!("{kind} {n} not found{}", scope_suffix(kind, scope));
        }
    }
    Ok(match output {
        Output::Json | Output::Yaml => {
            let value = if name.is_some() && items.len() == 1 {
                items[0].to_json()
            } else {
                serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items.iter().map(AnyResource::to_json).collect::<Vec<_>>()})
            };
            if output == Output::Json {
                serde_json::to_string_pretty(&value)? + "\n"
            } else {
                serde_norway::to_string(&value)?
            }
        }
        Output::Table | Output::Wide => render_table(kind, &items, output == Output::Wide),
    })
}

fn scope_suffix(kind: &str, scope: &Scope) -> String {
    match (AnyResource::namespaced(kind), scope) {
        (Some(true), Scope::Namespace(ns)) => format!(" in namespace {ns}"),
        _ => String::new(),
    }
}

fn render_table(kind: &str, items: &[AnyResource], wide: bool) -> String {
    let namespaced = AnyResource::namespaced(kind) == Some(true);
    let mut t = Table::default();
    let mut header = Vec::new();
    if namespaced {
        header.push("NAMESPACE".to_string());
    }
    header.push("NAME".to_string());
    // Every item of a listing has the same kind, so the first one's columns name the header.
    let mut rows = Vec::new();
    for r in items {
        let mut row = Vec::new();
        if namespaced {
            row.push(
                r.metadata()
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
            );
        }
        row.push(r.metadata().name.clone());
        let cols = columns(r, wide);
        if rows.is_empty() {
            header.extend(cols.iter().map(|(h, _)| h.to_string()));
        }
        row.extend(cols.into_iter().map(|(_, v)| v));
        rows.push(row);
    }
    t.header(header);
    for r in rows {
        t.row(r);
    }
    t.render()
}

/// Kind-specific columns of one resource: (header, value).
fn columns(r: &AnyResource, wide: bool) -> Vec<(&'static str, String)> {
    let mut c = Vec::new();
    match r {
        AnyResource::IpPool(p) => {
            c.push(("CIDR", p.spec.cidr.to_string()));
            c.push(("BLOCKSIZE", p.spec.block_size().to_string()));
            c.push(("VXLAN", format!("{:?}", p.spec.vxlan_mode)));
            c.push(("IPIP", format!("{:?}", p.spec.ipip_mode)));
            c.push(("NAT", p.spec.nat_outgoing.to_string()));
            c.push(("DISABLED", p.spec.disabled.to_string()));
            if wide {
                c.push((
                    "SELECTOR",
                    if p.spec.node_selector.is_empty() {
                        "all()".into()
                    } else {
                        p.spec.node_selector.clone()
                    },
                ));
            }
        }
        AnyResource::Node(n) => {
            c.push((
                "IPV4",
                n.spec.ipv4().map(|a| a.to_string()).unwrap_or_default(),
            ));
            if wide {
                let asn = n
                    .spec
                    .bgp
                    .as_ref()
                    .and_then(|b| b.as_number)
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                c.push(("ASN", asn));
                c.push((
                    "VTEP",
                    n.spec
                        .ipv4_vxlan_tunnel_addr
                        .map(|a| a.to_string())
                        .unwrap_or_default(),
                ));
            }
        }
        AnyResource::IpamBlock(b) => {
            c.push(("CIDR", b.spec.cidr.to_string()));
            c.push(("NODE", b.spec.affine_node().unwrap_or("").to_string()));
            c.push((
                "ALLOCATED",
                format!("{}/{}", b.spec.allocations.len(), b.spec.size()),
            ));
        }
        AnyResource::WorkloadEndpoint(w) => {
            c.push(("NODE", w.spec.node.clone()));
            c.push((
                "IPS",
                w.spec
                    .ip_networks
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ));
            c.push(("INTERFACE", w.spec.interface_name.clone()));
            if wide {
                c.push(("CONTAINER", w.spec.container_id.clone()));
                c.push(("HANDLE", w.spec.handle_id.clone()));
            }
        }
        AnyResource::IpamHandle(h) => {
            c.push((
                "BLOCKS",
                h.spec
                    .blocks
                    .iter()
                    .map(|(b, n)| format!("{b}:{n}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ));
        }
        AnyResource::BlockAffinity(a) => {
            c.push(("NODE", a.spec.node.clone()));
            c.push(("CIDR", a.spec.cidr.to_string()));
        }
        _ => {}
    }
    c
}

/// Deletes one object. Refuses to delete a pool whose addresses are still in use unless `force`.
pub async fn delete(
    ds: &dyn Datastore,
    kind: &str,
    name: &str,
    scope: &Scope,
    force: bool,
) -> anyhow::Result<()> {
    let items = list(ds, kind, scope).await?;
    let Some(r) = items.into_iter().find(|r| r.metadata().name == name) else {
        bail!("{kind} {name} not found{}", scope_suffix(kind, scope));
    };
    if !AnyResource::user_managed(kind) {
        bail!("{kind} objects are managed by Trellis IPAM; use `trellisctl ipam release` or `ipam gc`");
    }
    if let AnyResource::IpPool(p) = &r {
        let in_use = pool_allocations(ds, &p.spec).await?;
        if in_use > 0 && !force {
            bail!(
                "IPPool {name} still has {in_use} allocated addresses; set `disabled: true`, move the pods off it, \
                 or pass --force to delete it anyway"
            );
        }
    }
    let key = r.key();
    let rev = r
        .metadata()
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok());
    ds.delete(&key, rev).await?;
    Ok(())
}

async fn pool_allocations(ds: &dyn Datastore, pool: &IpPoolSpec) -> anyhow::Result<usize> {
    let (blocks, _) =
        codec::list::<trellis_datastore::Object<IpamBlockSpec>>(ds, keys::IPAM_BLOCKS).await?;
    Ok(blocks
        .iter()
        .filter(|b| pool.cidr.contains(&b.value.spec.cidr))
        .map(|b| b.value.spec.allocations.len())
        .sum())
}
