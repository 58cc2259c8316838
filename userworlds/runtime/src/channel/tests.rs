//! Channel tests: a small protocol, the loopback transport and a scripted server transport.

use std::collections::VecDeque;
use std::vec::Vec;

use esker_abi::{CapSlot, Error, MAX_MESSAGE_BYTES, MessageInfo, badge};
use esker_protocols::{Protocol, ServerState, Status, StatusProtocol};
use heapless::String;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use super::loopback::Loopback;
use super::*;

enum Echo {}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Request {
    Status,
    Echo { text: String<64> },
    Big { len: u16 },
}

#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Reply {
    Status(Status),
    Echoed(String<64>),
    Big(heapless::Vec<u8, 8192>),
}

impl Protocol for Echo {
    const NAME: &'static str = "echo";
    const OPERATIONS: &'static [&'static str] = &["status", "echo", "big"];
    type Request = Request;
    type Reply = Reply;

    fn operation(request: &Request) -> u32 {
        match request {
            Request::Status => 0,
            Request::Echo { .. } => 1,
            Request::Big { .. } => 2,
        }
    }
}

impl StatusProtocol for Echo {
    fn status_request() -> Request {
        Request::Status
    }

    fn into_status(reply: Reply) -> Result<Status, Reply> {
        match reply {
            Reply::Status(status) => Ok(status),
            other => Err(other),
        }
    }
}

#[derive(Default)]
struct EchoServer {
    handled: usize,
    last_caller: Option<Caller>,
}

impl Service<Echo> for EchoServer {
    fn handle(&mut self, context: &Context, request: Request) -> Reply {
        self.handled += 1;
        self.last_caller = Some(context.caller);
        match request {
            Request::Status => {
                let mut status = Status::new("echo", ServerState::Ready);
                context.stats.add_to(&mut status);
                Reply::Status(status)
            }
            Request::Echo { text } => Reply::Echoed(text),
            Request::Big { len } => Reply::Big((0..len).map(|i| i as u8).collect()),
        }
    }
}

fn text(s: &str) -> String<64> {
    esker_protocols::common::truncated(s)
}

const ALL: u64 = badge::encode(3, u32::MAX);
const STATUS_ONLY: u64 = badge::encode(4, 0b1);

#[test]
fn allowed_requests_round_trip_and_are_counted() {
    let mut client = Loopback::<Echo, _>::client(EchoServer::default(), ALL);
    assert_eq!(
        client.call(&Request::Echo {
            text: text("hello")
        }),
        Ok(Reply::Echoed(text("hello")))
    );
    let status = client.status().unwrap();
    assert_eq!(status.name.as_str(), "echo");
    assert_eq!(
        status.counter("requests"),
        Some(2),
        "the status request itself is counted"
    );
    assert_eq!(status.counter("denied"), Some(0));
    let server = client.transport_mut().service();
    assert_eq!(server.handled, 2);
    assert_eq!(server.last_caller.map(Caller::client), Some(3));
}

#[test]
fn operations_missing_from_the_badge_are_denied_before_the_service_runs() {
    let mut client = Loopback::<Echo, _>::client(EchoServer::default(), STATUS_ONLY);
    assert_eq!(
        client.call(&Request::Echo { text: text("x") }),
        Err(ChannelError::Denied)
    );
    assert_eq!(
        client.call(&Request::Big { len: 1 }),
        Err(ChannelError::Denied)
    );
    assert!(client.status().is_ok());
    let loopback = client.transport_mut();
    assert_eq!(loopback.service().handled, 1);
    assert_eq!(loopback.stats().denied, 2);
    loopback.set_badge(0);
    assert_eq!(
        client.status(),
        Err(ChannelError::Denied),
        "a zero badge allows nothing"
    );
}

/// Sends raw bytes with a raw info word through a loopback; returns the reply's status.
fn raw_call(
    loopback: &mut Loopback<Echo, EchoServer>,
    info: MessageInfo,
    bytes: &[u8],
) -> Option<ReplyStatus> {
    loopback.with_data(|data| data[..bytes.len()].copy_from_slice(bytes));
    let reply = loopback.call(0, info).unwrap();
    ReplyStatus::from_label(reply.info.label())
}

