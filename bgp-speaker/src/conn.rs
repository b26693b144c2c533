//! TCP for the speaker: the listener, outbound connection attempts, and one task per
//! established connection that frames and decodes what it reads and writes what it is given.
//! These tasks only report to the speaker's owner task; they decide nothing.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use netgauze_bgp_pkt::capabilities::BgpCapability;
use netgauze_bgp_pkt::BgpMessage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

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
        let local = stream.local_addr()?;
        let remote = stream.peer_addr()?;
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

/// One outbound attempt; reports `Connected` or `ConnectFailed`.
pub fn connect(
    peer: IpAddr,
    port: u16,
    local: Option<IpAddr>,
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

/// Accepts connections forever, reporting each to the owner task.
pub fn listen(listener: TcpListener, events: mpsc::UnboundedSender<IoEvent>) -> Task {
    Task(tokio::spawn(async move {
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
    }))
}
