//! `vmkauthd`: authentication tickets.
//!
//! Like ESX's vmkauthd (port 903), it vouches for a user for a short time: it issues
//! tickets and later tells other servers whether a ticket is genuine and still valid.
//!
//! A [`Ticket`] carries the user, a serial number, its issue and expiry times and a keyed
//! BLAKE3 hash over all of them, keyed with a 32-byte secret that never leaves this world
//! (the world draws it from `rdrand` at start). Changing any field, or making a ticket up,
//! gives a hash that does not match (compared in constant time). Expiry is checked
//! against this server's own monotonic clock, so a ticket cannot outlive its lifetime
//! whatever the client claims.
//!
//! Who may issue tickets is decided by badges: only a world whose badge includes
//! `issue_ticket` (hostd, which authenticates the user first) reaches [`TicketAuthority::
//! issue`]; the channel runtime refuses everyone else. There is no password store here
//! yet. Keys live only in memory: a restart invalidates every ticket, which is the
//! intended behaviour for a short-lived credential.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

use esker_protocols::auth::{Auth, Reply, Request, Ticket, TicketError, UserName};
use esker_protocols::{ServerState, Status};
use esker_rt::channel::{Context, Service};

/// The server's name, as it reports itself.
pub const NAME: &str = "vmkauthd";

/// Longest lifetime a ticket is issued with, in seconds; longer requests are clamped.
pub const MAX_LIFETIME_SECS: u32 = 3600;

/// Domain separation for the ticket authenticator.
const MAC_CONTEXT: &[u8] = b"esker vmkauthd ticket v1\0";

/// A source of monotonic time in seconds.
pub trait Clock {
    /// Seconds since some fixed point (boot).
    fn now_secs(&self) -> u64;
}

impl Clock for esker_rt::time::Monotonic {
    fn now_secs(&self) -> u64 {
        esker_rt::time::Monotonic::now_secs(self)
    }
}

/// Issues and verifies tickets with one secret key.
pub struct TicketAuthority {
    key: [u8; 32],
    next_serial: u64,
}

impl core::fmt::Debug for TicketAuthority {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never print the key.
        f.debug_struct("TicketAuthority")
            .field("next_serial", &self.next_serial)
            .finish_non_exhaustive()
    }
}

impl TicketAuthority {
    /// An authority with `key` (32 secret random bytes).
    pub const fn new(key: [u8; 32]) -> Self {
        Self {
            key,
            next_serial: 1,
        }
    }

    /// Issues a ticket for `user`, valid from `now` for `lifetime_secs` (at most
    /// [`MAX_LIFETIME_SECS`]).
    pub fn issue(
        &mut self,
        user: &UserName,
        lifetime_secs: u32,
        now: u64,
    ) -> Result<Ticket, TicketError> {
        if user.is_empty() || !user.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TicketError::InvalidUser);
        }
        if lifetime_secs == 0 {
            return Err(TicketError::InvalidLifetime);
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        let expires_at = now.saturating_add(u64::from(lifetime_secs.min(MAX_LIFETIME_SECS)));
        let mut ticket = Ticket {
            user: user.clone(),
            serial,
            issued_at: now,
            expires_at,
            mac: [0; 32],
        };
        ticket.mac = *self.mac(&ticket).as_bytes();
        Ok(ticket)
    }

    /// Checks that `ticket` was issued by this authority, unchanged, and has not expired
    /// at `now`.
    pub fn verify(&self, ticket: &Ticket, now: u64) -> Result<(), TicketError> {
        // `blake3::Hash` compares in constant time.
        if self.mac(ticket) != blake3::Hash::from_bytes(ticket.mac) {
            return Err(TicketError::Forged);
        }
        if now >= ticket.expires_at {
            return Err(TicketError::Expired);
        }
        Ok(())
    }

    /// The authenticator of every field but `mac`.
    fn mac(&self, ticket: &Ticket) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(MAC_CONTEXT);
        hasher.update(&ticket.serial.to_le_bytes());
        hasher.update(&ticket.issued_at.to_le_bytes());
        hasher.update(&ticket.expires_at.to_le_bytes());
        // The user is last, after its length, so no two field lists hash the same input.
        hasher.update(&[ticket.user.len() as u8]);
        hasher.update(ticket.user.as_bytes());
        hasher.finalize()
    }
}

/// What vmkauthd counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Tickets issued.
    pub issued: u64,
    /// Tickets found valid.
    pub verified: u64,
    /// Issue or verify requests refused.
    pub refused: u64,
}

/// The vmkauthd server.
#[derive(Debug)]
pub struct Vmkauthd<C: Clock> {
    authority: TicketAuthority,
    clock: C,
    counters: Counters,
}

impl<C: Clock> Vmkauthd<C> {
    /// A server with ticket key `key` and clock `clock`.
    pub const fn new(key: [u8; 32], clock: C) -> Self {
        Self {
            authority: TicketAuthority::new(key),
            clock,
            counters: Counters {
                issued: 0,
                verified: 0,
                refused: 0,
            },
        }
    }

    /// What it counted.
    pub const fn counters(&self) -> Counters {
        self.counters
    }

    /// The clock (tests move it).
    pub fn clock_mut(&mut self) -> &mut C {
        &mut self.clock
    }

    /// The status reply.
    pub fn status(&self, context: &Context) -> Status {
        let mut status = Status::new(NAME, ServerState::Ready);
        context.stats.add_to(&mut status);
        status.push_counter("tickets_issued", self.counters.issued);
        status.push_counter("tickets_verified", self.counters.verified);
        status.push_counter("tickets_refused", self.counters.refused);
        status
    }

    fn refused(&mut self, error: TicketError) -> Reply {
        self.counters.refused += 1;
        Reply::Refused(error)
    }
}

impl<C: Clock> Service<Auth> for Vmkauthd<C> {
    fn handle(&mut self, context: &Context, request: Request) -> Reply {
        let now = self.clock.now_secs();
        match request {
            Request::Status => Reply::Status(self.status(context)),
            Request::IssueTicket {
                user,
                lifetime_secs,
            } => match self.authority.issue(&user, lifetime_secs, now) {
                Ok(ticket) => {
                    self.counters.issued += 1;
                    Reply::Ticket(ticket)
                }
                Err(error) => self.refused(error),
            },
            Request::VerifyTicket { ticket } => match self.authority.verify(&ticket, now) {
                Ok(()) => {
                    self.counters.verified += 1;
                    Reply::Valid {
                        user: ticket.user,
                        expires_at: ticket.expires_at,
                    }
                }
                Err(error) => self.refused(error),
            },
        }
    }
}

#[cfg(test)]
mod tests;
