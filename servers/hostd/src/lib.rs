//! `hostd`: the management plane.
//!
//! It will hold the VM inventory and carry out power operations and configuration changes
//! for the host-side tools. Today it does what proves the system is assembled: at start it
//! asks every other server for its status ([`PEERS`], through its `call:` capabilities),
//! records what each answered, has vmkauthd issue a ticket and verify it ([`check_tickets`],
//! the path management logins will take), and then answers `status` itself, reporting how
//! many peers are ready. All of it is plain logic over the runtime's channel types, tested on the host
//! against the real servers' logic through loopback channels.
#![no_std]
#![forbid(unsafe_code)]

use esker_protocols::auth::{self, Auth, TicketError};
use esker_protocols::hostd::{Hostd as HostdProtocol, Reply, Request};
use esker_protocols::{ServerState, Status, StatusProtocol};
use esker_rt::ChannelError;
use esker_rt::channel::{Client, Context, Service, Transport};

/// The server's name, as it reports itself.
pub const NAME: &str = "hostd";

/// The servers hostd surveys at start: `(server name, capability it calls through)`, in
/// the order it asks them.
pub const PEERS: [(&str, &str); 4] = [
    ("vmkauthd", "call:auth"),
    ("storage", "call:storage"),
    ("vswitch", "call:vswitch"),
    ("vmx", "call:vmx"),
];

/// What a peer answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerOutcome {
    /// Not asked yet.
    NotAsked,
    /// It answered with this state.
    Answered(ServerState),
    /// The call failed.
    Failed(ChannelError),
}

/// Asks a peer for its status.
pub fn ask_status<P: StatusProtocol, T: Transport>(
    client: &mut Client<P, T>,
) -> Result<Status, ChannelError> {
    client.status()
}

/// What became of a ticket hostd had vmkauthd issue and then verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TicketCheck {
    /// Issued and found valid.
    Verified {
        /// The ticket's serial number.
        serial: u64,
        /// When it expires (vmkauthd's clock, seconds).
        expires_at: u64,
    },
    /// vmkauthd would not issue it.
    IssueRefused(TicketError),
    /// vmkauthd issued it but did not accept it back.
    VerifyRefused(TicketError),
}

/// Has vmkauthd issue a ticket for `user`, then verify it.
pub fn check_tickets<T: Transport>(
    auth: &mut Client<Auth, T>,
    user: &str,
    lifetime_secs: u32,
) -> Result<TicketCheck, ChannelError> {
    let user = esker_protocols::common::truncated(user);
    let ticket = match auth.call(&auth::Request::IssueTicket {
        user,
        lifetime_secs,
    })? {
        auth::Reply::Ticket(ticket) => ticket,
        auth::Reply::Refused(error) => return Ok(TicketCheck::IssueRefused(error)),
        _ => return Err(ChannelError::UnexpectedReply),
    };
    let (serial, expires_at) = (ticket.serial, ticket.expires_at);
    match auth.call(&auth::Request::VerifyTicket { ticket })? {
        auth::Reply::Valid { .. } => Ok(TicketCheck::Verified { serial, expires_at }),
        auth::Reply::Refused(error) => Ok(TicketCheck::VerifyRefused(error)),
        _ => Err(ChannelError::UnexpectedReply),
    }
}

/// The hostd server.
#[derive(Debug)]
pub struct Hostd {
    peers: [PeerOutcome; PEERS.len()],
}

impl Default for Hostd {
    fn default() -> Self {
        Self::new()
    }
}

impl Hostd {
    /// Nothing asked yet.
    pub const fn new() -> Self {
        Self {
            peers: [PeerOutcome::NotAsked; PEERS.len()],
        }
    }

    /// Records what `server` (one of [`PEERS`]) answered; unknown names are ignored.
    pub fn record(&mut self, server: &str, answer: &Result<Status, ChannelError>) {
        if let Some(i) = PEERS.iter().position(|(name, _)| *name == server) {
            self.peers[i] = match answer {
                Ok(status) => PeerOutcome::Answered(status.state),
                Err(error) => PeerOutcome::Failed(*error),
            };
        }
    }

    /// What `server` answered.
    pub fn peer(&self, server: &str) -> Option<PeerOutcome> {
        PEERS
            .iter()
            .position(|(name, _)| *name == server)
            .map(|i| self.peers[i])
    }

    fn count(&self, f: impl Fn(&PeerOutcome) -> bool) -> u64 {
        self.peers.iter().filter(|p| f(p)).count() as u64
    }

    /// Ready once every peer answered `ready`; degraded if any failed or is not ready.
    pub fn state(&self) -> ServerState {
        let ready = self.count(|p| *p == PeerOutcome::Answered(ServerState::Ready));
        let asked = self.count(|p| *p != PeerOutcome::NotAsked);
        if ready == PEERS.len() as u64 {
            ServerState::Ready
        } else if asked < PEERS.len() as u64 {
            ServerState::Starting
        } else {
            ServerState::Degraded
        }
    }

    /// The status reply.
    pub fn status(&self, context: &Context) -> Status {
        let mut status = Status::new(NAME, self.state());
        context.stats.add_to(&mut status);
        status.push_counter(
            "peers_ready",
            self.count(|p| *p == PeerOutcome::Answered(ServerState::Ready)),
        );
        status.push_counter(
            "peers_failed",
            self.count(|p| matches!(p, PeerOutcome::Failed(_))),
        );
        status
    }
}

