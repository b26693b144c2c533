//! An in-memory kernel with a node and a pod namespace, for unit tests of ADD, DEL and CHECK
//! without root. It understands the messages [`super::plan`] builds, keeps what they configure,
//! and fails chosen steps.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use netlink_packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkInfo};
use netlink_packet_route::RouteNetlinkMessage;
use nix::errno::Errno;

use super::error::{Side, WiringError};
use super::kernel::{Namespaces, Netns};
use super::netns::Pending;
use super::observe::{parse_address, parse_neighbour, parse_route, Link, Observed};
use super::plan::{Request, Sysctl};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FakeLink {
    pub side: Side,
    pub name: String,
    pub index: u32,
    pub veth: bool,
    pub up: bool,
    pub mtu: u32,
    /// Index of the other end (on the other side).
    pub peer: Option<u32>,
}

#[derive(Debug, Default)]
pub(crate) struct World {
    next_index: u32,
    pub links: Vec<FakeLink>,
    /// Addresses, routes and neighbours, as the messages that created them.
    config: Vec<(Side, RouteNetlinkMessage)>,
    pub sysctls: BTreeMap<String, String>,
    /// Every request tried, as "SIDE: STEP" plus " -> ERRNO" when it failed.
    pub log: Vec<String>,
    /// A request on that side whose step contains the text fails with the errno.
    pub failures: Vec<(Side, String, Errno)>,
    /// Namespaces that do not exist.
    pub gone: Vec<Side>,
}

impl World {
    /// Adds an interface; indices are unique across both namespaces and start after `lo`.
    pub fn add_link(&mut self, side: Side, name: &str, veth: bool) -> u32 {
        let index = self.next_index.max(1) + 1;
        self.next_index = index;
        self.links.push(FakeLink {
            side,
            name: name.to_owned(),
            index,
            veth,
            up: true,
            mtu: 1500,
            peer: None,
        });
        index
    }

    pub fn link(&self, side: Side, name: &str) -> Option<&FakeLink> {
        self.links.iter().find(|l| l.side == side && l.name == name)
    }

    /// Removes configuration the way the kernel does when `side`'s interface `index` goes.
    pub fn forget(&mut self, side: Side, index: u32) {
        self.config
            .retain(|(s, message)| *s != side || owner(message) != Some(index));
    }

    /// The messages configured on an interface (for tests that break something).
    pub fn remove_config(&mut self, side: Side, matches: impl Fn(&RouteNetlinkMessage) -> bool) {
        self.config
            .retain(|(s, message)| *s != side || !matches(message));
    }

    pub fn config_count(&self) -> usize {
        self.config.len()
    }

    fn apply(&mut self, side: Side, request: &Request) -> Result<(), Errno> {
        let injected = self
            .failures
            .iter()
            .find(|(s, text, _)| *s == side && request.step.contains(text.as_str()))
            .map(|(_, _, errno)| *errno);
        let result = match injected {
            Some(errno) => Err(errno),
            None => self.interpret(side, &request.message),
        };
        let outcome = match result {
            Ok(()) => String::new(),
            Err(errno) => format!(" -> {errno}"),
        };
        let prefix = match side {
            Side::Node => "node",
            Side::Pod => "pod",
        };
        self.log
            .push(format!("{prefix}: {}{outcome}", request.step));
        result
    }