#[test]
fn malformed_messages_get_decode_errors_and_never_reach_the_service() {
    let mut loopback = Loopback::<Echo, _>::new(EchoServer::default(), ALL);
    let mut good = [0u8; 128];
    let echo = postcard::to_slice(&Request::Echo { text: text("abc") }, &mut good)
        .unwrap()
        .to_vec();
    let info = |label: u32, len: usize| MessageInfo::new(label, len, 0).unwrap();

    // The well-formed message works, so each case below fails for its own reason.
    assert_eq!(
        raw_call(&mut loopback, info(1, echo.len()), &echo),
        Some(ReplyStatus::Ok)
    );
    let cases: Vec<(&str, MessageInfo, Vec<u8>)> = std::vec![
        (
            "label names no operation",
            info(3, echo.len()),
            echo.clone()
        ),
        (
            "label far out of range",
            info(u32::MAX, echo.len()),
            echo.clone()
        ),
        (
            "label does not match the variant",
            info(0, echo.len()),
            echo.clone()
        ),
        ("truncated", info(1, echo.len() - 1), echo.clone()),
        ("trailing bytes", info(1, echo.len() + 1), echo.clone()),
        ("empty", info(1, 0), Vec::new()),
        ("unknown variant", info(1, 1), std::vec![9]),
        ("bad UTF-8", info(1, 3), std::vec![1, 1, 0xff]),
        (
            "capabilities attached",
            MessageInfo::new(1, echo.len(), 1).unwrap(),
            echo.clone()
        ),
        (
            "length beyond the buffer",
            MessageInfo((1 << 32) | 0x3fff),
            echo.clone()
        ),
        (
            "reserved bits set",
            MessageInfo((1 << 32) | (1 << 20) | echo.len() as u64),
            echo.clone()
        ),
    ];
    for (what, info, bytes) in &cases {
        assert_eq!(
            raw_call(&mut loopback, *info, bytes),
            Some(ReplyStatus::DecodeError),
            "{what}"
        );
    }
    assert_eq!(loopback.service().handled, 1);
    assert_eq!(loopback.stats().malformed, cases.len() as u64);
}

#[test]
fn oversized_requests_and_replies_fail_cleanly() {
    let mut client = Loopback::<Echo, _>::client(EchoServer::default(), ALL);
    assert!(
        matches!(client.call(&Request::Big { len: 4000 }), Ok(Reply::Big(v)) if v.len() == 4000)
    );
    assert_eq!(
        client.call(&Request::Big { len: 5000 }),
        Err(ChannelError::ServerFailed)
    );
    assert_eq!(client.transport_mut().stats().failed, 1);

    let mut data = [0u8; 16];
    assert_eq!(
        encode_request::<Echo>(
            &Request::Echo {
                text: text("this does not fit in sixteen bytes")
            },
            &mut data
        ),
        Err(ChannelError::RequestTooLarge)
    );
}

#[test]
fn replies_are_checked_by_the_client() {
    let mut data = [0u8; MAX_MESSAGE_BYTES];
    let len = postcard::to_slice(&Reply::Echoed(text("ok")), &mut data)
        .unwrap()
        .len();
    let ok = |len| MessageInfo::new(0, len, 0).unwrap();
    assert_eq!(
        decode_reply::<Echo>(ok(len), &data),
        Ok(Reply::Echoed(text("ok")))
    );
    assert_eq!(
        decode_reply::<Echo>(ok(len + 1), &data),
        Err(ChannelError::MalformedReply)
    );
    assert_eq!(
        decode_reply::<Echo>(ok(len - 1), &data),
        Err(ChannelError::MalformedReply)
    );
    assert_eq!(
        decode_reply::<Echo>(ReplyStatus::Denied.empty_reply(), &data),
        Err(ChannelError::Denied)
    );
    assert_eq!(
        decode_reply::<Echo>(ReplyStatus::DecodeError.empty_reply(), &data),
        Err(ChannelError::Rejected)
    );
    assert_eq!(
        decode_reply::<Echo>(MessageInfo(9 << 32), &data),
        Err(ChannelError::MalformedReply)
    );
    assert_eq!(
        decode_reply::<Echo>(MessageInfo(0x3fff), &data),
        Err(ChannelError::MalformedReply)
    );
}

/// A server-side transport that plays back a script of incoming messages.
struct Script {
    incoming: VecDeque<Result<(Incoming, Vec<u8>), Error>>,
    reply_recv_errors: VecDeque<Option<Error>>,
    replies: Vec<(MessageInfo, Vec<u8>)>,
    data: [u8; MAX_MESSAGE_BYTES],
}

impl Script {
    /// The next scripted message; a scripted error stays (a broken endpoint stays broken).
    fn next(&mut self) -> Result<Incoming, Error> {
        if let Some(Err(error)) = self.incoming.front() {
            return Err(*error);
        }
        let (incoming, bytes) = self
            .incoming
            .pop_front()
            .unwrap_or(Err(Error::InvalidCapability))?;
        self.data[..bytes.len()].copy_from_slice(&bytes);
        Ok(incoming)
    }
}

