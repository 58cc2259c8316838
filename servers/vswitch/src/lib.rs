//! `vswitch`: the virtual switch.
//!
//! It will own the physical NICs and switch frames between virtual NICs by port group.
//! Today it has one port: the NIC ring of VM vm1, a shared-memory ring
//! (`esker_rt::ring`) that vm1's monitor fills and this server drains, with a notification
//! as doorbell. It drains the ring whenever it handles a request and answers `status` with
//! its name, state and counters. Everything here is plain logic behind the runtime's
//! [`Service`] trait and the [`Doorbell`] trait, tested on the host with a ring in a `Vec`.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

use esker_protocols::vswitch::{Reply, Request, Vswitch};
use esker_protocols::{ServerState, Status};
use esker_rt::Error;
use esker_rt::channel::{Context, Service};
use esker_rt::ring::{Consumer, NoMemory, RingError, RingMemory};

/// The server's name, as it reports itself.
pub const NAME: &str = "vswitch";

/// Largest frame a port takes (Ethernet with a VLAN tag); longer records are dropped.
pub const MAX_FRAME: usize = 1522;

/// Most records drained per request, so a busy ring cannot delay answers without bound.
pub const DRAIN_BUDGET: usize = 64;

/// The notification a port's producer rings after pushing.
pub trait Doorbell {
    /// Takes and clears the pending bits (0 if none).
    fn take(&mut self) -> Result<u64, Error>;
}

/// No doorbell (for a server without a port).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoDoorbell;

impl Doorbell for NoDoorbell {
    fn take(&mut self) -> Result<u64, Error> {
        Ok(0)
    }
}

/// What the switch counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Records taken off port rings.
    pub records: u64,
    /// Records dropped for being longer than [`MAX_FRAME`].
    pub oversized: u64,
    /// Ports detached because their ring was corrupt.
    pub ring_errors: u64,
}

/// One port: the consumer end of a NIC ring and its doorbell.
#[derive(Debug)]
struct Port<M: RingMemory, D: Doorbell> {
    ring: Consumer<M>,
    doorbell: D,
}

/// The vswitch server.
#[derive(Debug)]
pub struct VswitchServer<M: RingMemory = NoMemory, D: Doorbell = NoDoorbell> {
    port: Option<Port<M, D>>,
    counters: Counters,
    degraded: bool,
}

impl Default for VswitchServer {
    fn default() -> Self {
        Self::new()
    }
}

impl VswitchServer {
    /// A switch without ports.
    pub const fn new() -> Self {
        Self {
            port: None,
            counters: Counters {
                records: 0,
                oversized: 0,
                ring_errors: 0,
            },
            degraded: false,
        }
    }
}

impl<M: RingMemory, D: Doorbell> VswitchServer<M, D> {
    /// A switch with one port on the ring in `memory`, rung by `doorbell`.
    pub fn with_port(memory: M, doorbell: D) -> Result<Self, RingError> {
        let ring = Consumer::attach(memory)?;
        Ok(Self {
            port: Some(Port { ring, doorbell }),
            counters: Counters::default(),
            degraded: false,
        })
    }

    /// What it counted.
    pub const fn counters(&self) -> Counters {
        self.counters
    }

    /// Takes up to [`DRAIN_BUDGET`] records off the port's ring. A corrupt ring detaches
    /// the port (its peer is broken or hostile) and marks the switch degraded.
    pub fn drain(&mut self) {
        let Some(port) = &mut self.port else { return };
        let _ = port.doorbell.take();
        let mut frame = [0u8; MAX_FRAME];
        for _ in 0..DRAIN_BUDGET {
            match port.ring.pop(&mut frame) {
                Ok(Some(_)) => self.counters.records += 1,
                Ok(None) => break,
                Err(RingError::BufferTooSmall { .. }) => {
                    if port.ring.discard().is_err() {
                        break;
                    }
                    self.counters.oversized += 1;
                }
                Err(_) => {
                    self.counters.ring_errors += 1;
                    self.port = None;
                    self.degraded = true;
                    break;
                }
            }
        }
    }

