//! Many route requests in one netlink datagram: the kernel handles every message of a
//! datagram in order and answers each with its own acknowledgement, so a full table goes in
//! with one `sendto` per few hundred routes instead of one per route (`ip -batch` and BIRD
//! send one at a time). Answers are matched to requests by sequence number.
//!
//! The socket is a plain (blocking) netlink socket, used from the blocking thread pool; it
//! belongs to the network namespace of the thread that opened it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rtnetlink::packet_core::{NetlinkBuffer, NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::msg::{RouteOp, RouteRequest};
use super::NetlinkFailure;

/// Requests per datagram: ~100 bytes each, well inside the default socket buffers.
pub const BATCH: usize = 256;

/// How long to wait for the kernel's answers before giving up on a batch.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct BatchSocket {
    socket: Mutex<Socket>,
    seq: AtomicU32,
}

impl BatchSocket {
    /// Opens a route socket in the calling thread's network namespace.
    pub fn open() -> std::io::Result<Arc<Self>> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // Error answers without a copy of the request: smaller, and we match by sequence.
        socket.set_cap_ack(true)?;
        socket2::SockRef::from(&socket).set_read_timeout(Some(ANSWER_TIMEOUT))?;
        Ok(Arc::new(Self {
            socket: Mutex::new(socket),
            seq: AtomicU32::new(1),
        }))
    }

    /// Sends `requests` (at most [`BATCH`]) in one datagram and returns each one's answer, in
    /// the order of `requests`.
    pub async fn send(
        self: &Arc<Self>,
        requests: &[RouteRequest],
    ) -> Vec<Result<(), NetlinkFailure>> {
        let n = u32::try_from(requests.len()).unwrap_or(u32::MAX);
        let first = self.seq.fetch_add(n.max(1), Ordering::Relaxed);
        let datagram = encode(requests, first);
        let me = self.clone();
        let count = requests.len();
        tokio::task::spawn_blocking(move || me.exchange(&datagram, first, count))
            .await
            .unwrap_or_else(|e| {
                (0..count)
                    .map(|_| Err(failure(format!("netlink batch task failed: {e}"))))
                    .collect()
            })
    }

    fn exchange(
        &self,
        datagram: &[u8],
        first: u32,
        count: usize,
    ) -> Vec<Result<(), NetlinkFailure>> {
        let mut answers: Vec<Option<Result<(), NetlinkFailure>>> = vec![None; count];
        let socket = self.socket.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = socket.send(datagram, 0) {
            let f = NetlinkFailure {
                errno: e.raw_os_error(),
                detail: format!("sending {count} route requests: {e}"),
            };
            return vec![Err(f); count];
        }
        let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
        while answers.iter().any(Option::is_none) {
            buf.clear();
            if let Err(e) = socket.recv(&mut buf, 0) {
                let detail = format!("waiting for the kernel's answers: {e}");
                for a in answers.iter_mut().filter(|a| a.is_none()) {
                    *a = Some(Err(failure(detail.clone())));
                }
                break;
            }
            read_answers(&buf, first, &mut answers);
        }
        answers.into_iter().map(|a| a.unwrap_or(Ok(()))).collect()
    }
}

fn failure(detail: String) -> NetlinkFailure {
    NetlinkFailure {
        errno: None,
        detail,
    }
}

/// The requests as consecutive netlink messages, sequence numbers from `first`.
pub fn encode(requests: &[RouteRequest], first: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(requests.len() * 128);
    for (i, r) in requests.iter().enumerate() {
        let payload = match r.op {
            RouteOp::Create | RouteOp::Replace => RouteNetlinkMessage::NewRoute(r.message.clone()),
            RouteOp::Delete => RouteNetlinkMessage::DelRoute(r.message.clone()),
        };
        let mut msg = NetlinkMessage::from(payload);
        msg.header.flags = r.flags();
        msg.header.sequence_number = first.wrapping_add(i as u32);
        msg.finalize();
        let start = out.len();
        out.resize(start + msg.buffer_len(), 0);
        msg.serialize(&mut out[start..]);
        // NLMSG_ALIGN: the kernel finds the next message at the 4-byte aligned length.
        out.resize(out.len().next_multiple_of(4), 0);
    }
    out
}

/// Fills `answers[seq - first]` from the acknowledgements and errors in `datagram`; messages of
/// other sequence numbers (a batch given up on earlier) are skipped.
pub fn read_answers(
    datagram: &[u8],
    first: u32,
    answers: &mut [Option<Result<(), NetlinkFailure>>],
) {
    let mut off = 0;
    while off < datagram.len() {
        let Ok(header) = NetlinkBuffer::new_checked(&datagram[off..]) else {
            return;
        };
        let len = header.length() as usize;
        if len == 0 {
            return;
        }
        let index = header.sequence_number().wrapping_sub(first) as usize;
        if let (Some(slot), Ok(msg)) = (
            answers.get_mut(index),
            NetlinkMessage::<RouteNetlinkMessage>::deserialize(&datagram[off..off + len]),
        ) {
            if let NetlinkPayload::Error(e) = msg.payload {
                *slot = Some(match e.code {
                    None => Ok(()),
                    Some(code) => Err(NetlinkFailure {
                        errno: Some(-code.get()),
                        detail: std::io::Error::from_raw_os_error(-code.get()).to_string(),
                    }),
                });
            }
        }
        off += len.next_multiple_of(4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{write_request, KernelRoute, NextHop};
    use rtnetlink::packet_core::{ErrorMessage, NetlinkHeader};

    fn request(prefix: &str) -> RouteRequest {
        let hop = if prefix.contains(':') {
            "2001:db8::1"
        } else {
            "192.0.2.1"
        };
        let r = KernelRoute::new(
            prefix.parse().unwrap(),
            [NextHop::via(hop.parse().unwrap())],
        );
        write_request(&r, 254, 20, false).unwrap()
    }

    #[test]
    fn a_batch_is_consecutive_aligned_messages_with_consecutive_sequence_numbers() {
        let reqs = [
            request("10.0.0.0/26"),
            request("fd00::/122"),
            request("10.0.0.64/26"),
        ];
        let bytes = encode(&reqs, 41);
        let mut off = 0;
        let mut seen = Vec::new();
        while off < bytes.len() {
            let h = NetlinkBuffer::new_checked(&bytes[off..]).unwrap();
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(
                &bytes[off..off + h.length() as usize],
            )
            .unwrap();
            assert_eq!(msg.header.flags, reqs[seen.len()].flags());
            seen.push(msg.header.sequence_number);
            off += (h.length() as usize).next_multiple_of(4);
        }
        assert_eq!(seen, [41, 42, 43]);
        assert_eq!(off, bytes.len());
    }

    fn answer(seq: u32, code: i32) -> Vec<u8> {
        let mut e = ErrorMessage::default();
        e.code = std::num::NonZeroI32::new(code);
        let mut header = NetlinkHeader::default();
        header.sequence_number = seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::<RouteNetlinkMessage>::Error(e));
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        buf
    }

    #[test]
    fn answers_are_matched_by_sequence_number_and_strangers_skipped() {
        let mut datagram = answer(11, 0);
        datagram.extend(answer(7, -17)); // an earlier batch's
        datagram.extend(answer(10, -17));
        let mut answers = vec![None, None, None];
        read_answers(&datagram, 10, &mut answers);
        assert_eq!(answers[1], Some(Ok(())));
        let e = answers[0].clone().unwrap().unwrap_err();
        assert_eq!(e.errno, Some(17));
        assert_eq!(answers[2], None, "not answered yet");
    }
}
