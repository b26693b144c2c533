//! The kernel side of the VXLAN manager.
//!
//! ```text
//!  VxlanDesired ──► VxlanExecutor ── DeltaTracker per kind (neighbours, fdb, routes) + device plan
//!                        │  vxlan_msg (pure): Request { RouteNetlinkMessage, flags }, parse_*
//!                        ▼
//!                  dyn VxlanNetlink ── RtNetlink (rtnetlink::Handle: the only I/O) | fake in tests
//! ```
//!
//! On the first pass, and after any failed write ("needs resync"), the executor READS the device,
//! its permanent ARP and FDB entries and our main-table routes into the trackers, then sends only
//! the pending updates and deletions. Nothing is flushed, and nothing it does not own is looked at:
//! routes of other protocols or on other devices, ARP entries the kernel learnt, other links.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use ipnet::IpNet;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::address::AddressMessage;
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::packet_route::neighbour::NeighbourMessage;
use rtnetlink::packet_route::route::RouteMessage;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, RouteMessageBuilder};

use super::delta::DeltaTracker;
use super::vxlan::{MacAddr, VxlanDesired, VxlanDeviceSpec, VxlanFamily};
use super::vxlan_msg::{
    add_address, add_fdb, add_neighbour, add_route, create_link, delete_address, delete_fdb,
    delete_link, delete_neighbour, delete_route, modify_link, parse_address, parse_fdb, parse_link,
    parse_neighbour, parse_route, plan_device, DeviceAction, KernelEntries, ObservedDevice,
    Request,
};
use super::DataplaneError;

/// errno values a delete of something already gone returns.
const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const ENODEV: i32 = 19;
const EADDRNOTAVAIL: i32 = 99;

// ---------------------------------------------------------------------------------------------
// Kernel access.

/// The narrow kernel interface the executor needs (object safe; a fake stands in for unit tests).
#[async_trait]
pub trait VxlanNetlink: Send {
    /// The link called `name` with its addresses, or `None`.
    async fn read_device(&mut self, name: &str)
        -> Result<Option<ObservedDevice>, rtnetlink::Error>;
    /// Our ARP/NDP entries (of `family`), FDB entries and routes (of `family`) on link `index`
    /// (see the `parse_*` functions).
    async fn read_entries(
        &mut self,
        index: u32,
        family: VxlanFamily,
    ) -> Result<KernelEntries, rtnetlink::Error>;
    async fn send(&mut self, request: &Request) -> Result<(), rtnetlink::Error>;
}

/// [`VxlanNetlink`] over an rtnetlink connection (in whatever netns its socket was opened).
#[derive(Debug, Clone)]
pub struct RtNetlink {
    handle: Handle,
}