    /// The status reply.
    pub fn status(&self, context: &Context) -> Status {
        let state = if self.degraded {
            ServerState::Degraded
        } else {
            ServerState::Ready
        };
        let mut status = Status::new(NAME, state);
        context.stats.add_to(&mut status);
        status.push_counter("ports", u64::from(self.port.is_some()));
        status.push_counter("ring_records", self.counters.records);
        status.push_counter("ring_errors", self.counters.ring_errors);
        status
    }
}

impl<M: RingMemory, D: Doorbell> Service<Vswitch> for VswitchServer<M, D> {
    fn handle(&mut self, context: &Context, request: Request) -> Reply {
        self.drain();
        match request {
            Request::Status => Reply::Status(self.status(context)),
        }
    }
}

#[cfg(test)]
mod tests {
    use core::cell::Cell;

    use esker_rt::abi::badge;
    use esker_rt::channel::loopback::Loopback;
    use esker_rt::ring::{CellMemory, HEAD_OFFSET, Producer};

    use super::*;

    const STATUS: u64 = badge::encode(2, 1 << 0);

    #[derive(Default)]
    struct Bell(u64);

    impl Doorbell for &mut Bell {
        fn take(&mut self) -> Result<u64, Error> {
            Ok(core::mem::take(&mut self.0))
        }
    }

    #[test]
    fn status_answers_with_name_state_and_counters() {
        let mut client = Loopback::<Vswitch, _>::client(VswitchServer::new(), STATUS);
        let status = client.status().unwrap();
        assert_eq!(status.name.as_str(), "vswitch");
        assert_eq!(status.state, ServerState::Ready);
        let counters: [(&str, u64); 6] = [
            ("requests", 1),
            ("denied", 0),
            ("malformed", 0),
            ("ports", 0),
            ("ring_records", 0),
            ("ring_errors", 0),
        ];
        for (counter, value) in counters {
            assert_eq!(status.counter(counter), Some(value), "{counter}");
        }
    }

    #[test]
    fn records_on_the_port_ring_are_drained_and_counted() {
        let mut bytes = std::vec![0u8; 4096];
        let memory = CellMemory::new(Cell::from_mut(&mut bytes[..]).as_slice_of_cells());
        let mut vmx = Producer::attach(memory).unwrap();
        let mut bell = Bell::default();
        let server = VswitchServer::with_port(memory, &mut bell).unwrap();
        vmx.push(esker_protocols::vswitch::RING_LINK_UP).unwrap();
        vmx.push(&[0xaa; 60]).unwrap();
        vmx.push(&[0xbb; MAX_FRAME + 1]).unwrap();
        let mut client = Loopback::<Vswitch, _>::client(server, STATUS);
        let status = client.status().unwrap();
        assert_eq!(
            (status.counter("ports"), status.counter("ring_records")),
            (Some(1), Some(2))
        );
        assert_eq!(client.transport_mut().service().counters().oversized, 1);
    }

    #[test]
    fn a_corrupt_ring_detaches_the_port() {
        let mut bytes = std::vec![0u8; 1024];
        let memory = CellMemory::new(Cell::from_mut(&mut bytes[..]).as_slice_of_cells());
        let mut bell = Bell::default();
        let server = VswitchServer::with_port(memory, &mut bell).unwrap();
        memory.store_u32(HEAD_OFFSET, u32::MAX);
        let mut client = Loopback::<Vswitch, _>::client(server, STATUS);
        let status = client.status().unwrap();
        assert_eq!(status.state, ServerState::Degraded);
        assert_eq!(
            (status.counter("ports"), status.counter("ring_errors")),
            (Some(0), Some(1))
        );
    }

    #[test]
    fn callers_without_the_status_bit_are_denied_and_malformed_requests_refused() {
        esker_rt::channel::loopback::assert_refuses_denied_and_malformed::<Vswitch, _>(
            VswitchServer::new,
            2,
        );
    }
}
