//! Server protocols: for each channel protocol, its operation names in a fixed order, and
//! its typed request and reply messages.
//!
//! Operation *i* of a protocol is bit *i* of the operation mask in a client's badge
//! (`esker_abi::badge`). The manifest compiler turns `clients = { hostd = ["status"] }`
//! into that mask, the capability audit reasons about it, and each server's channel runtime
//! refuses a request whose bit is missing. The request enum of each protocol lists its
//! variants in exactly this order (checked by tests next to the enums), and
//! [`Protocol::operation`] gives a request's index.
//!
//! Messages are plain serde types with fixed-capacity `heapless` fields: the runtime
//! encodes them with postcard into the IPC buffer (at most 4096 bytes), without allocating.
#![no_std]
#![forbid(unsafe_code)]

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use common::{Counter, ServerState, Status};

/// Every protocol: `(name, operations)`.
pub const PROTOCOLS: &[(&str, &[&str])] = &[
    ("auth", auth::OPERATIONS),
    ("storage", storage::OPERATIONS),
    ("vswitch", vswitch::OPERATIONS),
    ("hostd", hostd::OPERATIONS),
    ("vmx", vmx::OPERATIONS),
];

/// The operations of a protocol, if it exists.
pub fn operations(protocol: &str) -> Option<&'static [&'static str]> {
    PROTOCOLS
        .iter()
        .find(|(name, _)| *name == protocol)
        .map(|(_, ops)| *ops)
}

/// The index (badge bit) of an operation.
pub fn operation_index(protocol: &str, operation: &str) -> Option<u32> {
    operations(protocol)?
        .iter()
        .position(|op| *op == operation)
        .map(|i| i as u32)
}

/// A typed channel protocol: what a client may send and what the server answers.
pub trait Protocol {
    /// The protocol's name (as in [`PROTOCOLS`] and the manifest).
    const NAME: &'static str;
    /// Operation names in badge-bit order.
    const OPERATIONS: &'static [&'static str];
    /// The request enum; variant *i* is operation *i*.
    type Request: Serialize + DeserializeOwned;
    /// The reply enum.
    type Reply: Serialize + DeserializeOwned;

    /// The operation index (badge bit) of a request.
    fn operation(request: &Self::Request) -> u32;
}

/// A protocol whose operation 0 is `status` (every protocol here).
pub trait StatusProtocol: Protocol {
    /// The `status` request.
    fn status_request() -> Self::Request;

    /// The status in a reply, or the reply itself if it is something else.
    fn into_status(reply: Self::Reply) -> Result<Status, Self::Reply>;
}

/// Types every protocol shares.
pub mod common {
    use heapless::{String, Vec};
    use serde::{Deserialize, Serialize};

    /// Most counters in one status reply.
    pub const MAX_COUNTERS: usize = 8;

    /// What a server is doing.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[cfg_attr(feature = "defmt", derive(defmt::Format))]
    pub enum ServerState {
        /// Setting up; requests may be refused.
        Starting,
        /// Serving normally.
        Ready,
        /// Serving, with a part not working.
        Degraded,
        /// Shutting down.
        Stopping,
    }

