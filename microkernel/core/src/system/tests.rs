//! Host tests of the system: a fake platform (frames in a hash map, recorded ports, IRQ
//! lines and log packets), a hand-built ELF, and worlds driven by setting their registers
//! and calling the same entry points the hardware layer calls.

use std::collections::{HashMap, HashSet};
use std::vec::Vec as StdVec;

use esker_abi::{
    Error, IPC_DATA_OFFSET, MessageInfo, ObjectKind, Rights, Syscall, badge, layout, start_info,
};
use proptest::prelude::*;

use super::*;
use crate::addr::VirtAddr;
use crate::manifest::{
    Binary, Bundle, BundleView, CapSpec, CompiledManifest, ObjectSpec, SchedParams, WorldSpec,
};
use crate::paging::CachePolicy;

const FIRST_FRAME: u64 = 0x100;

#[derive(Default)]
struct FakeMemory {
    frames: HashMap<u64, Box<[u8; 4096]>>,
}

impl FakeMemory {
    fn frame(&mut self, number: u64) -> &mut [u8; 4096] {
        self.frames
            .entry(number)
            .or_insert_with(|| Box::new([0; 4096]))
    }
}

impl PhysMemory for FakeMemory {
    fn read_entry(&self, table: PhysFrame, index: usize) -> u64 {
        self.frames.get(&table.number()).map_or(0, |f| {
            u64::from_le_bytes(f[index * 8..index * 8 + 8].try_into().unwrap())
        })
    }
    fn write_entry(&mut self, table: PhysFrame, index: usize, value: u64) {
        self.frame(table.number())[index * 8..index * 8 + 8].copy_from_slice(&value.to_le_bytes());
    }
    fn zero_frame(&mut self, frame: PhysFrame) {
        *self.frame(frame.number()) = [0; 4096];
    }
}

struct FakePlatform {
    memory: FakeMemory,
    next_frame: u64,
    allocated: HashSet<u64>,
    kernel_root: PhysFrame,
    log: StdVec<(Kind, SourceId, StdVec<u8>)>,
    irq_enabled: HashMap<u8, bool>,
    ports: StdVec<(u16, u8, u32)>,
    limit: u64,
    clock: std::cell::Cell<u64>,
    vcpus: HashMap<
        u64,
        (
            std::boxed::Box<crate::virt::svm::Vmcb>,
            crate::virt::vcpu::GeneralRegisters,
        ),
    >,
    svm: bool,
    topology: crate::sched::Topology,
}

impl FakePlatform {
    fn new() -> Self {
        let mut memory = FakeMemory::default();
        let kernel_root = PhysFrame::from_number(1);
        memory.zero_frame(kernel_root);
        // A kernel upper half to be shared: one PML4 entry pointing at a table.
        memory.write_entry(kernel_root, 511, (2 << 12) | 3);
        Self {
            memory,
            next_frame: FIRST_FRAME,
            allocated: HashSet::new(),
            kernel_root,
            log: StdVec::new(),
            irq_enabled: HashMap::new(),
            ports: StdVec::new(),
            limit: u64::MAX,
            clock: std::cell::Cell::new(0),
            vcpus: HashMap::new(),
            svm: true,
            topology: crate::sched::Topology::Flat,
        }
    }

    fn texts(&self) -> StdVec<String> {
        self.log
            .iter()
            .filter(|(k, _, _)| *k == Kind::Text)
            .map(|(_, _, p)| String::from_utf8_lossy(p).into_owned())
            .collect()
    }
}

use std::string::String;

impl Platform for FakePlatform {
    type Memory = FakeMemory;
    fn memory(&mut self) -> &mut FakeMemory {
        &mut self.memory
    }
    fn allocate_frame(&mut self) -> Option<PhysFrame> {
        self.allocate_contiguous(1)
    }
    fn allocate_contiguous(&mut self, count: u64) -> Option<PhysFrame> {
        if self.allocated.len() as u64 + count > self.limit {
            return None;
        }
        let first = self.next_frame;
        self.next_frame += count;
        for n in first..first + count {
            self.allocated.insert(n);
            self.memory.zero_frame(PhysFrame::from_number(n));
        }
        Some(PhysFrame::from_number(first))
    }
    fn free_frame(&mut self, frame: PhysFrame) {
        assert!(
            self.allocated.remove(&frame.number()),
            "double free or foreign frame {:#x}",
            frame.number()
        );
    }
    fn read_phys(&mut self, addr: PhysAddr, buf: &mut [u8]) {
        let (n, off) = (addr.as_u64() / 4096, (addr.as_u64() % 4096) as usize);
        assert!(
            off + buf.len() <= 4096 || self.allocated.contains(&(n + 1)),
            "read crosses into an unowned frame"
        );
        let mut done = 0;
        while done < buf.len() {
            let a = addr.as_u64() + done as u64;
            let (n, off) = (a / 4096, (a % 4096) as usize);
            let take = (4096 - off).min(buf.len() - done);
            buf[done..done + take].copy_from_slice(&self.memory.frame(n)[off..off + take]);
            done += take;
        }
    }
    fn write_phys(&mut self, addr: PhysAddr, data: &[u8]) {
        let mut done = 0;
        while done < data.len() {
            let a = addr.as_u64() + done as u64;
            let (n, off) = (a / 4096, (a % 4096) as usize);
            let take = (4096 - off).min(data.len() - done);
            self.memory.frame(n)[off..off + take].copy_from_slice(&data[done..done + take]);
            done += take;
        }
    }
    fn kernel_table(&self) -> PageTable {
        PageTable::from_root(self.kernel_root)
    }
    fn invalidate_page(&mut self, _root: PhysFrame, _virt: u64) {}
    fn port_in(&mut self, port: u16, width: u8) -> u32 {
        self.ports.push((port, width, 0));
        0xab
    }
    fn port_out(&mut self, port: u16, width: u8, value: u32) {
        self.ports.push((port, width, value));
    }
    fn set_irq_enabled(&mut self, line: u8, enabled: bool) {
        self.irq_enabled.insert(line, enabled);
    }
    fn log_packet(&mut self, kind: Kind, source: SourceId, payload: &[u8]) {
        self.log.push((kind, source, payload.to_vec()));
    }
    fn now_ns(&self) -> u64 {
        self.clock.get()
    }
    fn with_vcpu<R>(
        &mut self,
        vmcb: PhysFrame,
        _state: PhysFrame,
        f: impl FnOnce(&mut crate::virt::svm::Vmcb, &mut crate::virt::vcpu::GeneralRegisters) -> R,
    ) -> R {
        let entry = self.vcpus.entry(vmcb.start().as_u64()).or_insert_with(|| {
            (
                std::boxed::Box::new(crate::virt::svm::Vmcb::ZERO),
                Default::default(),
            )
        });
        f(&mut entry.0, &mut entry.1)
    }
    fn svm_limits(&self) -> Option<crate::virt::svm::HostLimits> {
        self.svm
            .then_some(crate::virt::svm::HostLimits::ARCHITECTURAL)
    }
    fn tsc_khz(&self) -> u64 {
        2_000_000
    }
    fn topology(&self) -> crate::sched::Topology {
        self.topology
    }
}

