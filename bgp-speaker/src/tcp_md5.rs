//! The two socket options BGP needs that no maintained crate exposes (checked: nix 0.31
//! `sys::socket::sockopt`, socket2 0.6, rustix 1.1): TCP MD5 signatures (RFC 2385,
//! `TCP_MD5SIG`) and the minimum TTL / hop limit of received packets for GTSM (RFC 5082,
//! `IP_MINTTL`, `IPV6_MINHOPCOUNT`). The only `unsafe` of the crate is the one
//! `setsockopt(2)` call below.
#![allow(unsafe_code)]

use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd};

/// `TCP_MD5SIG_MAXKEYLEN` of include/uapi/linux/tcp.h.
pub const MAX_KEY_LEN: usize = 80;

/// `struct __kernel_sockaddr_storage`: 128 bytes, aligned like a pointer
/// (include/uapi/linux/socket.h).
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct SockaddrStorage([u8; 128]);

/// `struct tcp_md5sig` of include/uapi/linux/tcp.h:
/// ```text
/// struct tcp_md5sig {
///     struct __kernel_sockaddr_storage tcpm_addr;
///     __u8  tcpm_flags;      /* only read with TCP_MD5SIG_EXT */
///     __u8  tcpm_prefixlen;  /* only read with TCP_MD5SIG_EXT */
///     __u16 tcpm_keylen;     /* 0 deletes the key of tcpm_addr */
///     int   tcpm_ifindex;    /* only read with TCP_MD5SIG_EXT */
///     __u8  tcpm_key[TCP_MD5SIG_MAXKEYLEN];
/// };
/// ```
#[repr(C)]
struct TcpMd5Sig {
    addr: SockaddrStorage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; MAX_KEY_LEN],
}

#[derive(Debug, thiserror::Error)]
pub enum SockoptError {
    #[error("TCP MD5 key for {peer} is {len} bytes; the kernel takes at most {MAX_KEY_LEN}")]
    KeyTooLong { peer: IpAddr, len: usize },
    #[error("setting {option} for {peer}: {source}")]
    Set {
        option: &'static str,
        peer: IpAddr,
        source: std::io::Error,
    },
}

/// Sets (`Some`) or deletes (`None`) the MD5 key for connections with `peer` on `socket`:
/// a listening socket (one key per peer; accepted connections inherit it) or a socket
/// about to connect. An IPv4 peer on an IPv6 socket is given as its v4-mapped address,
/// which the kernel stores as an IPv4 key (net/ipv6/tcp_ipv6.c, tcp_v6_parse_md5_keys).
/// Deleting a key that is not there is not an error.
pub fn set_md5_key(
    socket: &impl AsFd,
    peer: IpAddr,
    key: Option<&[u8]>,
) -> Result<(), SockoptError> {
    let key = key.unwrap_or_default();
    if key.len() > MAX_KEY_LEN {
        return Err(SockoptError::KeyTooLong {
            peer,
            len: key.len(),
        });
    }
    let v6_socket = socket2::SockRef::from(socket)
        .local_addr()
        .map_err(|source| SockoptError::Set {
            option: "TCP_MD5SIG",
            peer,
            source,
        })?
        .is_ipv6();
    let mut sig = TcpMd5Sig {
        addr: sockaddr(peer, v6_socket),
        flags: 0,
        prefixlen: 0,
        // Fits: at most MAX_KEY_LEN.
        keylen: key.len() as u16,
        ifindex: 0,
        key: [0; MAX_KEY_LEN],
    };
    sig.key[..key.len()].copy_from_slice(key);
    match setsockopt(socket, libc::IPPROTO_TCP, libc::TCP_MD5SIG, &sig) {
        Err(e) if key.is_empty() && e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r.map_err(|source| SockoptError::Set {
            option: "TCP_MD5SIG",
            peer,
            source,
        }),
    }
}

/// GTSM (RFC 5082 3): drop received packets from `peer` whose TTL (hop limit) is below
/// `min`. `peer` picks the option: IPv4 (also v4-mapped on an IPv6 socket) or IPv6.
pub fn set_min_ttl(socket: &impl AsFd, peer: IpAddr, min: u8) -> Result<(), SockoptError> {
    let (level, name, option) = match peer {
        IpAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_MINTTL, "IP_MINTTL"),
        IpAddr::V6(_) => (
            libc::IPPROTO_IPV6,
            libc::IPV6_MINHOPCOUNT,
            "IPV6_MINHOPCOUNT",
        ),
    };
    let value: libc::c_int = min.into();
    setsockopt(socket, level, name, &value).map_err(|source| SockoptError::Set {
        option,
        peer,
        source,
    })
}

