//! Host tests of worlds with several threads (a VM's monitor runs one per vCPU): the
//! threads share the world's address space and capabilities but each has its own stack,
//! IPC buffer and scheduling entity; `vcpu_kick` reaches a sibling's vCPU wherever its
//! thread is; stopping any thread stops the world, and its memory is freed once, when no
//! CPU runs it any more.

use super::*;
use crate::virt::vcpu::{ExitReply, GuestRegisters};

const MONITOR: WorldId = 0;
/// The monitor's second thread: the first slot after the manifest's worlds.
const SECOND: WorldId = MAX_WORLDS as WorldId;

/// Slots of the monitor's capabilities.
const VCPU0: u64 = 3;
const VCPU1: u64 = 4;

/// A two-vCPU VM whose monitor (2000 shares) has two threads.
fn boot_smp_vm(platform: &mut FakePlatform) -> System {
    boot_with(platform, false)
}

/// [`boot_smp_vm`], with a third world (`TUNER`, id 1) holding a World capability on the
/// monitor (slot 1, read and write) when `tuner`.
fn boot_with(platform: &mut FakePlatform, tuner: bool) -> System {
    boot_with_params(platform, tuner, true)
}

/// [`boot_with`], the monitor's `coschedule` manifest setting as given.
fn boot_with_params(platform: &mut FakePlatform, tuner: bool, coschedule: bool) -> System {
    let elf: &'static [u8] = Box::leak(tiny_elf().into_boxed_slice());
    let mut objects = heapless::Vec::new();
    for o in [
        ObjectSpec::Log { world: "monitor" },
        ObjectSpec::Vm { name: "vm1" },
        ObjectSpec::Memory {
            name: "vm1-ram",
            size_kib: 4096,
        },
        ObjectSpec::Vcpu {
            name: "vm1-vcpu0",
            vm: 1,
        },
        ObjectSpec::Vcpu {
            name: "vm1-vcpu1",
            vm: 1,
        },
    ] {
        objects.push(o).unwrap();
    }
    if tuner {
        objects.push(ObjectSpec::World { name: "monitor" }).unwrap();
        objects.push(ObjectSpec::Log { world: "tuner" }).unwrap();
    }
    let mut caps = heapless::Vec::new();
    let all_memory = Rights::READ | Rights::WRITE | Rights::EXECUTE | Rights::MAP;
    for (slot, name, object, rights) in [
        (0, "log", 0, Rights::LOG),
        (1, "vm", 1, Rights::MAP | Rights::READ),
        (2, "memory:guest-ram", 2, all_memory),
        (3, "vcpu:0", 3, Rights::READ | Rights::WRITE),
        (4, "vcpu:1", 4, Rights::READ | Rights::WRITE),
    ] {
        caps.push(CapSpec {
            slot,
            name,
            object,
            rights,
            badge: 0,
        })
        .unwrap();
    }
    let mut worlds = heapless::Vec::new();
    worlds
        .push(WorldSpec {
            name: "monitor",
            binary: "prog",
            memory_kib: 512,
            sched: SchedParams {
                shares: 2000,
                coschedule,
                ..SchedParams::default()
            },
            guest_facing: true,
            threads: 2,
            caps,
        })
        .unwrap();
    if tuner {
        let mut caps = heapless::Vec::new();
        for (slot, name, object, rights) in [
            (0, "log", 6, Rights::LOG),
            (1, "world:monitor", 5, Rights::READ | Rights::WRITE),
        ] {
            caps.push(CapSpec {
                slot,
                name,
                object,
                rights,
                badge: 0,
            })
            .unwrap();
        }
        worlds
            .push(WorldSpec {
                name: "tuner",
                binary: "prog",
                memory_kib: 256,
                sched: SchedParams::default(),
                guest_facing: false,
                threads: 1,
                caps,
            })
            .unwrap();
    }
    system_of(platform, elf, objects, worlds)
}

const TUNER: WorldId = 1;