/// A minimal ELF: text (RX) at 0x400000, data (RW) at 0x401000, entry at the text.
fn tiny_elf() -> StdVec<u8> {
    let mut elf = vec![0u8; 0x2000];
    elf[0..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2; // 64-bit
    elf[5] = 1; // little-endian
    elf[6] = 1; // version
    elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // EXEC
    elf[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
    elf[20..24].copy_from_slice(&1u32.to_le_bytes());
    elf[24..32].copy_from_slice(&0x40_0000u64.to_le_bytes()); // entry
    elf[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
    elf[52..54].copy_from_slice(&64u16.to_le_bytes()); // ehsize
    elf[54..56].copy_from_slice(&56u16.to_le_bytes()); // phentsize
    elf[56..58].copy_from_slice(&2u16.to_le_bytes()); // phnum
    let mut ph = |index: usize, offset: u64, vaddr: u64, size: u64, flags: u32| {
        let at = 64 + index * 56;
        elf[at..at + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        elf[at + 4..at + 8].copy_from_slice(&flags.to_le_bytes());
        elf[at + 8..at + 16].copy_from_slice(&offset.to_le_bytes());
        elf[at + 16..at + 24].copy_from_slice(&vaddr.to_le_bytes());
        elf[at + 24..at + 32].copy_from_slice(&vaddr.to_le_bytes());
        elf[at + 32..at + 40].copy_from_slice(&size.to_le_bytes());
        elf[at + 40..at + 48].copy_from_slice(&size.to_le_bytes());
        elf[at + 48..at + 56].copy_from_slice(&0x1000u64.to_le_bytes());
    };
    ph(0, 0x1000, 0x40_0000, 0x100, 5); // R+X
    ph(1, 0x1000, 0x40_1000, 0x100, 6); // R+W
    elf[0x1000] = 0xf4; // hlt, never run on the host
    elf
}

/// Worlds: 0 = server (serves "svc", holds a notification and ports), 1 = client (calls
/// "svc" with badge ops 0b01 and GRANT, owns "mem"), 2 = bystander (nothing but log).
fn boot(platform: &mut FakePlatform) -> System {
    let elf: &'static [u8] = Box::leak(tiny_elf().into_boxed_slice());
    let mut objects = heapless::Vec::new();
    for o in [
        ObjectSpec::Log { world: "server" },
        ObjectSpec::Log { world: "client" },
        ObjectSpec::Log { world: "bystander" },
        ObjectSpec::Endpoint { name: "svc" },
        ObjectSpec::Notification { name: "irq:dev" },
        ObjectSpec::Interrupt {
            name: "dev",
            line: 5,
            notification: 4,
            bit: 0,
        },
        ObjectSpec::IoPorts {
            name: "dev",
            base: 0x100,
            count: 8,
        },
        ObjectSpec::Memory {
            name: "mem",
            size_kib: 8,
        },
        ObjectSpec::Mmio {
            name: "dev",
            phys: 0xfeb0_0000,
            size: 0x2000,
        },
        ObjectSpec::World { name: "bystander" },
    ] {
        objects.push(o).unwrap();
    }
    let caps = |list: &[(u32, &'static str, u16, Rights, u64)]| {
        let mut v = heapless::Vec::new();
        for &(slot, name, object, rights, badge) in list {
            v.push(CapSpec {
                slot,
                name,
                object,
                rights,
                badge,
            })
            .unwrap();
        }
        v
    };
    let world = |name: &'static str, caps| WorldSpec {
        name,
        binary: "prog",
        memory_kib: 256,
        sched: SchedParams::default(),
        guest_facing: false,
        threads: 1,
        caps,
    };
    let mut worlds = heapless::Vec::new();
    worlds
        .push(world(
            "server",
            caps(&[
                (0, "log", 0, Rights::LOG, 0),
                (1, "serve:svc", 3, Rights::RECEIVE, 0),
                (2, "irq:dev", 4, Rights::WAIT, 0),
                (3, "device:dev:irq", 5, Rights::DEVICE, 0),
                (4, "device:dev:ioports", 6, Rights::DEVICE, 0),
                (
                    5,
                    "device:dev:mmio",
                    8,
                    Rights::DEVICE | Rights::MAP | Rights::READ | Rights::WRITE,
                    0,
                ),
            ]),
        ))
        .unwrap();
    worlds
        .push(world(
            "client",
            caps(&[
                (0, "log", 1, Rights::LOG, 0),
                (
                    1,
                    "call:svc",
                    3,
                    Rights::CALL | Rights::GRANT,
                    badge::encode(1, 0b01),
                ),
                (
                    2,
                    "memory:mem",
                    7,
                    Rights::MAP | Rights::READ | Rights::WRITE | Rights::GRANT,
                    0,
                ),
                (3, "world:bystander", 9, Rights::READ | Rights::WRITE, 0),
            ]),
        ))
        .unwrap();
    worlds
        .push(world("bystander", caps(&[(0, "log", 2, Rights::LOG, 0)])))
        .unwrap();
    system_of(platform, elf, objects, worlds)
}

/// A system instantiated from `objects` and `worlds`, every world running program `elf`
/// (binary "prog"); any object or world the kernel refuses fails the test.
fn system_of(
    platform: &mut FakePlatform,
    elf: &'static [u8],
    objects: heapless::Vec<ObjectSpec<'static>, { crate::manifest::MAX_OBJECTS }>,
    worlds: heapless::Vec<WorldSpec<'static>, { crate::manifest::MAX_WORLDS }>,
) -> System {
    let mut binaries = heapless::Vec::new();
    binaries.push(Binary { name: "prog", elf }).unwrap();
    let bundle = Bundle {
        manifest: CompiledManifest { worlds, objects },
        binaries,
    };
    let bytes: &'static mut [u8] = Box::leak(vec![0u8; 1 << 20].into_boxed_slice());
    let length = bundle.encode(bytes).unwrap();
    let view = BundleView::parse(&bytes[..length]).unwrap();
    let mut system = System::new();
    system.set_cpu_count(CPUS.get());
    system
        .instantiate(platform, &view, |what, name, e| {
            panic!("{what} {name}: {e}")
        })
        .unwrap();
    system
}

std::thread_local! {
    /// CPUs the systems `system_of` builds schedule on (tests of several CPUs set it).
    static CPUS: core::cell::Cell<usize> = const { core::cell::Cell::new(1) };
}

const SERVER: WorldId = 0;
const CLIENT: WorldId = 1;
const BYSTANDER: WorldId = 2;

/// Makes world `id` the running one through the policy's directed switch (so the
/// scheduler agrees on who runs; with the clock at 0 every runnable world is eligible).
fn run_as(system: &mut System, frame: &mut Registers, id: WorldId) {
    if system.current != Some(id) {
        let state = system.world(id).unwrap().state;
        assert!(
            matches!(state, WorldState::Ready | WorldState::Running),
            "{state:?}"
        );
        system.world_mut(id).unwrap().state = WorldState::Ready;
        system.handoff = Some(id);
        let next = system.dispatch();
        assert!(
            matches!(next, Next::World { world, .. } if world == id),
            "the policy refused to run {id}: {next:?}"
        );
    }
    *frame = system.world(id).unwrap().registers;
}

/// The running world makes a system call (its registers are in its area, as the entry
/// stub leaves them); returns what runs next, with that world's registers in `frame`.
fn syscall(
    system: &mut System,
    platform: &mut FakePlatform,
    frame: &mut Registers,
    call: Syscall,
    args: [u64; 6],
) -> Next {
    let current = system.current().expect("a world is running");
    let registers = system.registers_mut(current).unwrap();
    registers.rax = call as u64;
    [
        registers.rdi,
        registers.rsi,
        registers.rdx,
        registers.r10,
        registers.r8,
        registers.r9,
    ] = args;
    registers.vector = SYSCALL_VECTOR;
    let next = system.on_syscall(platform);
    view(system, next, frame);
    next
}

/// Copies the registers of the world `next` runs into `frame`, for the test to inspect.
fn view(system: &System, next: Next, frame: &mut Registers) {
    if let Next::World { world, .. } = next {
        *frame = system.world(world).unwrap().registers;
    }
}

fn result_of(system: &System, id: WorldId) -> Result<[u64; 6], Error> {
    let r = system.world(id).unwrap().registers;
    Error::check(r.rax).map(|()| [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9])
}

fn write_ipc(system: &System, platform: &mut FakePlatform, id: WorldId, offset: u64, bytes: &[u8]) {
    let buffer = system.world(id).unwrap().ipc_buffer.start().as_u64();
    platform.write_phys(PhysAddr::new(buffer + offset), bytes);
}

fn read_ipc(
    system: &System,
    platform: &mut FakePlatform,
    id: WorldId,
    offset: u64,
    len: usize,
) -> StdVec<u8> {
    let buffer = system.world(id).unwrap().ipc_buffer.start().as_u64();
    let mut out = vec![0; len];
    platform.read_phys(PhysAddr::new(buffer + offset), &mut out);
    out
}

#[test]
fn boot_creates_the_manifest_and_announces_each_world() {
    let mut platform = FakePlatform::new();
    let system = boot(&mut platform);
    assert_eq!(system.live_worlds(), 3);
    let announces: StdVec<_> = platform
        .log
        .iter()
        .filter(|(k, _, _)| *k == Kind::Announce)
        .map(|(_, s, p)| (*s, p.clone()))
        .collect();
    assert_eq!(
        announces,
        vec![
            (1, b"server".to_vec()),
            (2, b"client".to_vec()),
            (3, b"bystander".to_vec())
        ]
    );
    let mut lines = StdVec::new();
    system.for_each_capability(|args| lines.push(std::format!("{args}")));
    assert_eq!(lines.len(), 11);
    assert!(
        lines.contains(
            &"world=client slot=1 kind=endpoint object=svc rights=grant+call badge=0x100000001"
                .into()
        ),
        "{lines:?}"
    );
    // Start info: the client finds its name and its capabilities.
    let mut platform2 = platform;
    let length = system.world(CLIENT).unwrap().registers.rdi as usize;
    let record = read_ipc(
        &system,
        &mut platform2,
        CLIENT,
        IPC_DATA_OFFSET as u64,
        length,
    );
    let info = start_info::StartInfo::decode(&record).unwrap();
    assert_eq!(info.world_name, "client");
    assert_eq!(info.slot("call:svc"), Some(1));
    // The interrupt line was enabled for its holder.
    assert_eq!(platform2.irq_enabled.get(&5), Some(&true));
}

#[test]
fn the_program_is_loaded_with_w_xor_x_and_a_guard_page_below_the_stack() {
    let mut platform = FakePlatform::new();
    let system = boot(&mut platform);
    let table = &system.world(CLIENT).unwrap().table;
    let text = table
        .translate(&platform.memory, VirtAddr::new(0x40_0000))
        .unwrap();
    assert!(text.access.execute && !text.access.write && text.access.user);
    let data = table
        .translate(&platform.memory, VirtAddr::new(0x40_1000))
        .unwrap();
    assert!(!data.access.execute && data.access.write);
    let mut byte = [0u8; 1];
    platform.read_phys(text.phys, &mut byte);
    assert_eq!(byte[0], 0xf4, "program bytes were not copied");
    assert!(
        table
            .translate(&platform.memory, VirtAddr::new(layout::STACK_TOP - 8))
            .is_some()
    );
    let guard = layout::STACK_TOP - (STACK_PAGES + 1) * PAGE_SIZE_FOR_TESTS;
    assert!(
        table
            .translate(&platform.memory, VirtAddr::new(guard))
            .is_none(),
        "no guard page"
    );
    // The kernel half is shared.
    assert_eq!(platform.memory.read_entry(table.root(), 511), (2 << 12) | 3);
}

const PAGE_SIZE_FOR_TESTS: u64 = 4096;

#[test]
fn call_reaches_the_server_with_badge_data_and_registers_and_the_reply_returns() {
    let mut platform = FakePlatform::new();
    let mut system = boot(&mut platform);
    let mut frame = Registers::default();
    run_as(&mut system, &mut frame, SERVER);
    // The server waits first.
    let next = syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::Recv,
        [1, 0, 0, 0, 0, 0],
    );
    assert_eq!(
        system.world(SERVER).unwrap().state,
        WorldState::Receiving { endpoint: 3 }
    );
    assert!(matches!(next, Next::World { world, .. } if world != SERVER));
    run_as(&mut system, &mut frame, CLIENT);
    write_ipc(
        &system,
        &mut platform,
        CLIENT,
        IPC_DATA_OFFSET as u64,
        b"hello server",
    );
    let info = MessageInfo::new(7, 12, 0).unwrap();
    let next = syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::Call,
        [1, info.0, 11, 22, 33, 44],
    );
    // Straight to the server, with the message.
    assert!(matches!(next, Next::World { world: SERVER, .. }));
    assert_eq!(frame.rax, 0);
    assert_eq!(MessageInfo(frame.rdi), MessageInfo::new(7, 12, 0).unwrap());
    assert_eq!(frame.rsi, badge::encode(1, 0b01));
    assert_eq!([frame.rdx, frame.r10, frame.r8, frame.r9], [11, 22, 33, 44]);
    assert_eq!(
        read_ipc(&system, &mut platform, SERVER, IPC_DATA_OFFSET as u64, 12),
        b"hello server"
    );
    assert_eq!(
        system.world(CLIENT).unwrap().state,
        WorldState::AwaitingReply { server: SERVER }
    );
    // Reply and wait again: the client runs next with the answer.
    write_ipc(
        &system,
        &mut platform,
        SERVER,
        IPC_DATA_OFFSET as u64,
        b"ok",
    );
    let reply = MessageInfo::new(0, 2, 0).unwrap();
    let next = syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::ReplyRecv,
        [1, reply.0, 5, 6, 7, 8],
    );
    assert!(
        matches!(next, Next::World { world: CLIENT, .. }),
        "{next:?}"
    );
    assert_eq!(frame.rax, 0);
    assert_eq!([frame.rdx, frame.r10, frame.r8, frame.r9], [5, 6, 7, 8]);
    assert_eq!(frame.rsi, 0, "replies carry no badge");
    assert_eq!(
        read_ipc(&system, &mut platform, CLIENT, IPC_DATA_OFFSET as u64, 2),
        b"ok"
    );
    assert_eq!(
        system.world(SERVER).unwrap().state,
        WorldState::Receiving { endpoint: 3 }
    );
}

#[test]
fn a_call_without_the_capability_or_the_right_is_refused() {
    let mut platform = FakePlatform::new();
    let mut system = boot(&mut platform);
    let mut frame = Registers::default();
    run_as(&mut system, &mut frame, BYSTANDER);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::Call,
        [1, 0, 0, 0, 0, 0],
    );
    assert_eq!(result_of(&system, BYSTANDER), Err(Error::InvalidCapability));
    run_as(&mut system, &mut frame, BYSTANDER);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::Call,
        [0, 0, 0, 0, 0, 0],
    );
    assert_eq!(result_of(&system, BYSTANDER), Err(Error::WrongObjectKind));
    // The server holds the endpoint with RECEIVE only: it cannot call it.
    run_as(&mut system, &mut frame, SERVER);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::Call,
        [1, 0, 0, 0, 0, 0],
    );
    assert_eq!(result_of(&system, SERVER), Err(Error::InsufficientRights));
    // Oversized messages are refused to the sender.
    run_as(&mut system, &mut frame, CLIENT);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::Call,
        [1, 0x3fff, 0, 0, 0, 0],
    );
    assert_eq!(result_of(&system, CLIENT), Err(Error::MessageTooLong));
}

