//! Message passing: endpoints (synchronous call / send / receive / reply) and
//! notifications (asynchronous signal bits).
//!
//! A message is the info word and four message registers, taken from the sender's saved
//! registers (`rsi`, then `rdx, r10, r8, r9`), up to 4 KiB from its IPC buffer, and up to
//! four capabilities named in its buffer, each passed as a derived copy (a child of the
//! sender's, so revoking the sender's capability revokes what it passed). The receiver gets
//! `rdi` = info (with the number of capabilities that arrived), `rsi` = the badge of the
//! capability the sender used, and the four registers in `rdx, r10, r8, r9`.
//!
//! When a caller meets a waiting receiver the kernel switches straight to the receiver;
//! a reply puts the caller at the front of the run queue so it runs as soon as the server
//! waits again. A message is checked when it is sent, so a malformed one is refused to its
//! sender and never reaches the receiver.

use esker_abi::{
    CapSlot, Error, IPC_DATA_OFFSET, MAX_MESSAGE_CAPS, MessageInfo, ObjectKind, Rights,
};
use heapless::Deque;

use super::{Object, Platform, System, WORLD_SLOTS, WorldState};
use crate::addr::PhysAddr;
use crate::cap::{ObjectId, WorldId};

/// Byte offset of `received_caps` in the IPC buffer (`received_count` follows at 32).
const RECEIVED_CAPS_OFFSET: u64 = 16;

/// A rendezvous: worlds waiting to send, or worlds waiting to receive.
#[derive(Debug)]
pub struct Endpoint {
    pub(super) senders: Deque<WorldId, WORLD_SLOTS>,
    receivers: Deque<WorldId, WORLD_SLOTS>,
    /// No live world can receive on it any more: sends fail with `PeerStopped`.
    pub(super) orphaned: bool,
}

impl Endpoint {
    /// No one waiting.
    pub const fn new() -> Self {
        Self {
            senders: Deque::new(),
            receivers: Deque::new(),
            orphaned: false,
        }
    }

    /// Removes a world from both queues (it stopped).
    pub fn forget(&mut self, world: WorldId) {
        self.senders.retain(|w| *w != world);
        self.receivers.retain(|w| *w != world);
    }
}

impl Default for Endpoint {
    fn default() -> Self {
        Self::new()
    }
}

/// Signal bits and at most one waiter.
#[derive(Debug, Default)]
pub struct Notification {
    /// Bits signalled and not yet taken.
    pub bits: u64,
    /// The world blocked in `wait`.
    pub waiter: Option<WorldId>,
}

impl Notification {
    /// No bits, no waiter.
    pub const fn new() -> Self {
        Self {
            bits: 0,
            waiter: None,
        }
    }
}

impl System {
    /// The object behind a capability, checked for kind and rights.
    #[inline]
    pub(super) fn capability_for(
        &self,
        world: WorldId,
        slot: u64,
        kind: ObjectKind,
        needed: Rights,
    ) -> Result<(ObjectId, u64), Error> {
        let slot = CapSlot::try_from(slot).map_err(|_| Error::InvalidCapability)?;
        let cap = self
            .caps
            .lookup(self.space(world), slot)
            .map_err(Error::from)?;
        if cap.kind != kind {
            return Err(Error::WrongObjectKind);
        }
        if !cap.rights.contains(needed) {
            return Err(Error::InsufficientRights);
        }
        Ok((cap.object, cap.badge))
    }

    #[inline]
    fn endpoint_mut(&mut self, id: ObjectId) -> Option<&mut Endpoint> {
        match self.object_mut(id)? {
            Object::Endpoint(endpoint) => Some(endpoint),
            _ => None,
        }
    }

