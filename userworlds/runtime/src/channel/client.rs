//! The client side: encode a request, call, decode the reply.

use core::marker::PhantomData;

use esker_abi::{CapSlot, MAX_MESSAGE_BYTES, MessageInfo};
use esker_protocols::{Protocol, Status, StatusProtocol};

use super::{ChannelError, ReplyStatus, Transport};

/// Encodes `request` into `data`; returns the info word to send it with.
pub fn encode_request<P: Protocol>(
    request: &P::Request,
    data: &mut [u8],
) -> Result<MessageInfo, ChannelError> {
    let len = postcard::to_slice(request, data)
        .map_err(|_| ChannelError::RequestTooLarge)?
        .len();
    MessageInfo::new(P::operation(request), len, 0).ok_or(ChannelError::RequestTooLarge)
}

/// Decodes a reply that arrived with `info` in `data`.
pub fn decode_reply<P: Protocol>(
    info: MessageInfo,
    data: &[u8; MAX_MESSAGE_BYTES],
) -> Result<P::Reply, ChannelError> {
    if !info.is_valid() {
        return Err(ChannelError::MalformedReply);
    }
    match ReplyStatus::from_label(info.label()) {
        Some(ReplyStatus::Ok) => {}
        Some(ReplyStatus::Denied) => return Err(ChannelError::Denied),
        Some(ReplyStatus::DecodeError) => return Err(ChannelError::Rejected),
        Some(ReplyStatus::ReplyTooLarge) => return Err(ChannelError::ServerFailed),
        None => return Err(ChannelError::MalformedReply),
    }
    // `is_valid` bounds the length by MAX_MESSAGE_BYTES, the size of `data`.
    let bytes = data
        .get(..info.length())
        .ok_or(ChannelError::MalformedReply)?;
    match postcard::take_from_bytes::<P::Reply>(bytes) {
        Ok((reply, [])) => Ok(reply),
        _ => Err(ChannelError::MalformedReply),
    }
}

/// A typed client of one channel.
pub struct Client<P: Protocol, T: Transport> {
    endpoint: CapSlot,
    transport: T,
    _protocol: PhantomData<fn() -> P>,
}

impl<P: Protocol, T: Transport> core::fmt::Debug for Client<P, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Client")
            .field("protocol", &P::NAME)
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl<P: Protocol, T: Transport> Client<P, T> {
    /// A client calling through the endpoint capability in `endpoint`.
    pub const fn new(endpoint: CapSlot, transport: T) -> Self {
        Self {
            endpoint,
            transport,
            _protocol: PhantomData,
        }
    }

    /// The endpoint capability's slot.
    pub const fn endpoint(&self) -> CapSlot {
        self.endpoint
    }

    /// The transport (tests inspect their fakes through it).
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Sends `request` and waits for the reply.
    pub fn call(&mut self, request: &P::Request) -> Result<P::Reply, ChannelError> {
        let info = self
            .transport
            .with_data(|data| encode_request::<P>(request, data))?;
        let reply = self.transport.call(self.endpoint, info)?;
        self.transport
            .with_data(|data| decode_reply::<P>(reply.info, data))
    }
}

impl<P: StatusProtocol, T: Transport> Client<P, T> {
    /// Asks for the server's status.
    pub fn status(&mut self) -> Result<Status, ChannelError> {
        let reply = self.call(&P::status_request())?;
        P::into_status(reply).map_err(|_| ChannelError::UnexpectedReply)
    }
}