#[test]
fn capabilities_travel_in_messages_and_revocation_takes_them_back_at_once() {
    let mut platform = FakePlatform::new();
    let mut system = boot(&mut platform);
    let mut frame = Registers::default();
    run_as(&mut system, &mut frame, SERVER);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::Recv,
        [1, 0, 0, 0, 0, 0],
    );
    run_as(&mut system, &mut frame, CLIENT);
    write_ipc(&system, &mut platform, CLIENT, 0, &2u32.to_le_bytes()); // send_caps[0] = slot 2 (memory)
    let info = MessageInfo::new(0, 0, 1).unwrap();
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::Call,
        [1, info.0, 0, 0, 0, 0],
    );
    assert_eq!(MessageInfo(frame.rdi).caps(), 1);
    let received = u32::from_le_bytes(
        read_ipc(&system, &mut platform, SERVER, 16, 4)
            .try_into()
            .unwrap(),
    );
    let count = u32::from_le_bytes(
        read_ipc(&system, &mut platform, SERVER, 32, 4)
            .try_into()
            .unwrap(),
    );
    assert_eq!(count, 1);
    let cap = system.caps().lookup(SERVER, received).unwrap();
    assert_eq!(cap.kind, ObjectKind::Memory);
    // The server maps it.
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::MemoryMap,
        [
            u64::from(received),
            layout::MAP_BASE,
            (Rights::READ | Rights::WRITE).bits() as u64,
            0,
            0,
            0,
        ],
    );
    assert_eq!(result_of(&system, SERVER).map(|v| v[0]), Ok(8192));
    let server_table =
        PageTable::<crate::paging::X86>::from_root(system.world(SERVER).unwrap().table.root());
    assert!(
        server_table
            .translate(&platform.memory, VirtAddr::new(layout::MAP_BASE))
            .is_some()
    );
    // The client revokes everything derived from its capability: gone, and unmapped.
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::ReplyRecv,
        [1, 0, 0, 0, 0, 0],
    );
    run_as(&mut system, &mut frame, CLIENT);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::CapRevoke,
        [2, 0, 0, 0, 0, 0],
    );
    assert_eq!(result_of(&system, CLIENT).map(|v| v[0]), Ok(1));
    assert!(system.caps().lookup(SERVER, received).is_err());
    assert!(
        server_table
            .translate(&platform.memory, VirtAddr::new(layout::MAP_BASE))
            .is_none(),
        "revoked memory still mapped"
    );
    assert!(system.world(SERVER).unwrap().mappings.is_empty());
}