    /// Checks the message `world` is about to send (info word in `rsi`, capabilities named
    /// in its IPC buffer).
    #[inline]
    fn check_message(&self, platform: &mut impl Platform, world: WorldId) -> Result<(), Error> {
        let Some(sender) = self.world(world) else {
            return Err(Error::InvalidArgument);
        };
        let info = MessageInfo(sender.registers.rsi);
        if info.length() > esker_abi::MAX_MESSAGE_BYTES || info.caps() > MAX_MESSAGE_CAPS {
            return Err(Error::MessageTooLong);
        }
        if !info.is_valid() {
            return Err(Error::InvalidArgument);
        }
        if info.caps() > 0 {
            let slots = read_send_caps(platform, sender.ipc_buffer.start());
            for &slot in slots.iter().take(info.caps()) {
                let cap = self
                    .caps
                    .lookup(self.space(world), slot)
                    .map_err(Error::from)?;
                if !cap.rights.contains(Rights::GRANT) {
                    return Err(Error::InsufficientRights);
                }
            }
        }
        Ok(())
    }

    /// Moves the message of `from` to `to`, delivering `badge`.
    #[inline]
    fn transfer(&mut self, platform: &mut impl Platform, from: WorldId, to: WorldId, badge: u64) {
        let (Some(sender), Some(receiver)) = (self.world(from), self.world(to)) else {
            return;
        };
        let info = MessageInfo(sender.registers.rsi);
        let registers = [
            sender.registers.rdx,
            sender.registers.r10,
            sender.registers.r8,
            sender.registers.r9,
        ];
        let (from_buffer, to_buffer) = (sender.ipc_buffer.start(), receiver.ipc_buffer.start());

        // Data, in chunks through a small kernel buffer.
        let length = info.length().min(esker_abi::MAX_MESSAGE_BYTES) as u64;
        let mut chunk = [0u8; 512];
        let mut done = 0;
        while done < length {
            let n = (length - done).min(chunk.len() as u64) as usize;
            platform.read_phys(
                PhysAddr::new(from_buffer.as_u64() + IPC_DATA_OFFSET as u64 + done),
                &mut chunk[..n],
            );
            platform.write_phys(
                PhysAddr::new(to_buffer.as_u64() + IPC_DATA_OFFSET as u64 + done),
                &chunk[..n],
            );
            done += n as u64;
        }

        // Capabilities: each a derived copy; one that was revoked since the send was
        // checked, or that finds no free slot, is skipped. `received_caps` and
        // `received_count` are only written for messages that carry capabilities (the
        // receiver reads them only when the info word's count is non-zero).
        let mut count = 0;
        if info.caps() > 0 {
            let slots = read_send_caps(platform, from_buffer);
            let (from, to) = (self.space(from), self.space(to));
            let mut received = [0u32; MAX_MESSAGE_CAPS];
            for &slot in slots.iter().take(info.caps().min(MAX_MESSAGE_CAPS)) {
                if let Ok(new_slot) = self.caps.derive(from, slot, Rights::ALL, 0, to, None) {
                    received[count] = new_slot;
                    count += 1;
                }
            }
            let mut bytes = [0u8; 20];
            for (i, slot) in received.iter().enumerate() {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&slot.to_le_bytes());
            }
            bytes[16..20].copy_from_slice(&(count as u32).to_le_bytes());
            platform.write_phys(
                PhysAddr::new(to_buffer.as_u64() + RECEIVED_CAPS_OFFSET),
                &bytes,
            );
        }

