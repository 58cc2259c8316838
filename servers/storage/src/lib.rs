//! `storage`: the datastore server.
//!
//! It will own the disk controller and keep a VMFS-like datastore (per-VM directories,
//! virtual disks, snapshots) with crash-safe metadata. Today it probes the ATA controller
//! it was given ([`ata`]) and answers `status` with its name, state and counters (the
//! probe's status byte among them). Everything here is plain logic behind the runtime's
//! [`Service`] trait and the [`ata::AtaPorts`] trait, tested on the host.
#![no_std]
#![forbid(unsafe_code)]

pub mod ata;

use esker_protocols::storage::{Reply, Request, Storage};
use esker_protocols::{ServerState, Status};
use esker_rt::channel::{Context, Service};

/// The server's name, as it reports itself.
pub const NAME: &str = "storage";

/// The storage server's state.
#[derive(Debug)]
pub struct StorageServer {
    state: ServerState,
    /// Datastores mounted (none until the storage milestone).
    datastores: u64,
    /// What the ATA probe found, if it ran.
    disk: Option<ata::ProbeResult>,
}

impl Default for StorageServer {
    fn default() -> Self {
        Self::new()
    }
}

impl StorageServer {
    /// A server that is ready to answer.
    pub const fn new() -> Self {
        Self {
            state: ServerState::Ready,
            datastores: 0,
            disk: None,
        }
    }

    /// Records what the ATA probe found.
    pub fn set_disk(&mut self, disk: ata::ProbeResult) {
        self.disk = Some(disk);
    }

    /// Its state.
    pub const fn state(&self) -> ServerState {
        self.state
    }

    /// The status reply: name, state, the channel's counters and its own.
    pub fn status(&self, context: &Context) -> Status {
        let mut status = Status::new(NAME, self.state);
        context.stats.add_to(&mut status);
        status.push_counter("datastores", self.datastores);
        status.push_counter(
            "ata0_ready",
            u64::from(self.disk.is_some_and(|d| d.probe == ata::Probe::Ready)),
        );
        status
    }
}

impl Service<Storage> for StorageServer {
    fn handle(&mut self, context: &Context, request: Request) -> Reply {
        match request {
            Request::Status => Reply::Status(self.status(context)),
        }
    }
}

#[cfg(test)]
mod tests {
    use esker_rt::abi::badge;
    use esker_rt::channel::loopback::Loopback;

    use super::*;

    const STATUS: u64 = badge::encode(2, 1 << 0);

    #[test]
    fn status_answers_with_name_state_and_counters() {
        let mut client = Loopback::<Storage, _>::client(StorageServer::new(), STATUS);
        let status = client.status().unwrap();
        assert_eq!(status.name.as_str(), "storage");
        assert_eq!(status.state, ServerState::Ready);
        let counters: [(&str, u64); 5] = [
            ("requests", 1),
            ("denied", 0),
            ("malformed", 0),
            ("datastores", 0),
            ("ata0_ready", 0),
        ];
        for (counter, value) in counters {
            assert_eq!(status.counter(counter), Some(value), "{counter}");
        }
        assert_eq!(client.status().unwrap().counter("requests"), Some(2));
    }

    #[test]
    fn status_reports_a_ready_disk() {
        let mut server = StorageServer::new();
        server.set_disk(ata::ProbeResult {
            status: 0x50,
            alternate_status: 0x50,
            probe: ata::Probe::Ready,
        });
        let mut client = Loopback::<Storage, _>::client(server, STATUS);
        assert_eq!(client.status().unwrap().counter("ata0_ready"), Some(1));
    }

    #[test]
    fn callers_without_the_status_bit_are_denied_and_malformed_requests_refused() {
        esker_rt::channel::loopback::assert_refuses_denied_and_malformed::<Storage, _>(
            StorageServer::new,
            2,
        );
    }
}
