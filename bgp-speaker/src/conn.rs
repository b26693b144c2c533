//! TCP for the speaker: the listener, outbound connection attempts, and one task per
//! established connection that frames and decodes what it reads and writes what it is given.
//! These tasks only report to the speaker's owner task; they decide nothing.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use netgauze_bgp_pkt::capabilities::BgpCapability;
use netgauze_bgp_pkt::BgpMessage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::tcp_md5::{set_md5_key, set_min_ttl, SockoptError};
use crate::wire::{frame_len, Decoder, Inbound, WireError};

pub type ConnId = u64;

/// Aborts the task when dropped (STYLE 8: task handles abort on drop).
#[derive(Debug)]
pub struct Task(pub JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Debug)]
pub enum ConnEvent {
    Message(Box<Inbound>),
    /// The peer sent something that resets the session (the NOTIFICATION to send is inside).
    Malformed(WireError),
    /// EOF or a socket error.
    Closed(String),
}

#[derive(Debug)]
pub enum IoEvent {
    Accepted(TcpStream, SocketAddr),
    Connected {
        peer: IpAddr,
        attempt: u64,
        stream: TcpStream,
    },
    ConnectFailed {
        peer: IpAddr,
        attempt: u64,
        error: String,
    },
    Conn {
        peer: IpAddr,
        conn: ConnId,
        event: ConnEvent,
    },
}

/// The speaker's side of one established TCP connection.
#[derive(Debug)]
pub struct Conn {
    pub id: ConnId,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub locally_initiated: bool,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    _reader: Task,
    /// Not aborted on drop: once `tx` is gone it writes what is queued (a NOTIFICATION, say)
    /// and shuts the socket down. Bounded by [`CLOSE_TIMEOUT`].
    _writer: JoinHandle<()>,
}

/// How long a closing connection may take to flush what was queued before it.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

impl Conn {
    pub fn start(
        id: ConnId,
        stream: TcpStream,
        peer: IpAddr,
        ibgp: bool,
        locally_initiated: bool,
        events: mpsc::UnboundedSender<IoEvent>,
    ) -> std::io::Result<Conn> {
        stream.set_nodelay(true)?;
        // On the dual-stack listener an IPv4 session's addresses are ::ffff:a.b.c.d; the
        // local one is our IPv4 next hop, so it must be seen as IPv4.
        let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
        let local = canonical(stream.local_addr()?);
        let remote = canonical(stream.peer_addr()?);
        let (mut rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let ev = events.clone();
        let writer = tokio::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                let write = tokio::time::timeout(
                    CLOSE_TIMEOUT.max(Duration::from_secs(60)),
                    wr.write_all(&bytes),
                );
                let result = match write.await {
                    Ok(r) => r,
                    Err(_) => Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "peer stopped reading",
                    )),
                };
                if let Err(e) = result {
                    let _ = ev.send(IoEvent::Conn {
                        peer,
                        conn: id,
                        event: ConnEvent::Closed(format!("write failed: {e}")),
                    });
                    return;
                }
            }
            // The sender was dropped: the session closed this connection.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, wr.shutdown()).await;
        });
        let reader = tokio::spawn(async move {
            let event = read_loop(&mut rd, ibgp, |inbound| {
                events
                    .send(IoEvent::Conn {
                        peer,
                        conn: id,
                        event: ConnEvent::Message(Box::new(inbound)),
                    })
                    .is_ok()
            })
            .await;
            let _ = events.send(IoEvent::Conn {
                peer,
                conn: id,
                event,
            });
        });
        Ok(Conn {
            id,
            local,
            remote,
            locally_initiated,
            tx,
            _reader: Task(reader),
            _writer: writer,
        })
    }

    pub fn send(&self, bytes: Vec<u8>) {
        let _ = self.tx.send(bytes);
    }
}

async fn read_loop(
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    ibgp: bool,
    mut deliver: impl FnMut(Inbound) -> bool,
) -> ConnEvent {
    let mut decoder = Decoder::new(ibgp);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        loop {
            let len = match frame_len(&buf) {
                Ok(Some(len)) if buf.len() >= len => len,
                Ok(_) => break,
                Err(e) => return ConnEvent::Malformed(e),
            };
            let inbound = match decoder.decode(&buf[..len]) {
                Ok(m) => m,
                Err(e) => return ConnEvent::Malformed(e),
            };
            buf.advance(len);
            // RFC 6793: the peer's OPEN tells whether its AS_PATHs carry 4-octet ASNs (we
            // always send the capability, so the peer's decides).
            if let BgpMessage::Open(open) = &inbound.message {
                let asn4 = open
                    .capabilities()
                    .iter()
                    .any(|c| matches!(c, BgpCapability::FourOctetAs(_)));
                decoder.set_asn4(asn4);
            }
            if !deliver(inbound) {
                return ConnEvent::Closed("speaker gone".into());
            }
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) => return ConnEvent::Closed("connection closed by the peer".into()),
            Ok(_) => {}
            Err(e) => return ConnEvent::Closed(format!("read failed: {e}")),
        }
    }
}

/// How a peer's packets are sent and which are accepted: eBGP multihop and GTSM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TtlMode {
    /// eBGP: TTL 1, so only a directly connected peer is reached (as BIRD and FRR do);
    /// iBGP: TTL 64.
    #[default]
    Default,
    /// eBGP multihop: send with this TTL (the peer is at most this many hops away).
    Multihop(u8),
    /// GTSM (RFC 5082 3): send with TTL 255 and drop what arrives with a TTL below
    /// 256 - `hops` (1 = directly connected).
    Security { hops: u8 },
}