impl RtNetlink {
    pub fn new(handle: Handle) -> Self {
        Self { handle }
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

fn is_gone(e: &rtnetlink::Error) -> bool {
    match e {
        rtnetlink::Error::NetlinkError(m) => {
            matches!(-m.raw_code(), ENOENT | ESRCH | ENODEV | EADDRNOTAVAIL)
        }
        _ => false,
    }
}

impl RtNetlink {
    /// The link called `name` and its addresses (IPv6 link-local ones included), or `None`.
    pub(super) async fn read_link(
        &self,
        name: &str,
    ) -> Result<Option<(LinkMessage, Vec<IpNet>)>, rtnetlink::Error> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        let msg = match links.try_next().await {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(None),
            Err(e) if is_gone(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let index = msg.header.index;
        let addrs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await?;
        let addresses = addrs
            .iter()
            .filter_map(parse_address)
            .filter(|(i, _)| *i == index)
            .map(|(_, n)| n)
            .collect();
        Ok(Some((msg, addresses)))
    }
}

#[async_trait]
impl VxlanNetlink for RtNetlink {
    async fn read_device(
        &mut self,
        name: &str,
    ) -> Result<Option<ObservedDevice>, rtnetlink::Error> {
        let Some((msg, addresses)) = self.read_link(name).await? else {
            return Ok(None);
        };
        let mut dev = parse_link(&msg);
        dev.addresses = addresses;
        Ok(Some(dev))
    }

    async fn read_entries(
        &mut self,
        index: u32,
        family: VxlanFamily,
    ) -> Result<KernelEntries, rtnetlink::Error> {
        let mut out = KernelEntries::default();
        let (af, route_dump) = match family {
            VxlanFamily::V4 => (
                AddressFamily::Inet,
                RouteMessageBuilder::<Ipv4Addr>::new().build(),
            ),
            VxlanFamily::V6 => (
                AddressFamily::Inet6,
                RouteMessageBuilder::<Ipv6Addr>::new().build(),
            ),
        };
        let neigh: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(af)
            .execute()
            .try_collect()
            .await?;
        out.neighbours = neigh
            .iter()
            .filter_map(|m| parse_neighbour(m, index))
            .collect();
        let fdb: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute()
            .try_collect()
            .await?;
        out.fdb = fdb.iter().filter_map(|m| parse_fdb(m, index)).collect();
        let routes: Vec<RouteMessage> = self
            .handle
            .route()
            .get(route_dump)
            .execute()
            .try_collect()
            .await?;
        out.routes = routes
            .iter()
            .filter_map(|m| parse_route(m, index))
            .collect();
        Ok(out)
    }

    async fn send(&mut self, request: &Request) -> Result<(), rtnetlink::Error> {
        let mut msg = NetlinkMessage::from(request.message.clone());
        msg.header.flags = request.flags;
        let mut answers = self.handle.request(msg)?;
        while let Some(answer) = answers.next().await {
            // An ACK is an error message without a code.
            if let NetlinkPayload::Error(e) = answer.payload {
                if e.code.is_some() {
                    return Err(rtnetlink::Error::NetlinkError(e));
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The executor.

/// What the last pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// The pass read the kernel state first.
    pub resynced: bool,
    /// Requests sent (successful or not).
    pub writes: usize,
    pub failures: usize,
}

/// Desired state in, minimal netlink writes out.
#[derive(Debug)]
pub struct VxlanExecutor {
    family: VxlanFamily,
    name: String,
    device: Option<VxlanDeviceSpec>,
    observed: Option<ObservedDevice>,
    neighbours: DeltaTracker<IpAddr, MacAddr>,
    fdb: DeltaTracker<MacAddr, Ipv4Addr>,
    routes: DeltaTracker<IpNet, IpAddr>,
    needs_resync: bool,
    last_stats: ApplyStats,
}

impl Default for VxlanExecutor {
    fn default() -> Self {
        Self::new()
    }
}

/// Write outcomes of one pass (shared with the direct-route manager).
pub(super) struct Pass {
    pub(super) stats: ApplyStats,
    first_error: Option<DataplaneError>,
}

impl Pass {
    pub(super) fn new() -> Self {
        Self {
            stats: ApplyStats::default(),
            first_error: None,
        }
    }

    /// Sends `req`; a failure is logged and remembered, and the pass goes on with the rest.
    async fn send(&mut self, nl: &mut dyn VxlanNetlink, req: Request) -> bool {
        let result = nl.send(&req).await;
        self.record(req, result)
    }

    /// Counts a write and its result; a delete of something already gone is a success.
    pub(super) fn record(&mut self, req: Request, result: Result<(), rtnetlink::Error>) -> bool {
        self.stats.writes += 1;
        match result {
            Ok(()) => {
                tracing::debug!(what = %req.what, "dataplane write");
                true
            }
            Err(e) if req.is_delete() && is_gone(&e) => true,
            Err(e) => {
                tracing::warn!(what = %req.what, error = %e, "dataplane write failed");
                self.stats.failures += 1;
                self.first_error.get_or_insert(DataplaneError::Write {
                    what: req.what,
                    source: e,
                });
                false
            }
        }
    }

    /// The pass's result: `result` if the pass itself failed, else the failed writes, if any.
    pub(super) fn finish(
        &mut self,
        result: Result<(), DataplaneError>,
    ) -> Result<(), DataplaneError> {
        match (result, self.first_error.take()) {
            (Err(e), _) => Err(e),
            (Ok(()), None) => Ok(()),
            (Ok(()), Some(first)) => Err(DataplaneError::Writes {
                failed: self.stats.failures,
                attempted: self.stats.writes,
                first: Box::new(first),
            }),
        }
    }
}

impl VxlanExecutor {
    /// An executor for the IPv4 device `vxlan.trellis` that resyncs on its first pass.
    pub fn new() -> Self {
        Self::for_family(VxlanFamily::V4)
    }

    /// An executor for the device of `family` that resyncs on its first pass.
    pub fn for_family(family: VxlanFamily) -> Self {
        Self {
            family,
            name: family.device().to_string(),
            device: None,
            observed: None,
            neighbours: DeltaTracker::new(),
            fdb: DeltaTracker::new(),
            routes: DeltaTracker::new(),
            needs_resync: true,
            last_stats: ApplyStats::default(),
        }
    }

    pub fn set_desired(&mut self, d: &VxlanDesired) {
        self.device = d.device.clone();
        self.neighbours.replace_all_desired(d.neighbours.clone());
        self.fdb.replace_all_desired(d.fdb.clone());
        self.routes.replace_all_desired(d.routes.clone());
    }

    /// Reads the kernel again on the next pass (e.g. on a periodic timer).
    pub fn request_resync(&mut self) {
        self.needs_resync = true;
    }

    pub fn needs_resync(&self) -> bool {
        self.needs_resync
    }

    pub fn last_stats(&self) -> ApplyStats {
        self.last_stats
    }

    /// Permanent ARP entries: remote VTEP IP -> MAC.
    pub fn neighbours(&self) -> &DeltaTracker<IpAddr, MacAddr> {
        &self.neighbours
    }

    /// FDB entries: remote VTEP MAC -> underlay IP.
    pub fn fdb(&self) -> &DeltaTracker<MacAddr, Ipv4Addr> {
        &self.fdb
    }

    /// Routes: block -> via remote VTEP IP.
    pub fn routes(&self) -> &DeltaTracker<IpNet, IpAddr> {
        &self.routes
    }

    /// The device as last read or written.
    pub fn observed_device(&self) -> Option<&ObservedDevice> {
        self.observed.as_ref()
    }

    pub fn has_pending_work(&self) -> bool {
        self.needs_resync
            || plan_device(self.device.as_ref(), self.observed.as_ref()) != DeviceAction::Nothing
            || !self.neighbours.in_sync()
            || !self.fdb.in_sync()
            || !self.routes.in_sync()
    }

    /// One reconcile pass. Any failure leaves "needs resync" set, so the next pass starts by
    /// reading the kernel again and retries what is still missing.
    pub async fn apply(&mut self, nl: &mut dyn VxlanNetlink) -> Result<(), DataplaneError> {
        let mut pass = Pass::new();
        let result = self.apply_pass(nl, &mut pass).await;
        self.last_stats = pass.stats;
        let result = pass.finish(result);
        if result.is_err() {
            self.needs_resync = true;
        }
        result
    }

    async fn resync(&mut self, nl: &mut dyn VxlanNetlink) -> Result<(), DataplaneError> {
        let observed = nl
            .read_device(&self.name)
            .await
            .map_err(|source| DataplaneError::Read {
                what: format!("the link {}", self.name),
                source,
            })?;
        match &observed {
            Some(o) => self.load_entries(nl, o.index).await?,
            None => self.forget_entries(),
        }
        self.observed = observed;
        self.needs_resync = false;
        Ok(())
    }

    /// Reads our neighbours, FDB entries and routes on link `index` into the trackers.
    async fn load_entries(
        &mut self,
        nl: &mut dyn VxlanNetlink,
        index: u32,
    ) -> Result<(), DataplaneError> {
        let entries = nl
            .read_entries(index, self.family)
            .await
            .map_err(|source| DataplaneError::Read {
                what: format!("neighbours, fdb and routes of {}", self.name),
                source,
            })?;
        self.neighbours.replace_all_dataplane(entries.neighbours);
        self.fdb.replace_all_dataplane(entries.fdb);
        self.routes.replace_all_dataplane(entries.routes);
        Ok(())
    }

    /// The kernel drops every neighbour, FDB entry and route of a link with the link.
    fn forget_entries(&mut self) {
        self.neighbours.replace_all_dataplane([]);
        self.fdb.replace_all_dataplane([]);
        self.routes.replace_all_dataplane([]);
    }

    async fn create_device(
        &mut self,
        nl: &mut dyn VxlanNetlink,
        pass: &mut Pass,
        d: &VxlanDeviceSpec,
    ) -> Result<(), DataplaneError> {
        if !pass.send(nl, create_link(d)).await {
            return Err(pass.first_error.take().expect("a failed send is recorded"));
        }
        self.observed =
            nl.read_device(&self.name)
                .await
                .map_err(|source| DataplaneError::Read {
                    what: format!("the link {} just created", self.name),
                    source,
                })?;
        Ok(())
    }

    async fn apply_device(
        &mut self,
        nl: &mut dyn VxlanNetlink,
        pass: &mut Pass,
    ) -> Result<(), DataplaneError> {
        let mut created = false;
        // Create, then fix what creation could not set (the address): at most three rounds.
        for _ in 0..3 {
            let action = plan_device(self.device.as_ref(), self.observed.as_ref());
            match action {
                DeviceAction::Nothing => return Ok(()),
                DeviceAction::Delete { index } => {
                    tracing::info!(device = %self.name, "no pool uses VXLAN: deleting the device");
                    if !pass.send(nl, delete_link(index, &self.name)).await {
                        return Ok(());
                    }
                    self.observed = None;
                    self.forget_entries();
                }
                DeviceAction::Create | DeviceAction::Recreate { .. } => {
                    let d = self
                        .device
                        .clone()
                        .expect("create implies a desired device");
                    if let DeviceAction::Recreate { index, reason } = action {
                        if created {
                            return Err(DataplaneError::DeviceMismatch {
                                name: self.name.clone(),
                                reason,
                            });
                        }
                        tracing::info!(device = %self.name, %reason, "recreating the device");
                        if !pass.send(nl, delete_link(index, &self.name)).await {
                            return Ok(());
                        }
                        self.observed = None;
                    } else {
                        tracing::info!(device = %self.name, "creating the device");
                    }
                    self.forget_entries();
                    self.create_device(nl, pass, &d).await?;
                    created = true;
                }
                DeviceAction::Modify {
                    index,
                    link,
                    add_address: new_address,
                    remove_addresses,
                } => {
                    let d = self
                        .device
                        .clone()
                        .expect("modify implies a desired device");
                    let mut ok = true;
                    if link {
                        let changed = pass.send(nl, modify_link(index, &d)).await;
                        if changed {
                            // A new MAC makes the kernel flush the link's ARP entries, permanent
                            // ones included (NETDEV_CHANGEADDR -> neigh_changeaddr): read back
                            // what is left instead of trusting the trackers.
                            self.load_entries(nl, index).await?;
                        }
                        ok &= changed;
                    }
                    for net in remove_addresses {
                        ok &= pass.send(nl, delete_address(index, net, &self.name)).await;
                    }
                    if let Some(net) = new_address {
                        ok &= pass.send(nl, add_address(index, net, &self.name)).await;
                    }
                    if !ok {
                        return Ok(());
                    }
                    if let Some(o) = &mut self.observed {
                        o.mtu = Some(d.mtu);
                        o.mac = Some(d.mac);
                        o.up = true;
                        o.addresses.retain(|a| !self.family.has_net(a));
                        o.addresses.push(IpNet::from(d.address));
                    }
                }
            }
        }
        Ok(())
    }

    async fn apply_pass(
        &mut self,
        nl: &mut dyn VxlanNetlink,
        pass: &mut Pass,
    ) -> Result<(), DataplaneError> {
        if self.needs_resync {
            self.resync(nl).await?;
            pass.stats.resynced = true;
        }
        self.apply_device(nl, pass).await?;
        if self.device.is_none() {
            return Ok(());
        }
        let Some(index) = self.observed.as_ref().map(|o| o.index) else {
            return Ok(());
        };

        // Deletions first, routes before the ARP/FDB entries they lead to.
        let stale: Vec<(IpNet, IpAddr)> = self
            .routes
            .pending_deletions()
            .map(|k| (*k, self.routes.dataplane()[k]))
            .collect();
        for (block, via) in stale {
            if pass.send(nl, delete_route(index, block, via)).await {
                self.routes.mark_applied_deletion(&block);
            }
        }
        let stale: Vec<(MacAddr, Ipv4Addr)> = self
            .fdb
            .pending_deletions()
            .map(|k| (*k, self.fdb.dataplane()[k]))
            .collect();
        for (mac, dst) in stale {
            if pass
                .send(nl, delete_fdb(index, mac, dst, self.family))
                .await
            {
                self.fdb.mark_applied_deletion(&mac);
            }
        }
        let stale: Vec<(IpAddr, MacAddr)> = self
            .neighbours
            .pending_deletions()
            .map(|k| (*k, self.neighbours.dataplane()[k]))
            .collect();
        for (ip, mac) in stale {
            if pass.send(nl, delete_neighbour(index, ip, mac)).await {
                self.neighbours.mark_applied_deletion(&ip);
            }
        }

        // Then additions: ARP and FDB before the routes that use them.
        let todo: Vec<(IpAddr, MacAddr)> = self
            .neighbours
            .pending_updates()
            .map(|(k, v)| (*k, *v))
            .collect();
        for (ip, mac) in todo {
            if pass.send(nl, add_neighbour(index, ip, mac)).await {
                self.neighbours.mark_applied_update(&ip);
            }
        }
        let todo: Vec<(MacAddr, Ipv4Addr)> =
            self.fdb.pending_updates().map(|(k, v)| (*k, *v)).collect();
        for (mac, dst) in todo {
            if pass.send(nl, add_fdb(index, mac, dst, self.family)).await {
                self.fdb.mark_applied_update(&mac);
            }
        }
        let todo: Vec<(IpNet, IpAddr)> = self
            .routes
            .pending_updates()
            .map(|(k, v)| (*k, *v))
            .collect();
        for (block, via) in todo {
            let ours = self.routes.dataplane().contains_key(&block);
            if pass.send(nl, add_route(index, block, via, ours)).await {
                self.routes.mark_applied_update(&block);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "vxlan_apply_tests.rs"]
mod tests;