#[test]
fn passing_a_capability_needs_the_grant_right() {
    let mut platform = FakePlatform::new();
    let mut system = boot(&mut platform);
    let mut frame = Registers::default();
    run_as(&mut system, &mut frame, SERVER);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::Recv,
        [1, 0, 0, 0, 0, 0],
    );
    run_as(&mut system, &mut frame, CLIENT);
    write_ipc(&system, &mut platform, CLIENT, 0, &0u32.to_le_bytes()); // the log cap: no GRANT
    let info = MessageInfo::new(0, 0, 1).unwrap();
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::Call,
        [1, info.0, 0, 0, 0, 0],
    );
    assert_eq!(result_of(&system, CLIENT), Err(Error::InsufficientRights));
    assert_eq!(
        system.world(SERVER).unwrap().state,
        WorldState::Receiving { endpoint: 3 },
        "server must not see it"
    );
}

#[test]
fn a_derived_copy_dies_with_a_revoke_and_rights_never_grow() {
    let mut platform = FakePlatform::new();
    let mut system = boot(&mut platform);
    let mut frame = Registers::default();
    run_as(&mut system, &mut frame, CLIENT);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::CapDerive,
        [1, Rights::ALL.bits() as u64, 0, 0, 0, 0],
    );
    let copy = result_of(&system, CLIENT).unwrap()[0];
    let cap = system.caps().lookup(CLIENT, copy as u32).unwrap();
    assert_eq!(
        cap.rights,
        Rights::CALL | Rights::GRANT,
        "asking for ALL must not add rights"
    );
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::CapRevoke,
        [1, 0, 0, 0, 0, 0],
    );
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::Call,
        [copy, 0, 0, 0, 0, 0],
    );
    assert_eq!(result_of(&system, CLIENT), Err(Error::InvalidCapability));
}