/// The socket options of one peer's connections, derived from its configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct SocketOpts {
    /// RFC 2385 key; on the listener it is set per peer when the peer is added.
    pub md5_key: Option<Vec<u8>>,
    /// TTL (IPv6: unicast hop limit) of what we send.
    pub ttl: u8,
    /// GTSM: the lowest TTL (hop limit) accepted from the peer.
    pub min_ttl: Option<u8>,
}

impl std::fmt::Debug for SocketOpts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never log the key.
        f.debug_struct("SocketOpts")
            .field("md5", &self.md5_key.is_some())
            .field("ttl", &self.ttl)
            .field("min_ttl", &self.min_ttl)
            .finish()
    }
}

impl SocketOpts {
    pub fn new(password: Option<&str>, ttl: TtlMode, ibgp: bool) -> SocketOpts {
        let (ttl, min_ttl) = match ttl {
            TtlMode::Default if ibgp => (64, None),
            TtlMode::Default => (1, None),
            TtlMode::Multihop(n) => (n, None),
            // RFC 5082 3: `hops` 1 accepts only 255, what a directly connected peer sends.
            TtlMode::Security { hops } => (255, Some(255 - hops.saturating_sub(1))),
        };
        SocketOpts {
            md5_key: password.map(|p| p.as_bytes().to_vec()),
            ttl,
            min_ttl,
        }
    }

    /// Sets the TTL options on a socket to or from `peer` (the MD5 key of an accepted
    /// connection comes from the listener). IPv4 peers on a dual-stack socket take the
    /// IPv4 options.
    pub fn apply_ttl(&self, socket: &impl AsFd, peer: IpAddr) -> Result<(), SockoptError> {
        let s = socket2::SockRef::from(socket);
        let set = match peer {
            IpAddr::V4(_) => s.set_ttl_v4(self.ttl.into()),
            IpAddr::V6(_) => s.set_unicast_hops_v6(self.ttl.into()),
        };
        set.map_err(|source| SockoptError::Set {
            option: "TTL",
            peer,
            source,
        })?;
        match self.min_ttl {
            Some(min) => set_min_ttl(socket, peer, min),
            None => Ok(()),
        }
    }
}

/// One outbound attempt; reports `Connected` or `ConnectFailed`.
pub fn connect(
    peer: IpAddr,
    port: u16,
    local: Option<IpAddr>,
    opts: SocketOpts,
    attempt: u64,
    timeout: Duration,
    events: mpsc::UnboundedSender<IoEvent>,
) -> Task {
    Task(tokio::spawn(async move {
        let result = async {
            let socket = match peer {
                IpAddr::V4(_) => TcpSocket::new_v4()?,
                IpAddr::V6(_) => TcpSocket::new_v6()?,
            };
            // The SYN already carries the signature and the TTL: set both before connect.
            if opts.md5_key.is_some() {
                set_md5_key(&socket, peer, opts.md5_key.as_deref())
                    .map_err(std::io::Error::other)?;
            }
            opts.apply_ttl(&socket, peer)
                .map_err(std::io::Error::other)?;
            if let Some(l) = local {
                socket.bind(SocketAddr::new(l, 0))?;
            }
            match tokio::time::timeout(timeout, socket.connect(SocketAddr::new(peer, port))).await {
                Ok(r) => r,
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {timeout:?}"),
                )),
            }
        }
        .await;
        let _ = events.send(match result {
            Ok(stream) => IoEvent::Connected {
                peer,
                attempt,
                stream,
            },
            Err(e) => IoEvent::ConnectFailed {
                peer,
                attempt,
                error: format!("connect to {peer} port {port}: {e}"),
            },
        });
    }))
}

/// The listening socket's accept task, and a second descriptor of the socket through
/// which the owner task sets the per-peer MD5 keys.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
    _task: Task,
}

impl Listener {
    /// Sets (`Some`) or removes (`None`) the RFC 2385 key for connections from `peer`.
    pub fn set_md5_key(&self, peer: IpAddr, key: Option<&[u8]>) -> Result<(), SockoptError> {
        set_md5_key(&self.fd, peer, key)
    }
}

/// Accepts connections forever, reporting each to the owner task.
pub fn listen(
    listener: TcpListener,
    events: mpsc::UnboundedSender<IoEvent>,
) -> std::io::Result<Listener> {
    let fd = listener.as_fd().try_clone_to_owned()?;
    // The SYN-ACK leaves with the listener's TTL, before we know the peer: 255 lets a GTSM
    // peer (RFC 5082) accept it. Accepted sockets then get their peer's TTL.
    let s = socket2::SockRef::from(&listener);
    if s.local_addr()?.is_ipv6() {
        s.set_unicast_hops_v6(255)?;
        if !s.only_v6()? {
            s.set_ttl_v4(255)?;
        }
    } else {
        s.set_ttl_v4(255)?;
    }
    let task = Task(tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, mut remote)) => {
                    // A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
                    if let IpAddr::V6(v6) = remote.ip() {
                        if let Some(v4) = v6.to_ipv4_mapped() {
                            remote.set_ip(IpAddr::V4(v4));
                        }
                    }
                    if events.send(IoEvent::Accepted(stream, remote)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a BGP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }));
    Ok(Listener { fd, _task: task })
}