/// `sockaddr_in` or `sockaddr_in6` (port 0) in the kernel's byte layout.
fn sockaddr(peer: IpAddr, v6_socket: bool) -> SockaddrStorage {
    let mut s = [0u8; 128];
    match (peer, v6_socket) {
        (IpAddr::V4(a), false) => {
            // sockaddr_in: sin_family (host order), sin_port (network order), sin_addr.
            s[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            s[4..8].copy_from_slice(&a.octets());
        }
        (peer, _) => {
            let a: Ipv6Addr = match peer {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            };
            // sockaddr_in6: sin6_family, sin6_port, sin6_flowinfo, sin6_addr, sin6_scope_id.
            s[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            s[8..24].copy_from_slice(&a.octets());
        }
    }
    SockaddrStorage(s)
}

fn setsockopt<T>(
    socket: &impl AsFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> std::io::Result<()> {
    let fd = socket.as_fd().as_raw_fd();
    // SAFETY: `fd` is borrowed from a live `AsFd`, so it is an open descriptor for the
    // whole call; `value` is a valid, initialised `T` of `size_of::<T>()` bytes that the
    // kernel only reads (copy_from_sockptr) during the call. Every `T` passed here is
    // `repr(C)` with the layout the option expects (see `TcpMd5Sig`, and `c_int`).
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast::<libc::c_void>(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use std::mem::{align_of, offset_of, size_of};
    use std::net::{Ipv4Addr, SocketAddr, TcpListener};

    use super::*;

    /// The layout of include/uapi/linux/tcp.h on every Linux ABI with a 4-byte int: the
    /// kernel rejects an optlen shorter than its struct (216 bytes).
    #[test]
    fn tcp_md5sig_has_the_kernel_layout() {
        assert_eq!(
            size_of::<SockaddrStorage>(),
            size_of::<libc::sockaddr_storage>()
        );
        assert_eq!(
            align_of::<SockaddrStorage>(),
            align_of::<libc::sockaddr_storage>()
        );
        assert_eq!(offset_of!(TcpMd5Sig, flags), 128);
        assert_eq!(offset_of!(TcpMd5Sig, prefixlen), 129);
        assert_eq!(offset_of!(TcpMd5Sig, keylen), 130);
        assert_eq!(offset_of!(TcpMd5Sig, ifindex), 132);
        assert_eq!(offset_of!(TcpMd5Sig, key), 136);
        assert_eq!(size_of::<TcpMd5Sig>(), 216);
        assert_eq!(libc::TCP_MD5SIG_MAXKEYLEN, MAX_KEY_LEN);
    }

    #[test]
    fn sockaddrs_match_the_kernel_byte_layout() {
        let v4 = sockaddr(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), false).0;
        assert_eq!(u16::from_ne_bytes([v4[0], v4[1]]), libc::AF_INET as u16);
        assert_eq!(&v4[2..8], &[0, 0, 10, 0, 0, 1]);
        let mapped = sockaddr(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), true).0;
        assert_eq!(
            u16::from_ne_bytes([mapped[0], mapped[1]]),
            libc::AF_INET6 as u16
        );
        assert_eq!(
            &mapped[8..24],
            &Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped().octets()
        );
        assert!(mapped[24..].iter().all(|b| *b == 0));
    }

    /// No packets: only what the kernel accepts on sockets that never connect.
    #[test]
    fn the_kernel_takes_keys_and_min_ttls_on_real_sockets() {
        let v4 = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        set_md5_key(&v4, peer, Some(b"secret")).unwrap();
        set_md5_key(&v4, peer, None).unwrap();
        // Deleting again: nothing there, still fine.
        set_md5_key(&v4, peer, None).unwrap();
        set_md5_key(&v4, peer, Some(&[b'k'; MAX_KEY_LEN])).unwrap();
        let long = [b'k'; MAX_KEY_LEN + 1];
        assert!(matches!(
            set_md5_key(&v4, peer, Some(&long)),
            Err(SockoptError::KeyTooLong { len: 81, .. })
        ));
        set_min_ttl(&v4, peer, 254).unwrap();

        let Ok(v6) = TcpListener::bind(SocketAddr::from((Ipv6Addr::LOCALHOST, 0))) else {
            return; // no IPv6 loopback here
        };
        set_md5_key(&v6, peer, Some(b"secret")).unwrap();
        set_md5_key(&v6, "2001:db8::1".parse().unwrap(), Some(b"secret")).unwrap();
        set_min_ttl(&v6, "2001:db8::1".parse().unwrap(), 255).unwrap();
    }
}