#[test]
fn a_faulting_world_is_stopped_and_its_caller_and_memory_are_released() {
    let mut platform = FakePlatform::new();
    let mut system = boot(&mut platform);
    let frames_before = platform.allocated.len();
    let server_frames = system.world(SERVER).unwrap().frames as usize;
    let mut frame = Registers::default();
    run_as(&mut system, &mut frame, SERVER);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::Recv,
        [1, 0, 0, 0, 0, 0],
    );
    run_as(&mut system, &mut frame, CLIENT);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::Call,
        [1, 0, 0, 0, 0, 0],
    );
    // The server faults while the client waits for it.
    let registers = system.registers_mut(SERVER).unwrap();
    registers.vector = 14;
    registers.error_code = 6;
    registers.rip = 0x40_0010;
    let next = system.on_user_exception(&mut platform, 0xdead_0000, "#PF");
    assert_eq!(system.world(SERVER).unwrap().state, WorldState::Stopped);
    assert!(
        platform
            .texts()
            .iter()
            .any(|t| t.contains("world server stopped: #PF") && t.contains("address 0xdead0000")),
        "{:?}",
        platform.texts()
    );
    assert!(matches!(next, Next::World { world, .. } if world != SERVER));
    assert!(matches!(
        system.world(CLIENT).unwrap().state,
        WorldState::Ready | WorldState::Running
    ));
    assert_eq!(result_of(&system, CLIENT), Err(Error::PeerStopped));
    assert_eq!(
        platform.allocated.len(),
        frames_before - server_frames,
        "the server's frames were not all freed"
    );
    // The others run on: the client can still log.
    run_as(&mut system, &mut frame, CLIENT);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::Log,
        [
            layout::IPC_BUFFER + IPC_DATA_OFFSET as u64,
            3 | (1 << 63),
            0,
            0,
            0,
            0,
        ],
    );
    assert_eq!(result_of(&system, CLIENT), Ok([0; 6]));
}

#[test]
fn a_donated_call_survives_the_timer_and_the_policy_never_runs_a_waiting_caller() {
    let mut platform = FakePlatform::new();
    let mut system = boot(&mut platform);
    let mut frame = Registers::default();
    run_as(&mut system, &mut frame, SERVER);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::Recv,
        [1, 0, 0, 0, 0, 0],
    );
    run_as(&mut system, &mut frame, CLIENT);
    let next = syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::Call,
        [1, 0, 7, 0, 0, 0],
    );
    assert!(
        matches!(
            next,
            Next::World {
                world: SERVER,
                deadline_ns: None,
                ..
            }
        ),
        "{next:?}"
    );
    assert!(
        system.donation.is_some(),
        "the server runs on the caller's context"
    );
    // The timer fires while the server runs: the donation ends and the policy decides,
    // never choosing the client, which still waits for its reply.
    for _ in 0..6 {
        platform
            .clock
            .set(platform.clock.get() + crate::sched::SLICE_NS);
        let next = system.on_timer(&platform);
        assert!(system.donation.is_none());
        assert!(
            !matches!(next, Next::World { world: CLIENT, .. }),
            "a waiting caller was picked"
        );
        assert_eq!(
            system.world(CLIENT).unwrap().state,
            WorldState::AwaitingReply { server: SERVER }
        );
    }
    // The server replies the ordinary way; the client gets its answer.
    run_as(&mut system, &mut frame, SERVER);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::ReplyRecv,
        [1, 0, 70, 0, 0, 0],
    );
    assert_eq!(result_of(&system, CLIENT).map(|v| v[2]), Ok(70));
    assert!(matches!(
        system.world(CLIENT).unwrap().state,
        WorldState::Ready | WorldState::Running
    ));
}

#[test]
fn a_donated_round_trip_returns_straight_to_the_caller() {
    let mut platform = FakePlatform::new();
    let mut system = boot(&mut platform);
    let mut frame = Registers::default();
    run_as(&mut system, &mut frame, SERVER);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::Recv,
        [1, 0, 0, 0, 0, 0],
    );
    run_as(&mut system, &mut frame, CLIENT);
    for round in 0..3u64 {
        let next = syscall(
            &mut system,
            &mut platform,
            &mut frame,
            Syscall::Call,
            [1, 0, round, 0, 0, 0],
        );
        assert!(matches!(next, Next::World { world: SERVER, .. }));
        assert_eq!(frame.rdx, round);
        let next = syscall(
            &mut system,
            &mut platform,
            &mut frame,
            Syscall::ReplyRecv,
            [1, 0, round + 100, 0, 0, 0],
        );
        assert!(
            matches!(
                next,
                Next::World {
                    world: CLIENT,
                    deadline_ns: None,
                    ..
                }
            ),
            "{next:?}"
        );
        assert_eq!(frame.rdx, round + 100);
        assert!(system.donation.is_none());
        assert_eq!(
            system.world(SERVER).unwrap().state,
            WorldState::Receiving { endpoint: 3 }
        );
    }
}