        let delivered = MessageInfo::new(info.label(), length as usize, count).unwrap_or_default();
        if let Some(receiver) = self.world_mut(to) {
            let r = &mut receiver.registers;
            r.set_result(Ok([
                delivered.0,
                badge,
                registers[0],
                registers[1],
                registers[2],
                registers[3],
            ]));
        }
    }

    /// `send` / `call` on the endpoint in `slot`.
    #[inline]
    pub(super) fn send(
        &mut self,
        platform: &mut impl Platform,
        sender: WorldId,
        slot: u64,
        call: bool,
    ) -> Result<(), Error> {
        let (endpoint, badge) =
            self.capability_for(sender, slot, ObjectKind::Endpoint, Rights::CALL)?;
        self.check_message(platform, sender)?;
        let receiver = loop {
            let Some(queue) = self.endpoint_mut(endpoint) else {
                return Err(Error::InvalidCapability);
            };
            if queue.orphaned {
                return Err(Error::PeerStopped);
            }
            match queue.receivers.pop_front() {
                Some(r)
                    if self
                        .world(r)
                        .is_some_and(|w| w.state == (WorldState::Receiving { endpoint })) =>
                {
                    break Some(r);
                }
                Some(_) => continue,
                None => break None,
            }
        };
        let Some(receiver) = receiver else {
            self.block(
                sender,
                WorldState::Sending {
                    endpoint,
                    badge,
                    call,
                },
            );
            if let Some(endpoint) = self.endpoint_mut(endpoint) {
                let _ = endpoint.senders.push_back(sender);
            }
            return Ok(());
        };
        self.transfer(platform, sender, receiver, badge);
        if call {
            self.abandon_reply(receiver);
            if let Some(r) = self.world_mut(receiver) {
                r.reply_to = Some(sender);
            }
            if self.donation.is_none() && self.current == Some(sender) {
                // Donate: the receiver runs now on the caller's scheduling context.
                if let Some(s) = self.world_mut(sender) {
                    s.state = WorldState::AwaitingReply { server: receiver };
                }
                if let Some(r) = self.world_mut(receiver) {
                    r.state = WorldState::Running;
                }
                self.current = Some(receiver);
                self.donation = Some(super::Donation {
                    caller: sender,
                    server: receiver,
                });
                return Ok(());
            }
            self.block(sender, WorldState::AwaitingReply { server: receiver });
            // Switch straight to the receiver if the policy allows: the caller can do
            // nothing until it replies.
            if let Some(r) = self.world_mut(receiver) {
                r.state = WorldState::Ready;
            }
            self.handoff = Some(receiver);
        } else {
            self.make_ready(receiver);
            if let Some(s) = self.world_mut(sender) {
                s.registers.set_result(Ok([0; 6]));
            }
        }
        Ok(())
    }

    /// `recv` on the endpoint in `slot`.
    #[inline]
    pub(super) fn receive(
        &mut self,
        platform: &mut impl Platform,
        receiver: WorldId,
        slot: u64,
    ) -> Result<(), Error> {
        let (endpoint, _) =
            self.capability_for(receiver, slot, ObjectKind::Endpoint, Rights::RECEIVE)?;
        let sender = loop {
            let Some(ep) = self.endpoint_mut(endpoint) else {
                return Err(Error::InvalidCapability);
            };
            match ep.senders.pop_front() {
                Some(s) => match self.world(s).map(|w| w.state) {
                    Some(WorldState::Sending {
                        endpoint: e,
                        badge,
                        call,
                    }) if e == endpoint => break Some((s, badge, call)),
                    _ => continue,
                },
                None => break None,
            }
        };
        let Some((sender, badge, call)) = sender else {
            self.block(receiver, WorldState::Receiving { endpoint });
            if let Some(ep) = self.endpoint_mut(endpoint) {
                let _ = ep.receivers.push_back(receiver);
            }
            return Ok(());
        };
        self.transfer(platform, sender, receiver, badge);
        if call {
            self.abandon_reply(receiver);
            if let Some(r) = self.world_mut(receiver) {
                r.reply_to = Some(sender);
            }
            if let Some(s) = self.world_mut(sender) {
                // Still blocked (it was waiting to send): now it waits for the reply.
                s.state = WorldState::AwaitingReply { server: receiver };
            }
        } else {
            if let Some(s) = self.world_mut(sender) {
                s.registers.set_result(Ok([0; 6]));
            }
            self.make_ready(sender);
        }
        Ok(())
    }

    /// `reply_recv` while `server` runs on its caller's donated context, with no message
    /// already waiting: the reply goes back, the caller resumes on its own context and the
    /// server waits — without consulting the policy. Returns `false` (nothing done) when
    /// the conditions do not hold; the ordinary path then runs.
    pub(super) fn reply_recv_donated(
        &mut self,
        platform: &mut impl Platform,
        server: WorldId,
        slot: u64,
    ) -> bool {
        let Some(donation) = self.donation else {
            return false;
        };
        if donation.server != server || self.current != Some(server) {
            return false;
        }
        let caller = donation.caller;
        if self.world(server).and_then(|w| w.reply_to) != Some(caller)
            || self.world(caller).map(|w| w.state) != Some(WorldState::AwaitingReply { server })
        {
            return false;
        }
        let Ok((endpoint, _)) =
            self.capability_for(server, slot, ObjectKind::Endpoint, Rights::RECEIVE)
        else {
            return false;
        };
        if !self
            .endpoint_mut(endpoint)
            .is_some_and(|e| e.senders.is_empty() && !e.orphaned)
            || self.check_message(platform, server).is_err()
        {
            return false;
        }
        if let Some(w) = self.world_mut(server) {
            w.reply_to = None;
            w.state = WorldState::Receiving { endpoint };
        }
        self.transfer(platform, server, caller, 0);
        if let Some(ep) = self.endpoint_mut(endpoint) {
            let _ = ep.receivers.push_back(server);
        }
        if let Some(c) = self.world_mut(caller) {
            c.state = WorldState::Running;
        }
        self.current = Some(caller);
        self.donation = None;
        true
    }

    /// `reply` to the world waiting for `server`.
    #[inline]
    pub(super) fn reply(
        &mut self,
        platform: &mut impl Platform,
        server: WorldId,
    ) -> Result<(), Error> {
        let caller = self
            .world(server)
            .and_then(|w| w.reply_to)
            .ok_or(Error::NoReplyTarget)?;
        if self.world(caller).map(|w| w.state) != Some(WorldState::AwaitingReply { server }) {
            if let Some(w) = self.world_mut(server) {
                w.reply_to = None;
            }
            return Err(Error::NoReplyTarget);
        }
        self.check_message(platform, server)?;
        if let Some(w) = self.world_mut(server) {
            w.reply_to = None;
        }
        self.transfer(platform, server, caller, 0);
        self.make_ready(caller);
        Ok(())
    }

    /// A server that takes a new call without replying to the previous one: that caller
    /// would wait forever, so it gets `PeerStopped`.
    #[inline]
    fn abandon_reply(&mut self, server: WorldId) {
        let Some(previous) = self.world_mut(server).and_then(|w| w.reply_to.take()) else {
            return;
        };
        if self.world(previous).map(|w| w.state) == Some(WorldState::AwaitingReply { server }) {
            if let Some(w) = self.world_mut(previous) {
                w.registers.set_result(Err(Error::PeerStopped));
            }
            self.make_ready(previous);
        }
    }

    /// Sets bits on a notification, waking its waiter.
    pub(super) fn signal_notification(&mut self, id: ObjectId, bits: u64) {
        let Some(Object::Notification(notification)) = self.object_mut(id) else {
            return;
        };
        notification.bits |= bits;
        let Some(waiter) = notification.waiter else {
            return;
        };
        let taken = core::mem::take(&mut notification.bits);
        notification.waiter = None;
        if let Some(w) = self.world_mut(waiter)
            && w.state == (WorldState::Waiting { notification: id })
        {
            w.registers.set_result(Ok([taken, 0, 0, 0, 0, 0]));
            self.make_ready(waiter);
        }
    }

    /// `wait` (blocking) or `poll` on a notification.
    pub(super) fn wait(
        &mut self,
        world: WorldId,
        slot: u64,
        block: bool,
    ) -> Result<Option<u64>, Error> {
        let (id, _) = self.capability_for(world, slot, ObjectKind::Notification, Rights::WAIT)?;
        let Some(Object::Notification(notification)) = self.object_mut(id) else {
            return Err(Error::InvalidCapability);
        };
        if notification.bits != 0 || !block {
            return Ok(Some(core::mem::take(&mut notification.bits)));
        }
        if notification.waiter.is_some_and(|w| w != world) {
            return Err(Error::InvalidArgument);
        }
        notification.waiter = Some(world);
        self.block(world, WorldState::Waiting { notification: id });
        Ok(None)
    }
}

/// The `send_caps` slots of an IPC buffer.
fn read_send_caps(platform: &mut impl Platform, buffer: PhysAddr) -> [CapSlot; MAX_MESSAGE_CAPS] {
    let mut bytes = [0u8; 16];
    platform.read_phys(buffer, &mut bytes);
    let mut slots = [0; MAX_MESSAGE_CAPS];
    for (i, slot) in slots.iter_mut().enumerate() {
        *slot = u32::from_le_bytes([
            bytes[i * 4],
            bytes[i * 4 + 1],
            bytes[i * 4 + 2],
            bytes[i * 4 + 3],
        ]);
    }
    slots
}
