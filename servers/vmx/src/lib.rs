//! `vmx`: the per-VM monitor world.
//!
//! One vmx world runs per powered-on VM: it will load the guest, own its device models and
//! handle every VM exit the kernel forwards. Today it gets as far as a monitor does before
//! power-on: it checks that its backends (vmkauthd, storage, vswitch) answer
//! ([`BACKENDS`]), brings up the VM's virtual NIC on the shared-memory ring to the switch
//! ([`VmxServer::attach_nic`]), and answers `status` on its control channel. Everything
//! here is plain logic behind the runtime's traits, tested on the host.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod config;
pub mod decode;
pub mod devices;
pub mod loader;
pub mod memory;
pub mod monitor;
pub mod package;

use esker_protocols::vmx::{Reply, Request, Vmx};
use esker_protocols::{ServerState, Status};
use esker_rt::ChannelError;
use esker_rt::channel::{Context, Service};
use esker_rt::ring::{NoMemory, Producer, RingError, RingMemory};

/// The servers a monitor needs before it powers a VM on: `(server, capability)`.
pub const BACKENDS: [(&str, &str); 3] = [
    ("vmkauthd", "call:auth"),
    ("storage", "call:storage"),
    ("vswitch", "call:vswitch"),
];

/// The server's name, as it reports itself.
pub const NAME: &str = "vmx";

/// The vmx server's state.
#[derive(Debug)]
pub struct VmxServer<M: RingMemory = NoMemory> {
    state: ServerState,
    /// VM exits handled (none until the VM milestone).
    vm_exits: u64,
    /// Backends that answered `ready`.
    backends_ready: u64,
    /// The virtual NIC's ring to the switch, once attached.
    nic: Option<Producer<M>>,
    /// Records put on the NIC ring.
    nic_records: u64,
}

impl Default for VmxServer {
    fn default() -> Self {
        Self::new()
    }
}

impl VmxServer {
    /// A server that is ready to answer.
    pub const fn new() -> Self {
        Self {
            state: ServerState::Ready,
            vm_exits: 0,
            backends_ready: 0,
            nic: None,
            nic_records: 0,
        }
    }
}

impl<M: RingMemory> VmxServer<M> {
    /// A server whose virtual NIC is attached later ([`Self::attach_nic`]) to a ring in
    /// memory of type `M`.
    pub const fn with_nic_memory() -> Self {
        Self {
            state: ServerState::Ready,
            vm_exits: 0,
            backends_ready: 0,
            nic: None,
            nic_records: 0,
        }
    }

    /// Records what a backend answered to `status`.
    pub fn record_backend(&mut self, answer: &Result<Status, ChannelError>) {
        if matches!(answer, Ok(status) if status.state == ServerState::Ready) {
            self.backends_ready += 1;
        }
    }

    /// Attaches the virtual NIC to its ring and announces the link to the switch. The
    /// caller rings the switch's doorbell afterwards.
    pub fn attach_nic(&mut self, memory: M) -> Result<(), RingError> {
        let mut ring = Producer::attach(memory)?;
        ring.push(esker_protocols::vswitch::RING_LINK_UP)?;
        self.nic_records += 1;
        self.nic = Some(ring);
        Ok(())
    }

    /// Its state.
    pub const fn state(&self) -> ServerState {
        self.state
    }

    /// The status reply: name, state, the channel's counters and its own.
    pub fn status(&self, context: &Context) -> Status {
        let mut status = Status::new(NAME, self.state);
        context.stats.add_to(&mut status);
        status.push_counter("vm_exits", self.vm_exits);
        status.push_counter("backends_ready", self.backends_ready);
        status.push_counter("nic_records", self.nic_records);
        status
    }
}

impl<M: RingMemory> Service<Vmx> for VmxServer<M> {
    fn handle(&mut self, context: &Context, request: Request) -> Reply {
        match request {
            Request::Status => Reply::Status(self.status(context)),
        }
    }
}

#[cfg(test)]
mod tests {
    use esker_rt::ChannelError;
    use esker_rt::abi::badge;
    use esker_rt::channel::loopback::Loopback;

    use super::*;

    const STATUS: u64 = badge::encode(2, 1 << 0);

    #[test]
    fn status_answers_with_name_state_and_counters() {
        let mut client = Loopback::<Vmx, _>::client(VmxServer::new(), STATUS);
        let status = client.status().unwrap();
        assert_eq!(status.name.as_str(), "vmx");
        assert_eq!(status.state, ServerState::Ready);
        let counters: [(&str, u64); 6] = [
            ("requests", 1),
            ("denied", 0),
            ("malformed", 0),
            ("vm_exits", 0),
            ("backends_ready", 0),
            ("nic_records", 0),
        ];
        for (counter, value) in counters {
            assert_eq!(status.counter(counter), Some(value), "{counter}");
        }
        assert_eq!(client.status().unwrap().counter("requests"), Some(2));
    }

    #[test]
    fn backends_and_the_nic_show_in_the_status() {
        use core::cell::Cell;
        use esker_rt::ring::{CellMemory, Consumer};

        let mut bytes = std::vec![0u8; 1024];
        let memory = CellMemory::new(Cell::from_mut(&mut bytes[..]).as_slice_of_cells());
        let mut server = VmxServer::with_nic_memory();
        server.record_backend(&Ok(Status::new("storage", ServerState::Ready)));
        server.record_backend(&Ok(Status::new("vswitch", ServerState::Degraded)));
        server.record_backend(&Err(ChannelError::Denied));
        server.attach_nic(memory).unwrap();
        let mut switch = Consumer::attach(memory).unwrap();
        let mut frame = [0u8; 64];
        let len = switch.pop(&mut frame).unwrap().unwrap();
        assert_eq!(&frame[..len], esker_protocols::vswitch::RING_LINK_UP);
        let mut client = Loopback::<Vmx, _>::client(server, STATUS);
        let status = client.status().unwrap();
        assert_eq!(
            (
                status.counter("backends_ready"),
                status.counter("nic_records")
            ),
            (Some(1), Some(1))
        );
        assert_eq!(
            VmxServer::<CellMemory<'_>>::with_nic_memory().attach_nic(CellMemory::new(&[])),
            Err(RingError::RegionTooSmall)
        );
    }

    #[test]
    fn callers_without_the_status_bit_are_denied_and_malformed_requests_refused() {
        esker_rt::channel::loopback::assert_refuses_denied_and_malformed::<Vmx, _>(
            VmxServer::new,
            2,
        );
    }
}
