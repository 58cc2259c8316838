//! Typed channels: a protocol's request and reply enums carried over an endpoint.
//!
//! # Wire format
//!
//! A request is one message whose label is the operation index (the request variant's
//! position in the protocol's `OPERATIONS`, which is also its badge bit) and whose data is
//! the postcard encoding of the request. The reply's label is a [`ReplyStatus`]; with
//! [`ReplyStatus::Ok`] its data is the postcard encoding of the reply, otherwise it is
//! empty. Typed channels carry no capabilities and leave the message registers zero.
//!
//! # What the server side guarantees
//!
//! [`dispatch`] refuses a request whose operation bit is missing from the caller's badge
//! ([`ReplyStatus::Denied`], before decoding anything) and answers a malformed message
//! (invalid info word, capabilities attached, unknown label, postcard error, trailing
//! bytes, label not matching the decoded variant) with [`ReplyStatus::DecodeError`]. No
//! input makes it panic or read outside the message.
//!
//! Everything here is plain logic over a [`Transport`]; the kernel transport is
//! `ipc::KernelTransport`, tests use [`loopback::Loopback`] or their own fakes.

mod client;
pub mod loopback;
mod server;

use esker_abi::{CapSlot, Error, MAX_MESSAGE_BYTES, MessageInfo, badge};
use esker_protocols::Protocol;

pub use client::{Client, decode_reply, encode_request};
pub use server::{decode_request, dispatch, serve};

/// The label of a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ReplyStatus {
    /// The data is the encoded reply.
    Ok = 0,
    /// The caller's badge lacks the operation.
    Denied = 1,
    /// The request was malformed.
    DecodeError = 2,
    /// The server's reply did not fit a message.
    ReplyTooLarge = 3,
}

impl ReplyStatus {
    /// Decodes a reply label.
    pub fn from_label(label: u32) -> Option<Self> {
        [
            Self::Ok,
            Self::Denied,
            Self::DecodeError,
            Self::ReplyTooLarge,
        ]
        .into_iter()
        .find(|s| *s as u32 == label)
    }

    /// An empty reply carrying this status.
    pub fn empty_reply(self) -> MessageInfo {
        MessageInfo(u64::from(self as u32) << 32)
    }
}

/// Why a call on a channel did not produce a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelError {
    /// The system call failed (bad capability, peer stopped, …).
    Kernel(Error),
    /// The request does not fit in one message.
    RequestTooLarge,
    /// The server refused: this world's badge does not include the operation.
    Denied,
    /// The server could not decode the request.
    Rejected,
    /// The server's reply did not fit in one message.
    ServerFailed,
    /// The reply could not be decoded.
    MalformedReply,
    /// The reply decoded, but is not an answer to the request made.
    UnexpectedReply,
}

impl ChannelError {
    /// A short description.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::Kernel(error) => error.describe(),
            Self::RequestTooLarge => "request too large for one message",
            Self::Denied => "denied: the badge lacks the operation",
            Self::Rejected => "the server could not decode the request",
            Self::ServerFailed => "the server's reply did not fit a message",
            Self::MalformedReply => "malformed reply",
            Self::UnexpectedReply => "reply does not answer the request",
        }
    }
}

impl From<Error> for ChannelError {
    fn from(error: Error) -> Self {
        Self::Kernel(error)
    }
}

impl core::fmt::Display for ChannelError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.describe())
    }
}

impl defmt::Format for ChannelError {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "{=str}", self.describe());
    }
}

/// A message that arrived: its info word and the badge of the capability it came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incoming {
    /// Length, capability count and label, as the sender chose them.
    pub info: MessageInfo,
    /// The badge the kernel attached (0 for replies).
    pub badge: u64,
}

/// How messages move: the IPC buffer's data and the endpoint system calls.
pub trait Transport {
    /// Runs `f` on the message data area (the IPC buffer's data).
    fn with_data<R>(&mut self, f: impl FnOnce(&mut [u8; MAX_MESSAGE_BYTES]) -> R) -> R;

    /// Sends the data area as a message with `info` and waits for the reply.
    fn call(&mut self, endpoint: CapSlot, info: MessageInfo) -> Result<Incoming, Error>;

    /// Waits for a message.
    fn recv(&mut self, endpoint: CapSlot) -> Result<Incoming, Error>;

    /// Replies to the last caller with the data area and `reply`, then waits for a message.
    fn reply_recv(&mut self, endpoint: CapSlot, reply: MessageInfo) -> Result<Incoming, Error>;
}

/// Who sent a request: the badge of their capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The raw badge.
    pub badge: u64,
}

impl Caller {
    /// The calling world's index in the manifest.
    pub const fn client(self) -> u16 {
        badge::client(self.badge)
    }

    /// Whether the caller may invoke operation `op`.
    pub const fn allows(self, op: u32) -> bool {
        badge::allows(self.badge, op)
    }
}

/// What the channel runtime counted so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Requests handed to the service.
    pub requests: u64,
    /// Requests refused because the badge lacked the operation.
    pub denied: u64,
    /// Malformed messages.
    pub malformed: u64,
    /// Replies that did not fit a message.
    pub failed: u64,
}

impl ChannelStats {
    /// Appends `requests`, `denied` and `malformed` to a status reply.
    pub fn add_to(&self, status: &mut esker_protocols::Status) {
        status.push_counter("requests", self.requests);
        status.push_counter("denied", self.denied);
        status.push_counter("malformed", self.malformed);
    }
}

/// What a service sees of the request besides its content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    /// Who is asking.
    pub caller: Caller,
    /// The channel's counters, including this request.
    pub stats: ChannelStats,
}

/// A server's logic for one protocol: answers one decoded, permitted request.
///
/// The runtime has already checked the caller's badge and decoded the request; the
/// service only decides the reply (it may refuse in the protocol's own terms).
pub trait Service<P: Protocol> {
    /// Answers `request`.
    fn handle(&mut self, context: &Context, request: P::Request) -> P::Reply;
}

#[cfg(test)]
mod tests;