impl Transport for Script {
    fn with_data<R>(&mut self, f: impl FnOnce(&mut [u8; MAX_MESSAGE_BYTES]) -> R) -> R {
        f(&mut self.data)
    }

    fn call(&mut self, _: CapSlot, _: MessageInfo) -> Result<Incoming, Error> {
        Err(Error::InvalidCapability)
    }

    fn recv(&mut self, endpoint: CapSlot) -> Result<Incoming, Error> {
        assert_eq!(endpoint, 7);
        self.next()
    }

    fn reply_recv(&mut self, endpoint: CapSlot, reply: MessageInfo) -> Result<Incoming, Error> {
        assert_eq!(endpoint, 7);
        if let Some(Some(error)) = self.reply_recv_errors.pop_front() {
            return Err(error);
        }
        self.replies
            .push((reply, self.data[..reply.length()].to_vec()));
        self.next()
    }
}

fn request(op: u32, request: &Request, badge: u64) -> Result<(Incoming, Vec<u8>), Error> {
    let mut buf = [0u8; 256];
    let bytes = postcard::to_slice(request, &mut buf).unwrap().to_vec();
    Ok((
        Incoming {
            info: MessageInfo::new(op, bytes.len(), 0).unwrap(),
            badge,
        },
        bytes,
    ))
}

#[test]
fn serve_answers_each_request_and_stops_only_when_receiving_fails() {
    let mut script = Script {
        incoming: VecDeque::from(std::vec![
            request(0, &Request::Status, STATUS_ONLY),
            request(1, &Request::Echo { text: text("hi") }, STATUS_ONLY),
            request(1, &Request::Echo { text: text("hi") }, ALL),
            // The caller of this one went away: reply_recv fails and serve falls back to recv.
            request(0, &Request::Status, ALL),
            request(0, &Request::Status, ALL),
            Err(Error::WrongObjectKind),
        ]),
        reply_recv_errors: VecDeque::from(std::vec![
            None,
            None,
            None,
            Some(Error::PeerStopped),
            None
        ]),
        replies: Vec::new(),
        data: [0; MAX_MESSAGE_BYTES],
    };
    let mut server = EchoServer::default();
    let error = serve::<Echo, _, _>(&mut script, 7, &mut server);
    assert_eq!(error, Error::WrongObjectKind);
    let labels: Vec<u32> = script
        .replies
        .iter()
        .map(|(info, _)| info.label())
        .collect();
    assert_eq!(
        labels,
        [0, 1, 0, 0],
        "status ok, echo denied, echo ok, (lost reply), status ok"
    );
    let (info, bytes) = &script.replies[3];
    let mut data = [0u8; MAX_MESSAGE_BYTES];
    data[..bytes.len()].copy_from_slice(bytes);
    let Ok(Reply::Status(status)) = decode_reply::<Echo>(*info, &data) else {
        panic!("status reply")
    };
    assert_eq!(
        (status.counter("requests"), status.counter("denied")),
        (Some(4), Some(1))
    );
}

#[test]
fn serve_returns_at_once_if_the_endpoint_is_unusable() {
    let mut script = Script {
        incoming: VecDeque::from(std::vec![Err(Error::InvalidCapability)]),
        reply_recv_errors: VecDeque::new(),
        replies: Vec::new(),
        data: [0; MAX_MESSAGE_BYTES],
    };
    assert_eq!(
        serve::<Echo, _, _>(&mut script, 7, &mut EchoServer::default()),
        Error::InvalidCapability
    );
}

proptest! {
    /// Whatever a hostile client sends, dispatch answers with a known status, never panics,
    /// and only lets permitted, well-formed requests through.
    #[test]
    fn dispatch_survives_any_message(
        info in any::<u64>(),
        badge in any::<u64>(),
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        label in 0u32..5,
        len in 0usize..220,
    ) {
        let mut stats = ChannelStats::default();
        let mut server = EchoServer::default();
        let mut data = [0u8; MAX_MESSAGE_BYTES];
        data[..bytes.len()].copy_from_slice(&bytes);
        for info in [MessageInfo(info), MessageInfo::new(label, len, 0).unwrap()] {
            let reply = dispatch::<Echo, _>(&mut server, &mut stats, Incoming { info, badge }, &mut data);
            let status = ReplyStatus::from_label(reply.label());
            prop_assert!(status.is_some());
            prop_assert!(reply.is_valid());
            if status == Some(ReplyStatus::Ok) {
                prop_assert!(badge::allows(badge, info.label()));
            }
        }
        prop_assert_eq!(server.handled as u64, stats.requests);
        prop_assert_eq!(stats.requests + stats.denied + stats.malformed, 2);
    }
}
