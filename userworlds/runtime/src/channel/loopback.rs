//! A transport that connects a client straight to a service in the same program.
//!
//! For host tests of servers and their clients: `call` runs the real [`dispatch`] (badge
//! check, decoding, reply encoding) on the loopback's own message buffer, with the badge
//! the test chose, exactly as the server's channel loop would in a world.

use core::marker::PhantomData;

use esker_abi::{CapSlot, Error, MAX_MESSAGE_BYTES, MessageInfo, badge};
use esker_protocols::Protocol;

use super::{ChannelStats, Client, Incoming, Service, Transport, dispatch};

/// A client-side transport whose "kernel" is a direct call into `service`.
pub struct Loopback<P: Protocol, S: Service<P>> {
    service: S,
    stats: ChannelStats,
    badge: u64,
    data: [u8; MAX_MESSAGE_BYTES],
    _protocol: PhantomData<fn() -> P>,
}

impl<P: Protocol, S: Service<P>> core::fmt::Debug for Loopback<P, S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Loopback")
            .field("protocol", &P::NAME)
            .field("badge", &self.badge)
            .finish()
    }
}

impl<P: Protocol, S: Service<P>> Loopback<P, S> {
    /// Calls reach `service` with `badge`.
    pub fn new(service: S, badge: u64) -> Self {
        Self {
            service,
            stats: ChannelStats::default(),
            badge,
            data: [0; MAX_MESSAGE_BYTES],
            _protocol: PhantomData,
        }
    }

    /// Calls reach `service` as client 0 with every operation allowed.
    pub fn allowing_all(service: S) -> Self {
        Self::new(service, badge::encode(0, u32::MAX))
    }

    /// A client over a loopback to `service` with `badge`.
    pub fn client(service: S, badge: u64) -> Client<P, Self> {
        Client::new(0, Self::new(service, badge))
    }

    /// The service.
    pub fn service(&self) -> &S {
        &self.service
    }

    /// The service, mutably (to change its state between calls).
    pub fn service_mut(&mut self) -> &mut S {
        &mut self.service
    }

    /// What the channel counted.
    pub fn stats(&self) -> ChannelStats {
        self.stats
    }

    /// Changes the badge later calls carry.
    pub fn set_badge(&mut self, badge: u64) {
        self.badge = badge;
    }
}

impl<P: Protocol, S: Service<P>> Transport for Loopback<P, S> {
    fn with_data<R>(&mut self, f: impl FnOnce(&mut [u8; MAX_MESSAGE_BYTES]) -> R) -> R {
        f(&mut self.data)
    }

    fn call(&mut self, _endpoint: CapSlot, info: MessageInfo) -> Result<Incoming, Error> {
        let incoming = Incoming {
            info,
            badge: self.badge,
        };
        let reply = dispatch::<P, S>(&mut self.service, &mut self.stats, incoming, &mut self.data);
        Ok(Incoming {
            info: reply,
            badge: 0,
        })
    }

    fn recv(&mut self, _endpoint: CapSlot) -> Result<Incoming, Error> {
        Err(Error::InvalidCapability)
    }

    fn reply_recv(&mut self, _endpoint: CapSlot, _reply: MessageInfo) -> Result<Incoming, Error> {
        Err(Error::InvalidCapability)
    }
}

/// The two refusals every server's channel must make, checked for a status-answering
/// service built by `make` (for servers' host tests): a caller whose badge lacks the
/// `status` bit is denied, a malformed request is refused with `DecodeError`, and both are
/// counted in the server's status (`denied`, `malformed`). Panics naming the protocol and
/// the broken rule otherwise.
pub fn assert_refuses_denied_and_malformed<P, S>(make: impl Fn() -> S, client: u16)
where
    P: esker_protocols::StatusProtocol,
    S: Service<P>,
{
    use super::{ChannelError, ReplyStatus};
    let status_bit = badge::encode(client, 1);
    let mut denied = Loopback::<P, S>::client(make(), badge::encode(client, 0b10));
    assert_eq!(
        denied.status(),
        Err(ChannelError::Denied),
        "{}: a caller without the status bit got through",
        P::NAME
    );
    denied.transport_mut().set_badge(status_bit);
    assert_eq!(
        denied.status().ok().and_then(|s| s.counter("denied")),
        Some(1),
        "{}: the refusal was not counted",
        P::NAME
    );
    let mut loopback = Loopback::<P, S>::new(make(), status_bit);
    loopback.with_data(|data| data[0] = 7);
    let info = MessageInfo::new(0, 1, 0).unwrap_or_default();
    let reply = loopback.call(0, info).ok().map(|r| r.info.label());
    assert_eq!(
        reply,
        Some(ReplyStatus::DecodeError as u32),
        "{}: a malformed request was not refused",
        P::NAME
    );
    let mut client = Client::<P, _>::new(0, loopback);
    assert_eq!(
        client.status().ok().and_then(|s| s.counter("malformed")),
        Some(1),
        "{}: the malformed request was not counted",
        P::NAME
    );
}