#[test]
fn callers_of_a_stopped_server_are_released_not_left_waiting() {
    let mut platform = FakePlatform::new();
    let mut system = boot(&mut platform);
    let mut frame = Registers::default();
    // The client calls while the server is busy (not receiving): it queues.
    run_as(&mut system, &mut frame, CLIENT);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::Call,
        [1, 0, 0, 0, 0, 0],
    );
    assert!(matches!(
        system.world(CLIENT).unwrap().state,
        WorldState::Sending { .. }
    ));
    // The server faults: nobody can receive on the endpoint any more.
    run_as(&mut system, &mut frame, SERVER);
    system.on_user_exception(&mut platform, 0, "#GP");
    assert!(matches!(
        system.world(CLIENT).unwrap().state,
        WorldState::Ready | WorldState::Running
    ));
    assert_eq!(result_of(&system, CLIENT), Err(Error::PeerStopped));
    // Later calls fail at once.
    run_as(&mut system, &mut frame, CLIENT);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::Call,
        [1, 0, 0, 0, 0, 0],
    );
    assert_eq!(result_of(&system, CLIENT), Err(Error::PeerStopped));
}

#[test]
fn log_copies_from_user_memory_and_refuses_bad_pointers() {
    let mut platform = FakePlatform::new();
    let mut system = boot(&mut platform);
    let mut frame = Registers::default();
    run_as(&mut system, &mut frame, CLIENT);
    write_ipc(
        &system,
        &mut platform,
        CLIENT,
        IPC_DATA_OFFSET as u64,
        b"hi there",
    );
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::Log,
        [
            layout::IPC_BUFFER + IPC_DATA_OFFSET as u64,
            8 | (1 << 63),
            0,
            0,
            0,
            0,
        ],
    );
    assert_eq!(result_of(&system, CLIENT), Ok([0; 6]));
    assert_eq!(
        platform.log.last().unwrap(),
        &(Kind::Text, 2, b"hi there".to_vec())
    );
    for pointer in [
        0u64,
        0xffff_8000_0000_0000,
        layout::USER_END - 4,
        u64::MAX - 2,
    ] {
        syscall(
            &mut system,
            &mut platform,
            &mut frame,
            Syscall::Log,
            [pointer, 8, 0, 0, 0, 0],
        );
        assert_eq!(
            result_of(&system, CLIENT),
            Err(Error::BadAddress),
            "pointer {pointer:#x}"
        );
    }
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::Log,
        [layout::IPC_BUFFER, 8, 1, 0, 0, 0],
    );
    assert_eq!(result_of(&system, CLIENT), Err(Error::WrongObjectKind));
}

#[test]
fn a_chatty_world_is_held_to_its_log_budget_and_told_what_was_dropped() {
    let mut platform = FakePlatform::new();
    let mut system = boot(&mut platform);
    let mut frame = Registers::default();
    run_as(&mut system, &mut frame, CLIENT);
    let text = |len: u64| len | (1 << 63);
    let pointer = layout::IPC_BUFFER + IPC_DATA_OFFSET as u64;
    let mut written = 0;
    loop {
        syscall(
            &mut system,
            &mut platform,
            &mut frame,
            Syscall::Log,
            [pointer, text(1000), 0, 0, 0, 0],
        );
        match result_of(&system, CLIENT) {
            Ok(_) => written += 1000,
            Err(e) => {
                assert_eq!(e, Error::WouldBlock);
                break;
            }
        }
        assert!(written <= LogBudget::BURST_BYTES, "no budget enforced");
    }
    assert!(written > LogBudget::BURST_BYTES - 1000);
    // One second later the world has earned RATE bytes back, and is told what it lost.
    platform.clock.set(platform.clock.get() + 1_000_000_000);
    run_as(&mut system, &mut frame, CLIENT);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::Log,
        [pointer, text(100), 0, 0, 0, 0],
    );
    assert_eq!(result_of(&system, CLIENT), Ok([0; 6]));
    assert!(
        platform
            .texts()
            .iter()
            .any(|t| t.contains("world client: 1000 log bytes dropped")),
        "{:?}",
        platform.texts()
    );
    // Other worlds keep their own budgets.
    run_as(&mut system, &mut frame, SERVER);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::Log,
        [pointer, text(1000), 0, 0, 0, 0],
    );
    assert_eq!(result_of(&system, SERVER), Ok([0; 6]));
}

#[test]
fn interrupts_arrive_as_notifications_and_are_masked_until_acknowledged() {
    let mut platform = FakePlatform::new();
    let mut system = boot(&mut platform);
    let mut frame = Registers::default();
    run_as(&mut system, &mut frame, SERVER);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::Wait,
        [2, 0, 0, 0, 0, 0],
    );
    assert_eq!(
        system.world(SERVER).unwrap().state,
        WorldState::Waiting { notification: 4 }
    );
    system.on_irq(&mut platform, 5);
    assert_eq!(platform.irq_enabled.get(&5), Some(&false));
    assert_eq!(result_of(&system, SERVER).map(|v| v[0]), Ok(1));
    run_as(&mut system, &mut frame, SERVER);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::IrqAck,
        [3, 0, 0, 0, 0, 0],
    );
    assert_eq!(platform.irq_enabled.get(&5), Some(&true));
    // Poll returns nothing now; a second interrupt is remembered until polled.
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::Poll,
        [2, 0, 0, 0, 0, 0],
    );
    assert_eq!(result_of(&system, SERVER).map(|v| v[0]), Ok(0));
    system.on_irq(&mut platform, 5);
    run_as(&mut system, &mut frame, SERVER);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::Poll,
        [2, 0, 0, 0, 0, 0],
    );
    assert_eq!(result_of(&system, SERVER).map(|v| v[0]), Ok(1));
}