#[test]
fn each_thread_is_accounted_and_a_change_of_parameters_divides_among_them() {
    let mut platform = FakePlatform::new();
    let mut system = boot_with(&mut platform, true);
    let mut frame = Registers::default();
    // vCPU 1's thread runs a while: its own accounting shows it, the first thread's not.
    run_as(&mut system, &mut frame, SECOND);
    platform.clock.set(platform.clock.get() + 3_000_000);
    system.now = platform.clock.get();
    run_as(&mut system, &mut frame, TUNER);
    let stats =
        |system: &mut System, platform: &mut FakePlatform, frame: &mut Registers, thread| {
            syscall(
                system,
                platform,
                frame,
                Syscall::SchedStats,
                [1, thread, 0, 0, 0, 0],
            );
            result_of(system, TUNER)
        };
    let second = stats(&mut system, &mut platform, &mut frame, 1).unwrap();
    let first = stats(&mut system, &mut platform, &mut frame, 0).unwrap();
    assert!(second[0] >= 3_000_000, "thread 1 used {} ns", second[0]);
    assert!(first[0] < 3_000_000, "thread 0 used {} ns", first[0]);
    assert_eq!(
        stats(&mut system, &mut platform, &mut frame, 2),
        Err(Error::InvalidArgument),
        "the monitor has no third thread"
    );
    // New parameters for the world: each thread gets half.
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::SchedSet,
        [1, 3000, 0, 0, 0, 0],
    );
    assert_eq!(result_of(&system, TUNER), Ok([0; 6]));
    for thread in [MONITOR, SECOND] {
        assert_eq!(system.sched.params(thread).unwrap().shares, 1500);
    }
}

/// Puts `reply` in world `id`'s IPC buffer; returns its length.
fn put_reply(system: &System, platform: &mut FakePlatform, id: WorldId, reply: &ExitReply) -> u64 {
    let mut bytes = [0u8; 1024];
    let used = postcard::to_slice(reply, &mut bytes).unwrap();
    let length = used.len();
    write_ipc(
        system,
        platform,
        id,
        IPC_DATA_OFFSET as u64,
        &bytes[..length],
    );
    length as u64
}

fn start_at(rip: u32) -> ExitReply {
    ExitReply {
        registers: Some(GuestRegisters::protected_mode_flat(rip)),
        gprs: None,
        advance_rip: 0,
        inject: None,
        interrupt_window: false,
    }
}

fn u64_at(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes[..8].try_into().unwrap())
}

#[test]
fn a_worlds_threads_share_its_address_space_and_capabilities_but_not_stacks_or_buffers() {
    let mut platform = FakePlatform::new();
    let mut system = boot_smp_vm(&mut platform);
    assert_eq!(system.live_worlds(), 2, "the monitor and its second thread");
    let (first, second) = (
        system.world(MONITOR).unwrap(),
        system.world(SECOND).unwrap(),
    );
    assert_eq!((first.leader, first.thread), (MONITOR, 0));
    assert_eq!((second.leader, second.thread), (MONITOR, 1));
    assert_eq!(first.table.root(), second.table.root(), "one address space");
    assert_ne!(first.ipc_buffer, second.ipc_buffer);
    assert_eq!(
        first.source, second.source,
        "one log source (the VM's name)"
    );
    assert_eq!(first.fs_base, layout::IPC_BUFFER);
    assert_eq!(second.fs_base, layout::thread_ipc_buffer(1));
    assert_eq!(second.registers.rsp, layout::thread_stack_top(1));
    assert_eq!(
        second.registers.rip, first.registers.rip,
        "both start at the entry"
    );
    assert_eq!(
        second.registers.rdi, 0,
        "only the first gets the start info"
    );
    // Each buffer's header names its thread and its own address (the runtime reads them
    // through FS).
    for (id, index) in [(MONITOR, 0u32), (SECOND, 1)] {
        let header = read_ipc(&system, &mut platform, id, 0, 48);
        assert_eq!(header[36..40], index.to_le_bytes());
        assert_eq!(u64_at(&header[40..]), system.world(id).unwrap().fs_base);
    }
    // The second thread's stack and buffer are mapped in the shared table, user-writable.
    let table: PageTable = PageTable::from_root(first.table.root());
    for virt in [
        layout::thread_stack_top(1) - 8,
        layout::thread_ipc_buffer(1) + 4096,
    ] {
        let t = table
            .translate(platform.memory(), VirtAddr::new(virt))
            .unwrap_or_else(|| panic!("{virt:#x} unmapped"));
        assert!(t.access.user && t.access.write);
    }
    // The threads are one co-scheduling group.
    assert_eq!(system.sched.group(MONITOR), Some(MONITOR));
    assert_eq!(system.sched.group(SECOND), Some(MONITOR));
    // The world's shares are divided among its threads.
    assert_eq!(system.sched.params(MONITOR).unwrap().shares, 1000);
    assert_eq!(system.sched.params(SECOND).unwrap().shares, 1000);
    // The second thread uses the world's capabilities: it runs vCPU 1.
    let mut frame = Registers::default();
    run_as(&mut system, &mut frame, SECOND);
    let length = put_reply(&system, &mut platform, SECOND, &start_at(0x1000));
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::VcpuRun,
        [VCPU1, length, 0, 0, 0, 0],
    );
    assert!(system.guest_entry(&mut platform, SECOND).is_some());
}