    fn interpret(&mut self, side: Side, message: &RouteNetlinkMessage) -> Result<(), Errno> {
        match message {
            RouteNetlinkMessage::NewLink(m) => {
                let name = link_name(&m.attributes).ok_or(Errno::EINVAL)?;
                let peer = m.attributes.iter().find_map(|a| match a {
                    LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))) => Some(p.clone()),
                        _ => None,
                    }),
                    _ => None,
                });
                let peer = peer.ok_or(Errno::EOPNOTSUPP)?;
                let peer_name = link_name(&peer.attributes).ok_or(Errno::EINVAL)?;
                let other = match side {
                    Side::Node => Side::Pod,
                    Side::Pod => Side::Node,
                };
                if self.link(side, &name).is_some() || self.link(other, &peer_name).is_some() {
                    return Err(Errno::EEXIST);
                }
                let mtu = mtu(&m.attributes);
                let host = self.add_link(side, &name, true);
                let container = self.add_link(other, &peer_name, true);
                for (index, peer, up, mtu) in [
                    (host, container, m.header.flags.contains(LinkFlags::Up), mtu),
                    (
                        container,
                        host,
                        peer.header.flags.contains(LinkFlags::Up),
                        mtu,
                    ),
                ] {
                    let link = self.links.iter_mut().find(|l| l.index == index).unwrap();
                    link.peer = Some(peer);
                    link.up = up;
                    link.mtu = mtu;
                }
                Ok(())
            }
            RouteNetlinkMessage::SetLink(m) => {
                let link = self
                    .links
                    .iter_mut()
                    .find(|l| l.side == side && l.index == m.header.index)
                    .ok_or(Errno::ENODEV)?;
                if m.header.change_mask.contains(LinkFlags::Up) {
                    link.up = m.header.flags.contains(LinkFlags::Up);
                }
                Ok(())
            }
            RouteNetlinkMessage::DelLink(m) => {
                let name = link_name(&m.attributes).ok_or(Errno::EINVAL)?;
                let link = self.link(side, &name).cloned().ok_or(Errno::ENODEV)?;
                let mut gone = vec![(side, link.index)];
                if let Some(peer) = link.peer {
                    let other = self.links.iter().find(|l| l.index == peer).unwrap();
                    gone.push((other.side, peer));
                }
                for (side, index) in gone {
                    self.links.retain(|l| l.index != index);
                    self.forget(side, index);
                }
                Ok(())
            }
            RouteNetlinkMessage::NewAddress(_)
            | RouteNetlinkMessage::NewRoute(_)
            | RouteNetlinkMessage::NewNeighbour(_) => {
                let index = owner(message).ok_or(Errno::EINVAL)?;
                if !self
                    .links
                    .iter()
                    .any(|l| l.side == side && l.index == index)
                {
                    return Err(Errno::ENODEV);
                }
                let exists = self
                    .config
                    .iter()
                    .any(|(s, m)| *s == side && same_item(m, message));
                if exists && !matches!(message, RouteNetlinkMessage::NewNeighbour(_)) {
                    return Err(Errno::EEXIST);
                }
                self.config.push((side, message.clone()));
                Ok(())
            }
            RouteNetlinkMessage::DelRoute(m) => {
                let (oif, route) = parse_route(m).ok_or(Errno::EINVAL)?;
                let before = self.config.len();
                self.config.retain(|(s, c)| match c {
                    RouteNetlinkMessage::NewRoute(c) if *s == side => {
                        parse_route(c).map(|(i, r)| (i, r.dst)) != Some((oif, route.dst))
                    }
                    _ => true,
                });
                if self.config.len() == before {
                    return Err(Errno::ESRCH);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

fn link_name(attributes: &[LinkAttribute]) -> Option<String> {
    attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.clone()),
        _ => None,
    })
}

fn mtu(attributes: &[LinkAttribute]) -> u32 {
    attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Mtu(mtu) => Some(*mtu),
            _ => None,
        })
        .unwrap_or(1500)
}

/// The interface an address, route or neighbour message belongs to.
fn owner(message: &RouteNetlinkMessage) -> Option<u32> {
    match message {
        RouteNetlinkMessage::NewAddress(m) => parse_address(m).map(|(i, _)| i),
        RouteNetlinkMessage::NewRoute(m) => parse_route(m).map(|(i, _)| i),
        RouteNetlinkMessage::NewNeighbour(m) => Some(m.header.ifindex),
        _ => None,
    }
}