impl Service<HostdProtocol> for Hostd {
    fn handle(&mut self, context: &Context, request: Request) -> Reply {
        match request {
            Request::Status => Reply::Status(self.status(context)),
        }
    }
}

#[cfg(test)]
mod tests {
    use esker_rt::abi::{Error, badge};
    use esker_rt::channel::loopback::Loopback;

    use super::*;

    const HOSTD: u64 = badge::encode(4, 0b1);

    fn survey_real_servers(hostd: &mut Hostd) {
        let mut auth = Loopback::client(esker_vmkauthd::Vmkauthd::new([1; 32], Frozen), HOSTD);
        let mut storage = Loopback::client(esker_storage::StorageServer::new(), HOSTD);
        let mut vswitch = Loopback::client(esker_vswitch::VswitchServer::new(), HOSTD);
        let mut vmx = Loopback::client(esker_vmx::VmxServer::new(), HOSTD);
        let answers = [
            (
                "vmkauthd",
                ask_status::<esker_protocols::auth::Auth, _>(&mut auth),
            ),
            (
                "storage",
                ask_status::<esker_protocols::storage::Storage, _>(&mut storage),
            ),
            (
                "vswitch",
                ask_status::<esker_protocols::vswitch::Vswitch, _>(&mut vswitch),
            ),
            ("vmx", ask_status::<esker_protocols::vmx::Vmx, _>(&mut vmx)),
        ];
        for (server, answer) in &answers {
            let status = answer.as_ref().expect("every server answers");
            assert_eq!(status.name.as_str(), *server);
            hostd.record(server, answer);
        }
    }

    struct Frozen;

    impl esker_vmkauthd::Clock for Frozen {
        fn now_secs(&self) -> u64 {
            0
        }
    }

    #[test]
    fn hostd_is_ready_once_every_server_answered() {
        let mut hostd = Hostd::new();
        assert_eq!(hostd.state(), ServerState::Starting);
        survey_real_servers(&mut hostd);
        assert_eq!(hostd.state(), ServerState::Ready);
        let mut client = Loopback::client(hostd, HOSTD);
        let status = ask_status::<HostdProtocol, _>(&mut client).unwrap();
        assert_eq!(status.name.as_str(), "hostd");
        assert_eq!(status.state, ServerState::Ready);
        assert_eq!(status.counter("peers_ready"), Some(4));
        assert_eq!(status.counter("peers_failed"), Some(0));
        assert_eq!(status.counter("requests"), Some(1));
    }

    #[test]
    fn tickets_issued_through_vmkauthd_verify() {
        let all = badge::encode(4, 0b111);
        let mut auth = Loopback::client(esker_vmkauthd::Vmkauthd::new([1; 32], Frozen), all);
        assert_eq!(
            check_tickets(&mut auth, "root", 60),
            Ok(TicketCheck::Verified {
                serial: 1,
                expires_at: 60
            })
        );
        assert_eq!(
            check_tickets(&mut auth, "", 60),
            Ok(TicketCheck::IssueRefused(TicketError::InvalidUser))
        );
        auth.transport_mut().set_badge(badge::encode(4, 0b001));
        assert_eq!(
            check_tickets(&mut auth, "root", 60),
            Err(ChannelError::Denied)
        );
        auth.transport_mut().set_badge(badge::encode(4, 0b011));
        assert_eq!(
            check_tickets(&mut auth, "root", 60),
            Err(ChannelError::Denied),
            "issue allowed, verify not"
        );
    }

    #[test]
    fn a_failed_peer_makes_hostd_degraded() {
        let mut hostd = Hostd::new();
        survey_real_servers(&mut hostd);
        hostd.record("vmx", &Err(ChannelError::Kernel(Error::PeerStopped)));
        hostd.record("nobody", &Err(ChannelError::Denied));
        assert_eq!(
            hostd.peer("vmx"),
            Some(PeerOutcome::Failed(ChannelError::Kernel(
                Error::PeerStopped
            )))
        );
        assert_eq!(hostd.state(), ServerState::Degraded);
        let mut client = Loopback::client(hostd, HOSTD);
        let status = client.status().unwrap();
        assert_eq!(
            (
                status.counter("peers_ready"),
                status.counter("peers_failed")
            ),
            (Some(3), Some(1))
        );
    }

    #[test]
    fn peers_refusing_hostd_show_up_as_failures() {
        let mut storage =
            Loopback::client(esker_storage::StorageServer::new(), badge::encode(4, 0));
        let answer = ask_status::<esker_protocols::storage::Storage, _>(&mut storage);
        assert_eq!(answer, Err(ChannelError::Denied));
        let mut hostd = Hostd::new();
        hostd.record("storage", &answer);
        assert_eq!(
            hostd.peer("storage"),
            Some(PeerOutcome::Failed(ChannelError::Denied))
        );
    }

    #[test]
    fn callers_without_the_status_bit_are_denied_and_malformed_requests_refused() {
        esker_rt::channel::loopback::assert_refuses_denied_and_malformed::<HostdProtocol, _>(
            Hostd::new,
            1,
        );
    }
}
