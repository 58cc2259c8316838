//! The server side: check, decode, hand to the service, encode the reply; and the loop.

use esker_abi::{CapSlot, Error, MAX_MESSAGE_BYTES, MessageInfo, badge};
use esker_protocols::Protocol;

use super::{Caller, ChannelStats, Context, Incoming, ReplyStatus, Service, Transport};

/// Checks and decodes a request that arrived as `incoming` with `data`.
///
/// Order: the info word must be valid and carry no capabilities, the label must name an
/// operation, the badge must allow it (checked before the data is looked at), and the data
/// must decode to exactly one request of that operation.
pub fn decode_request<P: Protocol>(
    incoming: Incoming,
    data: &[u8; MAX_MESSAGE_BYTES],
) -> Result<P::Request, ReplyStatus> {
    let info = incoming.info;
    if !info.is_valid() || info.caps() != 0 {
        return Err(ReplyStatus::DecodeError);
    }
    let op = info.label();
    if usize::try_from(op).map_or(true, |op| op >= P::OPERATIONS.len()) {
        return Err(ReplyStatus::DecodeError);
    }
    if !badge::allows(incoming.badge, op) {
        return Err(ReplyStatus::Denied);
    }
    let bytes = data.get(..info.length()).ok_or(ReplyStatus::DecodeError)?;
    match postcard::take_from_bytes::<P::Request>(bytes) {
        Ok((request, [])) if P::operation(&request) == op => Ok(request),
        _ => Err(ReplyStatus::DecodeError),
    }
}

/// Handles one incoming message: decodes it from `data`, lets `service` answer, writes the
/// reply into `data` and returns the reply's info word. Never panics on any input.
pub fn dispatch<P: Protocol, S: Service<P>>(
    service: &mut S,
    stats: &mut ChannelStats,
    incoming: Incoming,
    data: &mut [u8; MAX_MESSAGE_BYTES],
) -> MessageInfo {
    let request = match decode_request::<P>(incoming, data) {
        Ok(request) => request,
        Err(status) => {
            if status == ReplyStatus::Denied {
                stats.denied += 1;
            } else {
                stats.malformed += 1;
            }
            return status.empty_reply();
        }
    };
    stats.requests += 1;
    let context = Context {
        caller: Caller {
            badge: incoming.badge,
        },
        stats: *stats,
    };
    let reply = service.handle(&context, request);
    match postcard::to_slice(&reply, data) {
        Ok(bytes) => {
            MessageInfo::new(ReplyStatus::Ok as u32, bytes.len(), 0).unwrap_or_else(|| {
                stats.failed += 1;
                ReplyStatus::ReplyTooLarge.empty_reply()
            })
        }
        Err(_) => {
            stats.failed += 1;
            ReplyStatus::ReplyTooLarge.empty_reply()
        }
    }
}

/// Serves `endpoint` with `service` until receiving fails; returns that error.
///
/// Each round replies to the previous request and waits for the next one in one system
/// call (`reply_recv`). If that fails — the caller stopped, or the message came by `send`
/// and has nobody to reply to — the loop falls back to a plain `recv`; only an error from
/// `recv` itself (the endpoint capability is unusable) ends it.
pub fn serve<P: Protocol, S: Service<P>, T: Transport>(
    transport: &mut T,
    endpoint: CapSlot,
    service: &mut S,
) -> Error {
    let mut stats = ChannelStats::default();
    let mut incoming = match transport.recv(endpoint) {
        Ok(incoming) => incoming,
        Err(error) => return error,
    };
    loop {
        let reply =
            transport.with_data(|data| dispatch::<P, S>(service, &mut stats, incoming, data));
        incoming = match transport.reply_recv(endpoint, reply) {
            Ok(next) => next,
            Err(_) => match transport.recv(endpoint) {
                Ok(next) => next,
                Err(error) => return error,
            },
        };
    }
}