    impl ServerState {
        /// Lower-case name for logs and tools.
        pub const fn name(self) -> &'static str {
            match self {
                Self::Starting => "starting",
                Self::Ready => "ready",
                Self::Degraded => "degraded",
                Self::Stopping => "stopping",
            }
        }
    }

    /// One named counter.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Counter {
        /// Its name (`requests`, `denied`, …).
        pub name: String<24>,
        /// Its value.
        pub value: u64,
    }

    /// The answer to every protocol's `status` request.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Status {
        /// The server's name (`vmkauthd`, `storage`, …).
        pub name: String<16>,
        /// Its state.
        pub state: ServerState,
        /// Its counters, in a fixed order per server.
        pub counters: Vec<Counter, MAX_COUNTERS>,
    }

    impl Status {
        /// A status without counters; `name` is cut to 16 bytes.
        pub fn new(name: &str, state: ServerState) -> Self {
            Self {
                name: truncated(name),
                state,
                counters: Vec::new(),
            }
        }

        /// Adds a counter (names are cut to 24 bytes); returns `false` if the list is full.
        pub fn push_counter(&mut self, name: &str, value: u64) -> bool {
            self.counters
                .push(Counter {
                    name: truncated(name),
                    value,
                })
                .is_ok()
        }

        /// A counter's value by name.
        pub fn counter(&self, name: &str) -> Option<u64> {
            self.counters
                .iter()
                .find(|c| c.name == name)
                .map(|c| c.value)
        }
    }

    /// `text` cut to at most `N` bytes, on a character boundary.
    pub fn truncated<const N: usize>(text: &str) -> String<N> {
        let mut out = String::new();
        for c in text.chars() {
            if out.push(c).is_err() {
                break;
            }
        }
        out
    }

    /// `vmkauthd ready, requests 3, denied 0, …`
    #[cfg(feature = "defmt")]
    impl defmt::Format for Status {
        fn format(&self, f: defmt::Formatter<'_>) {
            defmt::write!(f, "{=str} {=str}", self.name.as_str(), self.state.name());
            for counter in &self.counters {
                defmt::write!(f, ", {=str} {=u64}", counter.name.as_str(), counter.value);
            }
        }
    }
}

/// `vmkauthd`: authentication and tickets.
pub mod auth {
    use heapless::String;
    use serde::{Deserialize, Serialize};

    use crate::Status;

    /// Operation names, in badge-bit order.
    pub const OPERATIONS: &[&str] = &["status", "issue_ticket", "verify_ticket"];

    /// Longest user name.
    pub const MAX_USER: usize = 32;

    /// A user name.
    pub type UserName = String<MAX_USER>;

    /// The `auth` protocol.
    #[derive(Clone, Copy, Debug)]
    pub enum Auth {}

    /// A short-lived, unforgeable statement "`user` is authenticated until `expires_at`".
    ///
    /// `mac` is a keyed BLAKE3 hash (key known only to vmkauthd) over the other fields, so
    /// any change to them makes the ticket invalid.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Ticket {
        /// Who it authenticates.
        pub user: UserName,
        /// Serial number, unique per vmkauthd run.
        pub serial: u64,
        /// When it was issued (vmkauthd's clock, seconds).
        pub issued_at: u64,
        /// When it stops being valid (vmkauthd's clock, seconds).
        pub expires_at: u64,
        /// The authenticator.
        pub mac: [u8; 32],
    }

    /// Requests, in [`OPERATIONS`] order.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub enum Request {
        /// Name, state and counters.
        Status,
        /// Issue a ticket for `user`, valid for `lifetime_secs` (clamped by the server).
        /// The caller vouches for the user (only hostd holds this operation).
        IssueTicket {
            /// The user.
            user: UserName,
            /// Requested lifetime in seconds (at least 1).
            lifetime_secs: u32,
        },
        /// Check a ticket.
        VerifyTicket {
            /// The ticket presented by a client.
            ticket: Ticket,
        },
    }

    /// Why a ticket was not issued or not accepted.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[cfg_attr(feature = "defmt", derive(defmt::Format))]
    pub enum TicketError {
        /// The user name is empty or not printable ASCII.
        InvalidUser,
        /// The requested lifetime is zero.
        InvalidLifetime,
        /// The ticket's authenticator does not match its contents.
        Forged,
        /// The ticket has expired.
        Expired,
    }

    /// Replies.
    // Messages are plain values decoded once per call, without an allocator to box into.
    #[allow(clippy::large_enum_variant)]
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub enum Reply {
        /// To `Status`.
        Status(Status),
        /// To `IssueTicket`: the new ticket.
        Ticket(Ticket),
        /// To `VerifyTicket`: the ticket is valid.
        Valid {
            /// Whom it authenticates.
            user: UserName,
            /// Until when.
            expires_at: u64,
        },
        /// To `IssueTicket` or `VerifyTicket`: refused.
        Refused(TicketError),
    }

    impl crate::Protocol for Auth {
        const NAME: &'static str = "auth";
        const OPERATIONS: &'static [&'static str] = OPERATIONS;
        type Request = Request;
        type Reply = Reply;

        fn operation(request: &Request) -> u32 {
            match request {
                Request::Status => 0,
                Request::IssueTicket { .. } => 1,
                Request::VerifyTicket { .. } => 2,
            }
        }
    }

    impl crate::StatusProtocol for Auth {
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
}