#[test]
fn thread_params_divide_shares_and_keep_reservations_whole() {
    let params = crate::sched::Params {
        shares: 3000,
        reservation_mhz: 1001,
        limit_mhz: 1001,
        affinity: 0b11,
    };
    let each = super::super::world::thread_params(params, 2);
    assert_eq!(each.shares, 1500);
    assert_eq!(
        each.reservation_mhz, 501,
        "rounded up: together at least 1001"
    );
    assert_eq!(each.limit_mhz, 501, "never below the reservation");
    assert_eq!(each.affinity, 0b11);
    let one = super::super::world::thread_params(params, 1);
    assert_eq!(one, params);
    let unlimited = super::super::world::thread_params(crate::sched::Params::with_shares(1), 4);
    assert_eq!((unlimited.shares, unlimited.limit_mhz), (1, 0));
}

#[test]
fn a_kick_wakes_a_halted_sibling_ends_a_waiting_guest_run_and_is_kept_for_the_next_run() {
    let mut platform = FakePlatform::new();
    let mut system = boot_smp_vm(&mut platform);
    let mut frame = Registers::default();
    // Thread 0's guest halted: it sleeps for a second.
    run_as(&mut system, &mut frame, MONITOR);
    let length = put_reply(&system, &mut platform, MONITOR, &start_at(0x1000));
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::VcpuRun,
        [VCPU0, length, esker_abi::VCPU_HALTED, 1_000_000_000, 0, 0],
    );
    assert!(matches!(
        system.world(MONITOR).unwrap().state,
        WorldState::Sleeping { .. }
    ));
    // Thread 1 sends it an IPI: kicked, it wakes at once with a timeout.
    run_as(&mut system, &mut frame, SECOND);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::VcpuKick,
        [VCPU0, 0, 0, 0, 0, 0],
    );
    assert_eq!(result_of(&system, SECOND), Ok([0; 6]));
    // (Runnable: the policy may even run it at once, its sibling being ahead.)
    assert!(matches!(
        system.world(MONITOR).unwrap().state,
        WorldState::Ready | WorldState::Running
    ));
    assert_eq!(
        result_of(&system, MONITOR).map(|r| r[1]),
        Ok(esker_abi::VCPU_TIMEOUT)
    );
    run_as(&mut system, &mut frame, SECOND);

    // A kick with no run in progress is kept: the next run applies its reply and returns
    // at once, without entering the guest.
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::VcpuKick,
        [VCPU1, 0, 0, 0, 0, 0],
    );
    let length = put_reply(&system, &mut platform, SECOND, &start_at(0x2000));
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::VcpuRun,
        [VCPU1, length, 0, 0, 0, 0],
    );
    assert_eq!(
        result_of(&system, SECOND).map(|r| r[1]),
        Ok(esker_abi::VCPU_TIMEOUT)
    );
    assert!(system.guest_entry(&mut platform, SECOND).is_none());
    let vcpu1 = (0..MAX_OBJECTS as ObjectId)
        .filter_map(|id| match system.object(id).map(|o| &o.object) {
            Some(Object::Vcpu(v)) => Some((v.vmcb, v.state)),
            _ => None,
        })
        .nth(1)
        .unwrap();
    platform.with_vcpu(vcpu1.0, vcpu1.1, |vmcb, _| {
        assert_eq!(vmcb.save.rip, 0x2000, "the reply was applied")
    });
    // Only once: the run after it enters the guest.
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::VcpuRun,
        [VCPU1, 0, 0, 0, 0, 0],
    );
    assert!(system.guest_entry(&mut platform, SECOND).is_some());

    // A guest waiting for the CPU (its thread preempted in guest mode) leaves guest mode
    // when kicked: its run returns a timeout when the thread next runs.
    run_as(&mut system, &mut frame, MONITOR);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::VcpuKick,
        [VCPU1, 0, 0, 0, 0, 0],
    );
    assert!(system.guest_entry(&mut platform, SECOND).is_none());
    assert_eq!(
        result_of(&system, SECOND).map(|r| r[1]),
        Ok(esker_abi::VCPU_TIMEOUT)
    );
    // Without the capability nothing can be kicked.
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::VcpuKick,
        [0, 0, 0, 0, 0, 0],
    );
    assert_eq!(result_of(&system, MONITOR), Err(Error::WrongObjectKind));
}