fn same_item(a: &RouteNetlinkMessage, b: &RouteNetlinkMessage) -> bool {
    use RouteNetlinkMessage::{NewAddress, NewNeighbour, NewRoute};
    match (a, b) {
        (NewAddress(a), NewAddress(b)) => parse_address(a) == parse_address(b),
        // A route's key is its destination (in the main table), whatever its device.
        (NewRoute(a), NewRoute(b)) => {
            parse_route(a).map(|(_, r)| r.dst) == parse_route(b).map(|(_, r)| r.dst)
        }
        (NewNeighbour(a), NewNeighbour(b)) => parse_neighbour(a) == parse_neighbour(b),
        _ => false,
    }
}

/// Hands out [`FakeNetns`] over one shared [`World`].
#[derive(Debug, Default, Clone)]
pub(crate) struct FakeNamespaces {
    pub world: Rc<RefCell<World>>,
}

impl Namespaces for FakeNamespaces {
    fn enter(&self, _netns: Option<&Path>, side: Side) -> Box<dyn Netns> {
        Box::new(FakeNetns {
            world: Rc::clone(&self.world),
            side,
            label: format!("{side} fake"),
        })
    }

    fn open(&self, netns: &Path) -> Result<OwnedFd, WiringError> {
        if self.world.borrow().gone.contains(&Side::Pod) {
            return Err(gone(netns.to_path_buf()));
        }
        Ok(OwnedFd::from(
            File::open("/dev/null").expect("/dev/null opens"),
        ))
    }
}

fn gone(path: PathBuf) -> WiringError {
    WiringError::OpenNetns {
        path,
        source: io::Error::from(io::ErrorKind::NotFound),
    }
}

#[derive(Debug)]
pub(crate) struct FakeNetns {
    world: Rc<RefCell<World>>,
    side: Side,
    label: String,
}

impl FakeNetns {
    fn present(&self) -> Result<(), WiringError> {
        match self.world.borrow().gone.contains(&self.side) {
            true => Err(gone(PathBuf::from(&self.label))),
            false => Ok(()),
        }
    }
}

impl Netns for FakeNetns {
    fn label(&self) -> &str {
        &self.label
    }

    fn link(&mut self, name: &str) -> Pending<Option<Link>> {
        let result = self.present().map(|()| {
            self.world.borrow().link(self.side, name).map(|l| Link {
                index: l.index,
                mac: Some([2, 0, 0, 0, 0, l.index as u8]),
                mtu: Some(l.mtu),
                up: l.up,
                veth: l.veth,
            })
        });
        Pending::done(result)
    }

    fn apply(&mut self, requests: Vec<Request>) -> Pending<()> {
        if let Err(e) = self.present() {
            return Pending::done(Err(e));
        }
        let mut world = self.world.borrow_mut();
        let mut first = None;
        for request in &requests {
            match world.apply(self.side, request) {
                Err(errno) if !request.tolerate.contains(&errno) && first.is_none() => {
                    first = Some(WiringError::Netlink {
                        netns: self.label.clone(),
                        step: request.step.clone(),
                        source: io::Error::from(errno),
                    });
                }
                _ => {}
            }
        }
        Pending::done(first.map_or(Ok(()), Err))
    }

    fn observe(&mut self, index: u32) -> Pending<Observed> {
        let world = self.world.borrow();
        let messages: Vec<RouteNetlinkMessage> = world
            .config
            .iter()
            .filter(|(s, _)| *s == self.side)
            .map(|(_, m)| m.clone())
            .collect();
        Pending::done(Ok(Observed::of(index, &messages)))
    }

    fn write_sysctls(&mut self, sysctls: Vec<Sysctl>) -> Pending<()> {
        let mut world = self.world.borrow_mut();
        for sysctl in sysctls {
            world.sysctls.insert(sysctl.path, sysctl.value.to_owned());
        }
        Pending::done(Ok(()))
    }

    fn read_sysctls(&mut self, paths: Vec<String>) -> Pending<Vec<Option<String>>> {
        let world = self.world.borrow();
        Pending::done(Ok(paths
            .iter()
            .map(|p| world.sysctls.get(p).cloned())
            .collect()))
    }
}

/// Whether any link on `side` is a veth called `name`.
pub(crate) fn has_veth(world: &World, side: Side, name: &str) -> bool {
    world.link(side, name).is_some_and(|l| l.veth)
}
