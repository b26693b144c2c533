//! An in-memory kernel for unit tests of the dataplane managers (VXLAN, direct routes, IPIP): it
//! applies the requests it gets with the same parsers the real reader uses, and records them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use async_trait::async_trait;
use ipnet::IpNet;
use rtnetlink::packet_core::NLM_F_CREATE;
use rtnetlink::packet_route::RouteNetlinkMessage;

use super::direct::parse_direct_route;
use super::direct_apply::RouteNetlink;
use super::ipip_apply::IpipNetlink;
use super::ipip_msg::{parse_ipip_route, parse_tunnel_link, ObservedTunnel};
use super::vxlan_apply::VxlanNetlink;
use super::vxlan_msg::{
    parse_address, parse_fdb, parse_link, parse_neighbour, parse_route, KernelEntries,
    ObservedDevice, Request,
};

#[derive(Debug, Default)]
pub struct FakeNetlink {
    pub device: Option<ObservedDevice>,
    /// Name of `device` (the fake holds one link; reads of other names find nothing).
    pub device_name: String,
    pub entries: KernelEntries,
    pub sent: Vec<Request>,
    pub reads: usize,
    /// Index the next created link gets (then incremented).
    pub next_index: u32,
    /// Requests for which this returns true fail with `RequestFailed`.
    pub fail: Option<fn(&Request) -> bool>,
    /// Direct routes (main table, protocol 80, metric 10) of both families.
    pub direct_routes: BTreeMap<IpNet, IpAddr>,
    /// tunl0, when it exists.
    pub tunnel: Option<ObservedTunnel>,
    /// Our routes on tunl0.
    pub ipip_routes: BTreeMap<IpNet, IpAddr>,
    /// Whether creating an ipip link works; `false` answers EOPNOTSUPP, as a kernel without
    /// the ipip module does.
    pub ipip_supported: bool,
    /// Whether the ipip module is loaded yet: creating tunl0 while it is not loads it, which
    /// makes the kernel's own tunl0 (MTU 1480, down), and the request then answers EEXIST.
    pub ipip_module_loaded: bool,
}

/// An error answer of the kernel with `errno`.
pub fn kernel_error(errno: i32) -> rtnetlink::Error {
    let mut e = rtnetlink::packet_core::ErrorMessage::default();
    e.code = std::num::NonZeroI32::new(-errno);
    rtnetlink::Error::NetlinkError(e)
}

impl FakeNetlink {
    pub fn new() -> Self {
        Self {
            next_index: 10,
            device_name: super::vxlan::VXLAN_DEVICE.to_string(),
            ipip_supported: true,
            ipip_module_loaded: true,
            ..Self::default()
        }
    }

    /// The `what` of every request sent, then forgets them.
    pub fn take_sent(&mut self) -> Vec<String> {
        self.sent.drain(..).map(|r| r.what).collect()
    }

    fn index(&self) -> u32 {
        self.device.as_ref().map_or(0, |d| d.index)
    }
}

#[async_trait]
impl VxlanNetlink for FakeNetlink {
    async fn read_device(
        &mut self,
        name: &str,
    ) -> Result<Option<ObservedDevice>, rtnetlink::Error> {
        self.reads += 1;
        if name != self.device_name {
            return Ok(None);
        }
        Ok(self.device.clone())
    }

    async fn read_entries(
        &mut self,
        index: u32,
        _family: super::vxlan::VxlanFamily,
    ) -> Result<KernelEntries, rtnetlink::Error> {
        assert_eq!(index, self.index(), "entries read for the wrong link");
        Ok(self.entries.clone())
    }

    async fn send(&mut self, request: &Request) -> Result<(), rtnetlink::Error> {
        self.sent.push(request.clone());
        if self.fail.is_some_and(|f| f(request)) {
            return Err(rtnetlink::Error::RequestFailed);
        }
        let idx = self.index();
        match &request.message {
            RouteNetlinkMessage::NewLink(m) if request.flags & NLM_F_CREATE != 0 => {
                let mut dev = parse_link(m);
                if let Some(name) = m.attributes.iter().find_map(|a| match a {
                    rtnetlink::packet_route::link::LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                }) {
                    self.device_name = name;
                }
                dev.index = self.next_index;
                self.next_index += 1;
                self.device = Some(dev);
                self.entries = KernelEntries::default();
            }
            RouteNetlinkMessage::NewLink(m) => {
                let change = parse_link(m);
                let dev = self.device.as_mut().expect("modify of a missing link");
                assert_eq!(change.index, dev.index);
                dev.mtu = change.mtu.or(dev.mtu);
                if change.mac.is_some() && change.mac != dev.mac {
                    // As the kernel does on NETDEV_CHANGEADDR, permanent entries included.
                    self.entries.neighbours.clear();
                }
                dev.mac = change.mac.or(dev.mac);
                dev.up |= change.up;
            }
            RouteNetlinkMessage::DelLink(m) => {
                assert_eq!(m.header.index, idx);
                self.device = None;
                self.entries = KernelEntries::default();
            }
            RouteNetlinkMessage::NewAddress(m) => {
                let (_, net) = parse_address(m).expect("an address");
                let dev = self.device.as_mut().expect("address on a missing link");
                if !dev.addresses.contains(&net) {
                    dev.addresses.push(net);
                }
            }
            RouteNetlinkMessage::DelAddress(m) => {
                let (_, net) = parse_address(m).expect("an address");
                let dev = self.device.as_mut().expect("address on a missing link");
                dev.addresses.retain(|a| *a != net);
            }
            RouteNetlinkMessage::NewNeighbour(m) => {
                if let Some((ip, mac)) = parse_neighbour(m, idx) {
                    self.entries.neighbours.insert(ip, mac);
                } else if let Some((mac, dst)) = parse_fdb(m, idx) {
                    self.entries.fdb.insert(mac, dst);
                } else {
                    panic!("neighbour message the reader would not see: {m:?}");
                }
            }
            RouteNetlinkMessage::DelNeighbour(m) => {
                if let Some((ip, _)) = parse_neighbour(m, idx) {
                    self.entries.neighbours.remove(&ip);
                } else if let Some((mac, _)) = parse_fdb(m, idx) {
                    self.entries.fdb.remove(&mac);
                }
            }
            RouteNetlinkMessage::NewRoute(m) => {
                let (block, via) = parse_route(m, idx).expect("a route the reader would see");
                self.entries.routes.insert(block, via);
            }
            RouteNetlinkMessage::DelRoute(m) => {
                let (block, _) = parse_route(m, idx).expect("a route the reader would see");
                self.entries.routes.remove(&block);
            }
            other => panic!("unexpected request {other:?}"),
        }
        Ok(())
    }
}

