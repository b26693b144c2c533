//! SCTP sockets of the one-to-one (`SOCK_STREAM`) style, RFC 6458 section 4: they connect,
//! listen and accept like TCP sockets, so once created they are driven as tokio `TcpSocket`s.
//! std and tokio pick the protocol themselves; socket2 creates the socket with IPPROTO_SCTP.

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpSocket;

/// IPPROTO_SCTP (RFC 4960; include/uapi/linux/in.h).
const IPPROTO_SCTP: i32 = 132;
/// What `socket(2)` fails with on a kernel without SCTP (Linux errno).
const EPROTONOSUPPORT: i32 = 93;

/// A non-blocking one-to-one SCTP socket; `Protocol not supported` on a kernel without SCTP.
pub fn stream_socket(v4: bool) -> std::io::Result<TcpSocket> {
    let domain = if v4 { Domain::IPV4 } else { Domain::IPV6 };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::from(IPPROTO_SCTP)))?;
    socket.set_nonblocking(true)?;
    Ok(TcpSocket::from_std_stream(std::net::TcpStream::from(
        socket,
    )))
}

/// Whether `e` says the kernel has no SCTP at all.
pub fn unsupported(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(EPROTONOSUPPORT)
}