#[test]
fn port_io_is_confined_to_the_granted_range() {
    let mut platform = FakePlatform::new();
    let mut system = boot(&mut platform);
    let mut frame = Registers::default();
    run_as(&mut system, &mut frame, SERVER);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::PortOut,
        [4, 0x104, 4, 0x55, 0, 0],
    );
    assert_eq!(result_of(&system, SERVER), Ok([0; 6]));
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::PortIn,
        [4, 0x107, 1, 0, 0, 0],
    );
    assert_eq!(result_of(&system, SERVER).map(|v| v[0]), Ok(0xab));
    for (port, width) in [
        (0x106u64, 4u64),
        (0xff, 1),
        (0x3f8, 1),
        (0x100, 3),
        (u64::MAX, 1),
    ] {
        syscall(
            &mut system,
            &mut platform,
            &mut frame,
            Syscall::PortIn,
            [4, port, width, 0, 0, 0],
        );
        assert!(
            result_of(&system, SERVER).is_err(),
            "port {port:#x} width {width} allowed"
        );
    }
    assert_eq!(platform.ports, vec![(0x104, 4, 0x55), (0x107, 1, 0)]);
}

#[test]
fn device_mmio_maps_uncached_never_executable_and_is_never_freed() {
    let mut platform = FakePlatform::new();
    let mut system = boot(&mut platform);
    let mut frame = Registers::default();
    run_as(&mut system, &mut frame, SERVER);
    let rw = (Rights::READ | Rights::WRITE).bits() as u64;
    let rx = (Rights::READ | Rights::EXECUTE).bits() as u64;
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::MemoryMap,
        [5, layout::MAP_BASE, rx, 0, 0, 0],
    );
    assert_eq!(
        result_of(&system, SERVER),
        Err(Error::InsufficientRights),
        "executable MMIO"
    );
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::MemoryMap,
        [5, layout::MAP_BASE, rw, 0, 0, 0],
    );
    assert_eq!(result_of(&system, SERVER).map(|v| v[0]), Ok(0x2000));
    let table =
        PageTable::<crate::paging::X86>::from_root(system.world(SERVER).unwrap().table.root());
    let t = table
        .translate(&platform.memory, VirtAddr::new(layout::MAP_BASE + 0x1004))
        .unwrap();
    assert_eq!(t.phys.as_u64(), 0xfeb0_1004);
    assert_eq!(t.access.cache, CachePolicy::Uncached);
    assert!(!t.access.execute && t.access.write && t.access.user);
    // A Log capability cannot be mapped; the client holds no MMIO capability at all.
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::MemoryMap,
        [0, layout::MAP_BASE + 0x10000, rw, 0, 0, 0],
    );
    assert_eq!(result_of(&system, SERVER), Err(Error::WrongObjectKind));
    // Stopping the world unmaps the device region instead of freeing its "frames" (the
    // fake platform panics on freeing a frame it never handed out).
    system.on_user_exception(&mut platform, 0, "#GP");
    assert_eq!(system.world(SERVER).unwrap().state, WorldState::Stopped);
}

#[test]
fn scheduling_parameters_change_and_statistics_read_through_a_world_capability() {
    let mut platform = FakePlatform::new();
    let mut system = boot(&mut platform);
    let mut frame = Registers::default();
    run_as(&mut system, &mut frame, CLIENT);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::SchedSet,
        [3, 3000, 0, 0, 0, 0],
    );
    assert_eq!(result_of(&system, CLIENT), Ok([0; 6]));
    assert_eq!(system.sched.params(BYSTANDER).map(|p| p.shares), Some(3000));
    // 2500 MHz cannot be reserved on the 2000 MHz CPU: refused, and the log says why.
    run_as(&mut system, &mut frame, CLIENT);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::SchedSet,
        [3, 1000, 2500, 0, 0, 0],
    );
    assert_eq!(result_of(&system, CLIENT), Err(Error::NotAdmitted));
    assert_eq!(
        system.sched.params(BYSTANDER).map(|p| p.shares),
        Some(3000),
        "a refusal changes nothing"
    );
    assert!(
        platform.texts().iter().any(|t| t
            .contains("world client: scheduling change of world bystander refused")
            && t.contains("2500 MHz")),
        "{:?}",
        platform.texts()
    );
    for bad in [
        [3u64, 0, 0, 0, 0, 0],
        [3, 1000, 500, 100, 0, 0],
        [3, u64::MAX, 0, 0, 0, 0],
    ] {
        syscall(
            &mut system,
            &mut platform,
            &mut frame,
            Syscall::SchedSet,
            bad,
        );
        assert!(result_of(&system, CLIENT).is_err(), "{bad:?} accepted");
    }
    // Statistics: the bystander has been dispatched at boot-time picks or not, but the
    // call answers for it; and the bystander itself holds no World capability.
    platform.clock.set(5_000_000);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::SchedStats,
        [3, 0, 0, 0, 0, 0],
    );
    assert!(result_of(&system, CLIENT).is_ok());
    run_as(&mut system, &mut frame, BYSTANDER);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::SchedSet,
        [3, 1000, 0, 0, 0, 0],
    );
    assert_eq!(result_of(&system, BYSTANDER), Err(Error::InvalidCapability));
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::SchedStats,
        [0, 0, 0, 0, 0, 0],
    );
    assert_eq!(result_of(&system, BYSTANDER), Err(Error::WrongObjectKind));
}

#[test]
fn the_timer_rotates_ready_worlds() {
    let mut platform = FakePlatform::new();
    let mut system = boot(&mut platform);
    let mut order = StdVec::new();
    let Next::World {
        world, deadline_ns, ..
    } = system.start(&platform)
    else {
        panic!("idle at start")
    };
    assert_eq!(
        deadline_ns,
        Some(crate::sched::SLICE_NS),
        "equal shares: a full slice each"
    );
    order.push(world);
    for _ in 0..5 {
        platform
            .clock
            .set(platform.clock.get() + crate::sched::SLICE_NS);
        let Next::World { world, .. } = system.on_timer(&platform) else {
            panic!("idle")
        };
        order.push(world);
    }
    let mut counts = [0; 3];
    for world in &order {
        counts[usize::from(*world)] += 1;
    }
    assert_eq!(counts, [2, 2, 2], "equal shares must rotate: {order:?}");
}