/// Declares the types of a protocol whose only operation (so far) is `status`; the module
/// defines `OPERATIONS` itself.
macro_rules! status_only_protocol {
    ($name:literal, $marker:ident) => {
        use serde::{Deserialize, Serialize};

        use crate::Status;

        #[doc = concat!("The `", $name, "` protocol.")]
        #[derive(Clone, Copy, Debug)]
        pub enum $marker {}

        /// Requests, in [`OPERATIONS`] order.
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        pub enum Request {
            /// Name, state and counters.
            Status,
        }

        /// Replies.
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        pub enum Reply {
            /// To `Status`.
            Status(Status),
        }

        impl crate::Protocol for $marker {
            const NAME: &'static str = $name;
            const OPERATIONS: &'static [&'static str] = OPERATIONS;
            type Request = Request;
            type Reply = Reply;

            fn operation(request: &Request) -> u32 {
                match request {
                    Request::Status => 0,
                }
            }
        }

        impl crate::StatusProtocol for $marker {
            fn status_request() -> Request {
                Request::Status
            }

            fn into_status(reply: Reply) -> Result<Status, Reply> {
                match reply {
                    Reply::Status(status) => Ok(status),
                }
            }
        }
    };
}

/// `storage`: datastore and virtual disks.
pub mod storage {
    /// Operation names, in badge-bit order.
    pub const OPERATIONS: &[&str] = &["status"];

    status_only_protocol!("storage", Storage);
}

/// `vswitch`: the virtual switch.
pub mod vswitch {
    /// Operation names, in badge-bit order.
    pub const OPERATIONS: &[&str] = &["status"];

    /// The first record a monitor puts on its VM's NIC ring (shared memory between vmx and
    /// vswitch, `esker_rt::ring`): the virtual NIC is up. Frames follow as further records.
    pub const RING_LINK_UP: &[u8] = b"esker link up";

    status_only_protocol!("vswitch", Vswitch);
}

/// `hostd`: host management.
pub mod hostd {
    /// Operation names, in badge-bit order.
    pub const OPERATIONS: &[&str] = &["status"];

    status_only_protocol!("hostd", Hostd);
}

/// `vmx`: the per-VM monitor's control channel.
pub mod vmx {
    /// Operation names, in badge-bit order.
    pub const OPERATIONS: &[&str] = &["status"];

    status_only_protocol!("vmx", Vmx);
}