#[test]
fn stopping_one_thread_stops_the_world_and_frees_its_memory_once() {
    let mut platform = FakePlatform::new();
    let mut system = boot_smp_vm(&mut platform);
    let frames = system.world(MONITOR).unwrap().frames;
    assert!(
        frames > 2 * (STACK_PAGES + 2),
        "both stacks and buffers are charged"
    );
    let before = platform.allocated.len();
    let mut frame = Registers::default();
    run_as(&mut system, &mut frame, SECOND);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::Exit,
        [3, 0, 0, 0, 0, 0],
    );
    assert_eq!(system.live_worlds(), 0, "the whole world stopped");
    for id in [MONITOR, SECOND] {
        assert_eq!(system.world(id).unwrap().state, WorldState::Stopped);
        assert!(system.sched.params(id).is_none());
    }
    assert!(!system.has_zombies());
    // Every frame of the world went back, once (the fake platform panics on a double
    // free); the VM's objects stay.
    assert_eq!(platform.allocated.len() as u64, before as u64 - frames);
}

#[test]
fn a_thread_running_on_another_cpu_keeps_the_address_space_until_that_cpu_leaves_it() {
    CPUS.set(2);
    let mut platform = FakePlatform::new();
    let mut system = boot_smp_vm(&mut platform);
    CPUS.set(1);
    let Next::World { world: on_0, .. } = system.start(&platform) else {
        panic!("CPU 0 idles")
    };
    system.select_cpu(1);
    let Next::World { world: on_1, .. } = system.start(&platform) else {
        panic!("CPU 1 idles")
    };
    assert_ne!(on_0, on_1);
    let _ = system.take_kicks();
    let before = platform.allocated.len();
    // The thread on CPU 1 faults: the world stops, but CPU 0 still runs its other thread.
    let mut frame = Registers::default();
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::Exit,
        [1, 0, 0, 0, 0, 0],
    );
    assert_eq!(system.world(on_0).unwrap().state, WorldState::Stopped);
    assert_eq!(
        system.take_kicks(),
        0b1,
        "CPU 0 must leave the stopped thread"
    );
    assert!(system.has_zombies());
    assert_eq!(
        platform.allocated.len(),
        before,
        "nothing freed under CPU 0"
    );
    system.reap(&mut platform);
    assert_eq!(platform.allocated.len(), before, "CPU 0 still runs it");
    // CPU 0 takes the kick: it re-decides (nothing left to run) and then the memory goes.
    system.select_cpu(0);
    let next = system.on_timer(&platform);
    assert!(matches!(next, Next::Idle { .. }), "{next:?}");
    system.reap(&mut platform);
    assert!(!system.has_zombies());
    assert!(platform.allocated.len() < before);
    // A system call the stopped thread had in flight is not run: its registers stay as
    // they were (a call that ran would leave its result in them).
    system.current = Some(on_0);
    system.registers_mut(on_0).unwrap().rax = Syscall::Yield as u64;
    let before = system.world(on_0).unwrap().registers;
    let next = system.on_syscall(&mut platform);
    assert!(matches!(next, Next::Idle { .. }));
    assert_eq!(system.world(on_0).unwrap().registers, before);
}

#[test]
fn coschedule_off_leaves_the_threads_ungrouped() {
    let mut platform = FakePlatform::new();
    let system = boot_with_params(&mut platform, false, false);
    assert_eq!(system.sched.group(MONITOR), None);
    assert_eq!(system.sched.group(SECOND), None);
    // Everything else about the threads is as with co-scheduling.
    assert_eq!(system.sched.params(SECOND).unwrap().shares, 1000);
}