#[async_trait]
impl RouteNetlink for FakeNetlink {
    async fn read_direct_routes(&mut self) -> Result<BTreeMap<IpNet, IpAddr>, rtnetlink::Error> {
        self.reads += 1;
        Ok(self.direct_routes.clone())
    }

    async fn send_route(&mut self, request: &Request) -> Result<(), rtnetlink::Error> {
        self.sent.push(request.clone());
        if self.fail.is_some_and(|f| f(request)) {
            return Err(rtnetlink::Error::RequestFailed);
        }
        match &request.message {
            RouteNetlinkMessage::NewRoute(m) => {
                let (block, via) = parse_direct_route(m).expect("a route the reader would see");
                let exclusive = request.flags & rtnetlink::packet_core::NLM_F_EXCL != 0;
                if exclusive && self.direct_routes.contains_key(&block) {
                    return Err(rtnetlink::Error::RequestFailed);
                }
                self.direct_routes.insert(block, via);
            }
            RouteNetlinkMessage::DelRoute(m) => {
                let (block, via) = parse_direct_route(m).expect("a route the reader would see");
                if self.direct_routes.get(&block) == Some(&via) {
                    self.direct_routes.remove(&block);
                }
            }
            other => panic!("unexpected route request {other:?}"),
        }
        Ok(())
    }
}

#[async_trait]
impl IpipNetlink for FakeNetlink {
    async fn read_tunnel(
        &mut self,
        name: &str,
    ) -> Result<Option<ObservedTunnel>, rtnetlink::Error> {
        self.reads += 1;
        assert_eq!(name, super::ipip::IPIP_DEVICE);
        Ok(self.tunnel.clone())
    }

    async fn read_ipip_routes(
        &mut self,
        index: u32,
    ) -> Result<BTreeMap<IpNet, IpAddr>, rtnetlink::Error> {
        assert_eq!(Some(index), self.tunnel.as_ref().map(|t| t.index));
        Ok(self.ipip_routes.clone())
    }

    async fn send_ipip(&mut self, request: &Request) -> Result<(), rtnetlink::Error> {
        self.sent.push(request.clone());
        if self.fail.is_some_and(|f| f(request)) {
            return Err(rtnetlink::Error::RequestFailed);
        }
        let idx = self.tunnel.as_ref().map(|t| t.index);
        match &request.message {
            RouteNetlinkMessage::NewLink(m) if request.flags & NLM_F_CREATE != 0 => {
                if !self.ipip_supported {
                    return Err(kernel_error(95));
                }
                if !self.ipip_module_loaded {
                    self.ipip_module_loaded = true;
                    self.tunnel = Some(ObservedTunnel {
                        index: self.next_index,
                        kind: "ipip".into(),
                        mtu: Some(1480),
                        up: false,
                        addresses: Vec::new(),
                    });
                    self.next_index += 1;
                }
                if self.tunnel.is_some() {
                    return Err(kernel_error(17));
                }
                let mut t = parse_tunnel_link(m);
                t.index = self.next_index;
                self.next_index += 1;
                self.tunnel = Some(t);
            }
            RouteNetlinkMessage::NewLink(m) => {
                let change = parse_tunnel_link(m);
                let t = self.tunnel.as_mut().expect("modify of a missing tunl0");
                assert_eq!(change.index, t.index);
                t.mtu = change.mtu.or(t.mtu);
                t.up |= change.up;
            }
            RouteNetlinkMessage::NewAddress(m) => {
                let (i, net) = parse_address(m).expect("an address");
                let t = self.tunnel.as_mut().expect("address on a missing tunl0");
                assert_eq!(i, t.index);
                if !t.addresses.contains(&net) {
                    t.addresses.push(net);
                }
            }
            RouteNetlinkMessage::DelAddress(m) => {
                let (_, net) = parse_address(m).expect("an address");
                let t = self.tunnel.as_mut().expect("address on a missing tunl0");
                t.addresses.retain(|a| *a != net);
            }
            RouteNetlinkMessage::NewRoute(m) => {
                let (block, via) =
                    parse_ipip_route(m, idx.expect("tunl0")).expect("a route the reader would see");
                let exclusive = request.flags & rtnetlink::packet_core::NLM_F_EXCL != 0;
                if exclusive && self.ipip_routes.contains_key(&block) {
                    return Err(kernel_error(17));
                }
                self.ipip_routes.insert(block, via);
            }
            RouteNetlinkMessage::DelRoute(m) => {
                let (block, via) =
                    parse_ipip_route(m, idx.expect("tunl0")).expect("a route the reader would see");
                if self.ipip_routes.get(&block) == Some(&via) {
                    self.ipip_routes.remove(&block);
                } else {
                    return Err(kernel_error(3));
                }
            }
            other => panic!("unexpected IPIP request {other:?}"),
        }
        Ok(())
    }
}