#[cfg(test)]
extern crate std;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_protocol_starts_with_status_and_fits_a_badge() {
        for (name, ops) in PROTOCOLS {
            assert_eq!(ops.first(), Some(&"status"), "{name}");
            assert!(
                ops.len() <= 32,
                "{name} has more operations than badge bits"
            );
        }
        assert_eq!(operation_index("auth", "issue_ticket"), Some(1));
        assert_eq!(operation_index("auth", "fly"), None);
        assert_eq!(operations("nope"), None);
    }

    /// Checks that each sample request is encoded with variant index == operation index ==
    /// the position of `name` in the protocol's operations, and that the samples cover
    /// every operation.
    fn check_order<P: Protocol>(samples: &[(&str, P::Request)]) {
        assert_eq!(
            operations(P::NAME),
            Some(P::OPERATIONS),
            "{} is listed in PROTOCOLS",
            P::NAME
        );
        assert_eq!(
            samples.len(),
            P::OPERATIONS.len(),
            "{}: one sample per operation",
            P::NAME
        );
        for (name, request) in samples {
            let op = P::operation(request);
            assert_eq!(
                Some(op),
                operation_index(P::NAME, name),
                "{}: {name}",
                P::NAME
            );
            let mut buf = [0u8; 512];
            let bytes = postcard::to_slice(request, &mut buf).expect("encodes");
            // postcard writes the variant index first, as a varint (one byte below 128).
            assert_eq!(
                u32::from(bytes[0]),
                op,
                "{}: variant of {name} is not operation {op}",
                P::NAME
            );
        }
    }

    #[test]
    fn request_variants_follow_operation_order() {
        let ticket = auth::Ticket {
            user: common::truncated("root"),
            serial: 1,
            issued_at: 2,
            expires_at: 3,
            mac: [7; 32],
        };
        check_order::<auth::Auth>(&[
            ("status", auth::Request::Status),
            (
                "issue_ticket",
                auth::Request::IssueTicket {
                    user: common::truncated("root"),
                    lifetime_secs: 60,
                },
            ),
            ("verify_ticket", auth::Request::VerifyTicket { ticket }),
        ]);
        check_order::<storage::Storage>(&[("status", storage::Request::Status)]);
        check_order::<vswitch::Vswitch>(&[("status", vswitch::Request::Status)]);
        check_order::<hostd::Hostd>(&[("status", hostd::Request::Status)]);
        check_order::<vmx::Vmx>(&[("status", vmx::Request::Status)]);
    }

    #[test]
    fn status_round_trips_and_fits_a_message() {
        let mut status = Status::new("a-very-long-server-name-indeed", ServerState::Ready);
        assert_eq!(status.name.as_str(), "a-very-long-serv");
        for i in 0..common::MAX_COUNTERS {
            assert!(
                status.push_counter("a-counter-name-that-is-too-long", u64::MAX / 8 * i as u64)
            );
        }
        assert!(!status.push_counter("one too many", 1));
        let mut buf = [0u8; 4096];
        let bytes = postcard::to_slice(&auth::Reply::Status(status.clone()), &mut buf)
            .expect("fits a message");
        let (back, rest): (auth::Reply, _) = postcard::take_from_bytes(bytes).expect("decodes");
        assert!(rest.is_empty());
        assert_eq!(back, auth::Reply::Status(status.clone()));
        assert_eq!(status.counter("a-counter-name-that-is-t"), Some(0));
    }

    /// Generic tools (the hostile test world, a management CLI) ask any server for its
    /// status with one protocol's types: that only works while `status` encodes the same
    /// everywhere.
    #[test]
    fn status_requests_and_replies_encode_the_same_in_every_protocol() {
        fn encode<T: serde::Serialize>(value: &T) -> std::vec::Vec<u8> {
            let mut buf = [0u8; 512];
            postcard::to_slice(value, &mut buf)
                .expect("encodes")
                .to_vec()
        }
        let mut status = Status::new("storage", ServerState::Degraded);
        status.push_counter("requests", 3);
        let request = encode(&hostd::Request::Status);
        let reply = encode(&hostd::Reply::Status(status.clone()));
        assert_eq!(encode(&auth::Request::Status), request);
        assert_eq!(encode(&storage::Request::Status), request);
        assert_eq!(encode(&vswitch::Request::Status), request);
        assert_eq!(encode(&vmx::Request::Status), request);
        assert_eq!(encode(&auth::Reply::Status(status.clone())), reply);
        assert_eq!(encode(&storage::Reply::Status(status.clone())), reply);
        assert_eq!(encode(&vswitch::Reply::Status(status.clone())), reply);
        assert_eq!(encode(&vmx::Reply::Status(status)), reply);
    }

    #[test]
    fn truncation_respects_character_boundaries() {
        let cut: heapless::String<4> = common::truncated("aéé");
        assert_eq!(cut.as_str(), "aé");
    }
}