#[test]
fn a_world_whose_reservation_cannot_be_guaranteed_is_refused_by_name() {
    let mut platform = FakePlatform::new();
    let elf: &'static [u8] = Box::leak(tiny_elf().into_boxed_slice());
    let mut objects = heapless::Vec::new();
    objects.push(ObjectSpec::Log { world: "greedy" }).unwrap();
    let mut caps = heapless::Vec::new();
    caps.push(CapSpec {
        slot: 0,
        name: "log",
        object: 0,
        rights: Rights::LOG,
        badge: 0,
    })
    .unwrap();
    let mut worlds = heapless::Vec::new();
    for (name, mhz) in [("modest", 1500), ("greedy", 1000)] {
        worlds
            .push(WorldSpec {
                name,
                binary: "prog",
                memory_kib: 256,
                sched: SchedParams {
                    reservation_mhz: mhz,
                    ..SchedParams::default()
                },
                guest_facing: false,
                threads: 1,
                caps: caps.clone(),
            })
            .unwrap();
    }
    let mut binaries = heapless::Vec::new();
    binaries.push(Binary { name: "prog", elf }).unwrap();
    let bundle = Bundle {
        manifest: CompiledManifest { worlds, objects },
        binaries,
    };
    let bytes: &'static mut [u8] = Box::leak(vec![0u8; 1 << 20].into_boxed_slice());
    let length = bundle.encode(bytes).unwrap();
    let view = BundleView::parse(&bytes[..length]).unwrap();
    let mut system = System::new();
    let frames_before = platform.allocated.len();
    let mut refused = StdVec::new();
    system
        .instantiate(&mut platform, &view, |_, name, e| {
            refused.push(std::format!("{name}: {e}"))
        })
        .unwrap();
    // The platform's CPU is 2000 MHz: 1500 fit, another 1000 do not.
    assert_eq!(
        refused,
        vec!["greedy: not admitted: reservation of 1000 MHz cannot be guaranteed: only 500 MHz unreserved".to_owned()]
    );
    assert_eq!(system.live_worlds(), 1, "the admitted world still runs");
    assert!(
        platform.allocated.len() > frames_before,
        "the admitted world has its frames"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A world making random system calls with random arguments gets results or errors,
    /// never a panic; afterwards the other worlds can still call and reply.
    #[test]
    fn random_system_calls_never_break_the_system(calls in proptest::collection::vec(
        (0u64..24, proptest::collection::vec(prop_oneof![
            0u64..300, Just(layout::IPC_BUFFER), Just(layout::MAP_BASE), Just(0xffff_8000_0000_0000u64), any::<u64>()
        ], 6)), 1..120)) {
        let mut platform = FakePlatform::new();
        platform.limit = 600;
        let mut system = boot(&mut platform);
        let mut frame = Registers::default();
        for (number, args) in calls {
            if system.world(BYSTANDER).unwrap().state == WorldState::Stopped {
                break;
            }
            if !matches!(system.world(BYSTANDER).unwrap().state, WorldState::Ready | WorldState::Running) {
                break; // it blocked itself; fine
            }
            run_as(&mut system, &mut frame, BYSTANDER);
            let registers = system.registers_mut(BYSTANDER).unwrap();
            registers.rax = number;
            [registers.rdi, registers.rsi, registers.rdx, registers.r10, registers.r8, registers.r9] =
                [args[0], args[1], args[2], args[3], args[4], args[5]];
            system.on_syscall(&mut platform);
        }
        // The server and client still work.
        run_as(&mut system, &mut frame, SERVER);
        syscall(&mut system, &mut platform, &mut frame, Syscall::Recv, [1, 0, 0, 0, 0, 0]);
        run_as(&mut system, &mut frame, CLIENT);
        let next = syscall(&mut system, &mut platform, &mut frame, Syscall::Call, [1, 0, 1, 2, 3, 4]);
        let reached_server = matches!(next, Next::World { world: SERVER, .. });
        prop_assert!(reached_server);
        prop_assert_eq!([frame.rdx, frame.r10, frame.r8, frame.r9], [1, 2, 3, 4]);
    }
}

mod threads;
mod vm;

#[test]
fn the_scheduler_uses_the_topology_the_platform_reports() {
    CPUS.set(4);
    let mut platform = FakePlatform::new();
    platform.topology = crate::sched::Topology::SmtPairs;
    let system = boot(&mut platform);
    let mut flat_platform = FakePlatform::new();
    let flat = boot(&mut flat_platform);
    CPUS.set(1);
    assert_eq!(system.sched.topology(), crate::sched::Topology::SmtPairs);
    assert_eq!(flat.sched.topology(), crate::sched::Topology::Flat);
}

#[test]
fn two_cpus_run_two_worlds_at_once_each_with_its_own_dispatch_state() {
    CPUS.set(2);
    let mut platform = FakePlatform::new();
    let mut system = boot(&mut platform);
    CPUS.set(1);
    assert_eq!(system.cpu_count(), 2);
    let Next::World { world: on_0, .. } = system.start(&platform) else {
        panic!("CPU 0 idles with three runnable worlds")
    };
    assert_eq!(
        system.take_kicks(),
        0b10,
        "work waits on idle CPU 1: it must be interrupted"
    );
    system.select_cpu(1);
    let Next::World { world: on_1, .. } = system.start(&platform) else {
        panic!("CPU 1 idles with work queued")
    };
    assert_ne!(on_0, on_1, "one world on two CPUs");
    assert_eq!(system.current(), Some(on_1));
    let mut frame = Registers::default();
    // CPU 1's world asks where it runs, then yields: CPU 0's world is not disturbed.
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::KernelInfo,
        [esker_abi::KernelInfo::Cpu as u64, 0, 0, 0, 0, 0],
    );
    assert_eq!(result_of(&system, on_1).unwrap()[..2], [1, 2]);
    platform
        .clock
        .set(platform.clock.get() + crate::sched::SLICE_NS);
    let next = system.on_timer(&platform);
    let Next::World { world: next_1, .. } = next else {
        panic!("CPU 1 idles")
    };
    assert_ne!(next_1, on_0, "CPU 1 took the world running on CPU 0");
    system.select_cpu(0);
    assert_eq!(
        system.current(),
        Some(on_0),
        "CPU 0's state was changed by CPU 1"
    );
    assert_eq!(system.this_cpu(), 0);
    for world in [on_0, next_1] {
        assert_eq!(system.world(world).unwrap().state, WorldState::Running);
    }
}
