//! Kernel access for wiring, behind two narrow object-safe traits (STYLE 4): [`Namespaces`]
//! hands out a [`Netns`] per namespace; the real ones ([`Host`]) run each namespace's work on its
//! own thread ([`super::netns`]) over one rtnetlink socket, the fake one (tests) is in memory.

use std::fs::{self, File};
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use futures::StreamExt;
use netlink_packet_route::RouteNetlinkMessage;
use nix::errno::Errno;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::Handle;
use tokio::runtime::{self, Runtime};

use super::error::{Side, WiringError};
use super::netns::{NetnsThread, Pending};
use super::observe::{parse_link, Link, Observed};
use super::plan::{self, Request, Sysctl};

/// Work inside one network namespace. Every call returns at once; [`Pending::wait`] collects
/// the answer, so the node and the pod namespace can work at the same time.
pub(crate) trait Netns {
    /// "node netns /run/netns/x", for messages.
    fn label(&self) -> &str;
    /// The interface called `name`, if any.
    fn link(&mut self, name: &str) -> Pending<Option<Link>>;
    /// Sends all requests back to back, then reads all answers; fails with the first request
    /// that failed (requests after it have still been sent).
    fn apply(&mut self, requests: Vec<Request>) -> Pending<()>;
    /// Addresses, main-table routes and permanent neighbours of interface `index`.
    fn observe(&mut self, index: u32) -> Pending<Observed>;
    fn write_sysctls(&mut self, sysctls: Vec<Sysctl>) -> Pending<()>;
    /// Each path's trimmed content, `None` if unreadable.
    fn read_sysctls(&mut self, paths: Vec<String>) -> Pending<Vec<Option<String>>>;
}

/// Where namespaces come from.
pub(crate) trait Namespaces {
    /// Starts working in `netns` (`None`: the caller's namespace). Failing to enter it shows up
    /// as the error of the first call.
    fn enter(&self, netns: Option<&Path>, side: Side) -> Box<dyn Netns>;
    /// A file descriptor of `netns`, for `IFLA_NET_NS_FD`.
    fn open(&self, netns: &Path) -> Result<OwnedFd, WiringError>;
}

/// The real namespaces of this machine.
#[derive(Debug)]
pub(crate) struct Host;

impl Namespaces for Host {
    fn enter(&self, netns: Option<&Path>, side: Side) -> Box<dyn Netns> {
        let label = match netns {
            Some(path) => format!("{side} {}", path.display()),
            None => format!("{side} (the caller's)"),
        };
        let thread = NetnsThread::spawn(netns, label.clone(), {
            let label = label.clone();
            move || {
                Kernel::open().map_err(|e| WiringError::Thread {
                    netns: label,
                    reason: format!("cannot open a netlink socket: {e}"),
                })
            }
        });
        Box::new(ThreadNetns { label, thread })
    }

    fn open(&self, netns: &Path) -> Result<OwnedFd, WiringError> {
        File::open(netns)
            .map(OwnedFd::from)
            .map_err(|source| WiringError::OpenNetns {
                path: netns.to_path_buf(),
                source,
            })
    }
}

/// A netlink socket and the single-threaded runtime driving it, living on a namespace's thread.
struct Kernel {
    runtime: Runtime,
    handle: Handle,
}

impl Kernel {
    fn open() -> io::Result<Kernel> {
        let runtime = runtime::Builder::new_current_thread().enable_io().build()?;
        let handle = runtime.block_on(async {
            let (connection, handle, _) = rtnetlink::new_connection()?;
            tokio::spawn(connection);
            Ok::<_, io::Error>(handle)
        })?;
        Ok(Kernel { runtime, handle })
    }

    /// Writes every request before reading any answer. Each result holds the request's reply
    /// messages, or the kernel's error.
    fn exchange(&mut self, requests: &[Request]) -> Vec<Result<Vec<RouteNetlinkMessage>, Errno>> {
        let handle = &mut self.handle;
        self.runtime.block_on(async {
            let mut streams = Vec::with_capacity(requests.len());
            for request in requests {
                let mut message = NetlinkMessage::from(request.message.clone());
                message.header.flags = request.flags;
                streams.push(handle.request(message));
            }
            let mut results = Vec::with_capacity(streams.len());
            for stream in streams {
                let Ok(mut stream) = stream else {
                    results.push(Err(Errno::ECONNRESET));
                    continue;
                };
                let mut replies = Vec::new();
                let mut error = None;
                while let Some(message) = stream.next().await {
                    match message.payload {
                        NetlinkPayload::InnerMessage(reply) => replies.push(reply),
                        NetlinkPayload::Error(e) if e.code.is_some() => {
                            error = Some(Errno::from_raw(e.raw_code().abs()))
                        }
                        _ => {}
                    }
                }
                results.push(error.map_or(Ok(replies), Err));
            }
            results
        })
    }
}

struct ThreadNetns {
    label: String,
    thread: NetnsThread<Kernel>,
}

fn netlink_error(label: &str, request: &Request, errno: Errno) -> WiringError {
    WiringError::Netlink {
        netns: label.to_owned(),
        step: request.step.clone(),
        source: io::Error::from(errno),
    }
}

impl Netns for ThreadNetns {
    fn label(&self) -> &str {
        &self.label
    }

    fn link(&mut self, name: &str) -> Pending<Option<Link>> {
        let label = self.label.clone();
        let request = plan::get_link(name);
        self.thread.call(move |kernel| {
            let result = kernel.exchange(std::slice::from_ref(&request)).remove(0);
            match result {
                Ok(replies) => Ok(replies.iter().find_map(|reply| match reply {
                    RouteNetlinkMessage::NewLink(link) => Some(parse_link(link)),
                    _ => None,
                })),
                Err(Errno::ENODEV) => Ok(None),
                Err(errno) => Err(netlink_error(&label, &request, errno)),
            }
        })
    }

    fn apply(&mut self, requests: Vec<Request>) -> Pending<()> {
        let label = self.label.clone();
        self.thread.call(move |kernel| {
            let results = kernel.exchange(&requests);
            for (request, result) in requests.iter().zip(results) {
                match result {
                    Ok(_) => {}
                    Err(errno) if request.tolerate.contains(&errno) => {}
                    Err(errno) => return Err(netlink_error(&label, request, errno)),
                }
            }
            Ok(())
        })
    }

    fn observe(&mut self, index: u32) -> Pending<Observed> {
        let label = self.label.clone();
        self.thread.call(move |kernel| {
            let requests = plan::dumps();
            let mut messages = Vec::new();
            for (request, result) in requests.iter().zip(kernel.exchange(&requests)) {
                messages.extend(result.map_err(|errno| netlink_error(&label, request, errno))?);
            }
            Ok(Observed::of(index, &messages))
        })
    }

    fn write_sysctls(&mut self, sysctls: Vec<Sysctl>) -> Pending<()> {
        let label = self.label.clone();
        // On the namespace's thread: /proc/sys/net is that of the thread opening the file.
        self.thread.call(move |_| {
            for sysctl in &sysctls {
                fs::write(&sysctl.path, sysctl.value).map_err(|source| WiringError::Sysctl {
                    netns: label.clone(),
                    path: sysctl.path.clone(),
                    source,
                })?;
            }
            Ok(())
        })
    }

    fn read_sysctls(&mut self, paths: Vec<String>) -> Pending<Vec<Option<String>>> {
        self.thread.call(move |_| {
            Ok(paths
                .iter()
                .map(|path| fs::read_to_string(path).ok().map(|v| v.trim().to_owned()))
                .collect())
        })
    }
}
