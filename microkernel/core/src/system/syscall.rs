//! System calls: decode the number and arguments from the caller's saved registers, check
//! every capability and argument, act, and leave the result in the caller's registers.
//!
//! A handler returns `Ok(Some(values))` to complete the call now, `Ok(None)` when the
//! result is delivered later (the caller blocked, or IPC already wrote it), or an error.
//! Nothing a world passes can make the kernel panic or touch memory the world does not
//! own: user pointers are translated through the world's own page table, page by page.

use esker_abi::{CapSlot, Error, KernelInfo, ObjectKind, Rights, Syscall, layout};

use super::world::{ScratchFrames, missing_tables};
use super::{MAX_MAPPINGS, Mapping, Object, Platform, System, WorldState, kernel_line};
use crate::addr::{PAGE_SIZE, PhysAddr, VirtAddr};
use crate::cap::WorldId;
use crate::logframe::{Kind, MAX_PAYLOAD};
use crate::paging::{Access, CachePolicy, MapError, PageSize, PageTable};

type Outcome = Result<Option<[u64; 6]>, Error>;

const fn done(values: [u64; 6]) -> Outcome {
    Ok(Some(values))
}

impl System {
    /// Runs the system call the running world `id` made (number in `rax`).
    pub(super) fn syscall(&mut self, platform: &mut impl Platform, id: WorldId) {
        let Some(world) = self.world(id) else { return };
        let number = world.registers.rax;
        let args = world.registers.args();
        let outcome = match Syscall::from_number(number) {
            None => Err(Error::InvalidSyscall),
            Some(call) => self.run_syscall(platform, id, call, args),
        };
        let result = match outcome {
            Ok(None) => return,
            Ok(Some(values)) => Ok(values),
            Err(error) => Err(error),
        };
        if let Some(world) = self.world_mut(id) {
            world.registers.set_result(result);
        }
    }

    fn run_syscall(
        &mut self,
        platform: &mut impl Platform,
        id: WorldId,
        call: Syscall,
        a: [u64; 6],
    ) -> Outcome {
        match call {
            Syscall::Log => self.sys_log(platform, id, a[0], a[1], a[2]),
            Syscall::Call => self.send(platform, id, a[0], true).map(|()| None),
            Syscall::Send => self.send(platform, id, a[0], false).map(|()| None),
            Syscall::Recv => self.receive(platform, id, a[0]).map(|()| None),
            Syscall::Reply => self.reply(platform, id).map(|()| Some([0; 6])),
            Syscall::ReplyRecv => {
                if self.reply_recv_donated(platform, id, a[0]) {
                    return Ok(None);
                }
                match self.reply(platform, id) {
                    Ok(()) | Err(Error::NoReplyTarget) => {}
                    Err(e) => return Err(e),
                }
                self.receive(platform, id, a[0]).map(|()| None)
            }
            Syscall::Signal => {
                let (notification, _) =
                    self.capability_for(id, a[0], ObjectKind::Notification, Rights::SIGNAL)?;
                self.signal_notification(notification, a[1]);
                done([0; 6])
            }
            Syscall::Wait => Ok(self.wait(id, a[0], true)?.map(|bits| [bits, 0, 0, 0, 0, 0])),
            Syscall::Poll => Ok(self
                .wait(id, a[0], false)?
                .map(|bits| [bits, 0, 0, 0, 0, 0])),
            Syscall::CapDerive => {
                let slot = slot(a[0])?;
                let rights = Rights::from_bits_truncate(a[1] as u32);
                let new = self
                    .caps
                    .derive(id, slot, rights, a[2], id, None)
                    .map_err(Error::from)?;
                done([u64::from(new), 0, 0, 0, 0, 0])
            }
            Syscall::CapDelete => {
                self.caps
                    .delete(self.space(id), slot(a[0])?)
                    .map_err(Error::from)?;
                self.unmap_stale(platform);
                self.unmap_stale_vm_memory(platform);
                done([0; 6])
            }
            Syscall::CapRevoke => {
                let count = self
                    .caps
                    .revoke(self.space(id), slot(a[0])?)
                    .map_err(Error::from)?;
                self.unmap_stale(platform);
                self.unmap_stale_vm_memory(platform);
                done([count as u64, 0, 0, 0, 0, 0])
            }
            Syscall::CapInfo => {
                let cap = self
                    .caps
                    .lookup(self.space(id), slot(a[0])?)
                    .map_err(Error::from)?;
                done([
                    cap.kind as u64,
                    u64::from(cap.rights.bits()),
                    cap.badge,
                    0,
                    0,
                    0,
                ])
            }
            Syscall::MemoryMap => self.sys_memory_map(platform, id, a[0], a[1], a[2]),
            Syscall::MemoryUnmap => self.sys_memory_unmap(platform, id, a[0]),
            Syscall::PortIn | Syscall::PortOut => {
                let (object, _) =
                    self.capability_for(id, a[0], ObjectKind::IoPorts, Rights::DEVICE)?;
                let Some(Object::IoPorts { base, count }) = self.object(object).map(|o| &o.object)
                else {
                    return Err(Error::InvalidCapability);
                };
                let (port, width) = (a[1], a[2]);
                if !matches!(width, 1 | 2 | 4) {
                    return Err(Error::InvalidArgument);
                }
                let (base, count) = (u64::from(*base), u64::from(*count));
                if port < base || port.saturating_add(width) > base + count {
                    return Err(Error::OutOfRange);
                }
                if call == Syscall::PortIn {
                    let value = platform.port_in(port as u16, width as u8);
                    done([u64::from(value), 0, 0, 0, 0, 0])
                } else {
                    platform.port_out(port as u16, width as u8, a[3] as u32);
                    done([0; 6])
                }
            }
            Syscall::IrqAck => {
                let (object, _) =
                    self.capability_for(id, a[0], ObjectKind::Interrupt, Rights::DEVICE)?;
                let Some(Object::Interrupt { line, .. }) = self.object(object).map(|o| &o.object)
                else {
                    return Err(Error::InvalidCapability);
                };
                platform.set_irq_enabled(*line, true);
                done([0; 6])
            }
            Syscall::Yield => {
                if let Some(w) = self.world_mut(id) {
                    w.registers.set_result(Ok([0; 6]));
                }
                self.resched = true;
                Ok(None)
            }
            Syscall::Exit => {
                let name = self.world(id).map(|w| w.name.clone()).unwrap_or_default();
                kernel_line(
                    platform,
                    format_args!("world {name} exited with code {}", a[0] as i64),
                );
                self.stop_world(platform, id);
                Ok(None)
            }
            Syscall::SchedSet => self.sys_sched_set(platform, id, a),
            Syscall::VmMap => self.sys_vm_map(platform, id, a),
            Syscall::VmUnmap => self.sys_vm_unmap(platform, id, a),
            Syscall::VcpuRun => self.sys_vcpu_run(platform, id, a),
            Syscall::VcpuKick => self.sys_vcpu_kick(id, a),
            Syscall::ConsoleRead => {
                self.capability_for(id, a[0], ObjectKind::Console, Rights::READ)?;
                let mut bytes = [0u8; 256];
                let mut count = 0;
                while count < bytes.len()
                    && let Some(byte) = self.console.pop_front()
                {
                    bytes[count] = byte;
                    count += 1;
                }
                let data = self.world(id).ok_or(Error::InvalidArgument)?.ipc_data();
                platform.write_phys(data, &bytes[..count]);
                done([count as u64, 0, 0, 0, 0, 0])
            }
            Syscall::SchedStats => {
                let world = self.world_capability(id, a[0], Rights::READ)?;
                let index = u8::try_from(a[1]).map_err(|_| Error::InvalidArgument)?;
                let target = self.thread_of(world, index).ok_or(Error::InvalidArgument)?;
                let stats = self
                    .sched
                    .stats(target, self.now)
                    .ok_or(Error::InvalidCapability)?;
                done([
                    stats.used_ns,
                    stats.ready_ns,
                    stats.limited_ns,
                    stats.costop_ns,
                    stats.waited_ns,
                    stats.dispatches,
                ])
            }
            Syscall::KernelInfo => match a[0] {
                x if x == KernelInfo::WorldName as u64 => {
                    let Some(world) = self.world(id) else {
                        return Err(Error::InvalidArgument);
                    };
                    let (name, data) = (world.name.clone(), world.ipc_data());
                    platform.write_phys(data, name.as_bytes());
                    done([name.len() as u64, 0, 0, 0, 0, 0])
                }
                x if x == KernelInfo::TscKhz as u64 => done([platform.tsc_khz(), 0, 0, 0, 0, 0]),
                x if x == KernelInfo::Cpu as u64 => {
                    done([self.cpu as u64, self.cpu_count as u64, 0, 0, 0, 0])
                }
                _ => Err(Error::InvalidArgument),
            },
        }
    }

    /// The world a World capability names, checked for `needed`.
    fn world_capability(&self, id: WorldId, slot: u64, needed: Rights) -> Result<WorldId, Error> {
        let (object, _) = self.capability_for(id, slot, ObjectKind::World, needed)?;
        match self.object(object).map(|o| &o.object) {
            Some(Object::World(target))
                if self
                    .world(*target)
                    .is_some_and(|w| w.state != WorldState::Stopped) =>
            {
                Ok(*target)
            }
            _ => Err(Error::InvalidCapability),
        }
    }

    /// Thread `index` of world `leader` (0: the world itself).
    fn thread_of(&self, leader: WorldId, index: u8) -> Option<WorldId> {
        self.threads_of(leader)
            .into_iter()
            .find(|&t| self.world(t).is_some_and(|w| w.thread == index))
    }

    /// `sched_set(world, shares, reservation_mhz, limit_mhz, affinity)`: the parameters
    /// are the world's, divided among its threads as at creation; all of them change or
    /// none does.
    fn sys_sched_set(&mut self, platform: &mut impl Platform, id: WorldId, a: [u64; 6]) -> Outcome {
        let target = self.world_capability(id, a[0], Rights::WRITE)?;
        let number = |v: u64| u32::try_from(v).map_err(|_| Error::InvalidArgument);
        let params = crate::sched::Params {
            shares: number(a[1])?,
            reservation_mhz: number(a[2])?,
            limit_mhz: number(a[3])?,
            affinity: a[4],
        };
        let threads: heapless::Vec<(WorldId, crate::sched::Params), { layout::MAX_THREADS }> = self
            .threads_of(target)
            .into_iter()
            .filter_map(|thread| Some((thread, self.sched.params(thread)?)))
            .collect();
        let each = super::world::thread_params(params, threads.len() as u32);
        let mut refused = None;
        for (done, &(thread, _)) in threads.iter().enumerate() {
            if let Err(refusal) = self.sched.update(thread, each, self.now) {
                for &(undo, old) in &threads[..done] {
                    let _ = self.sched.update(undo, old, self.now);
                }
                refused = Some(refusal);
                break;
            }
        }
        if let Some(refusal) = refused {
            let (caller, name) = (
                self.world(id).map(|w| w.name.clone()).unwrap_or_default(),
                self.world(target)
                    .map(|w| w.name.clone())
                    .unwrap_or_default(),
            );
            kernel_line(
                platform,
                format_args!(
                    "world {caller}: scheduling change of world {name} refused: {refusal}"
                ),
            );
            return Err(Error::NotAdmitted);
        }
        // A change may make another world due at once (a new reservation): decide again.
        self.resched = true;
        self.maybe_preempt = true;
        done([0; 6])
    }

    /// `log(ptr, len, slot)`: copies the frame from user memory and sends it tagged with
    /// the world's source id. Bit 63 of `len` marks UTF-8 text instead of a defmt frame.
    fn sys_log(
        &mut self,
        platform: &mut impl Platform,
        id: WorldId,
        pointer: u64,
        length: u64,
        slot: u64,
    ) -> Outcome {
        self.capability_for(id, slot, ObjectKind::Log, Rights::LOG)?;
        let text = length & (1 << 63) != 0;
        let length = length & !(1 << 63);
        if length as usize > MAX_PAYLOAD {
            return Err(Error::MessageTooLong);
        }
        let mut buffer = [0u8; MAX_PAYLOAD];
        let payload = &mut buffer[..length as usize];
        self.copy_from_user(platform, id, pointer, payload)?;
        let now = self.now;
        let Some(world) = self.world_mut(id) else {
            return Err(Error::InvalidArgument);
        };
        if !world.log_budget.take(length, now) {
            return Err(Error::WouldBlock);
        }
        let (source, dropped) = (world.source, core::mem::take(&mut world.log_budget.dropped));
        if dropped > 0 {
            let name = world.name.clone();
            kernel_line(
                platform,
                format_args!("world {name}: {dropped} log bytes dropped (over its log budget)"),
            );
        }
        platform.log_packet(if text { Kind::Text } else { Kind::Defmt }, source, payload);
        done([0; 6])
    }

    /// Copies `out.len()` bytes from the world's address space, refusing anything that is
    /// not mapped user memory.
    fn copy_from_user(
        &self,
        platform: &mut impl Platform,
        id: WorldId,
        pointer: u64,
        out: &mut [u8],
    ) -> Result<(), Error> {
        let world = self.world(id).ok_or(Error::InvalidArgument)?;
        let end = pointer
            .checked_add(out.len() as u64)
            .ok_or(Error::BadAddress)?;
        if end > layout::USER_END {
            return Err(Error::BadAddress);
        }
        let mut done_bytes = 0usize;
        while done_bytes < out.len() {
            let virt = pointer + done_bytes as u64;
            let translation = world
                .table
                .translate(platform.memory(), VirtAddr::new(virt))
                .ok_or(Error::BadAddress)?;
            if !translation.access.user {
                return Err(Error::BadAddress);
            }
            let in_page = (PAGE_SIZE - virt % PAGE_SIZE) as usize;
            let n = in_page.min(out.len() - done_bytes);
            platform.read_phys(translation.phys, &mut out[done_bytes..done_bytes + n]);
            done_bytes += n;
        }
        Ok(())
    }

    /// `memory_map(slot, vaddr, rights) -> size`: a Memory region (RAM, write-back) or an
    /// Mmio region (device registers, uncached, never executable).
    fn sys_memory_map(
        &mut self,
        platform: &mut impl Platform,
        id: WorldId,
        slot_arg: u64,
        virt: u64,
        rights: u64,
    ) -> Outcome {
        // Threads of one world share its address space, capabilities and mappings.
        let id = self.space(id);
        let cap_slot = slot(slot_arg)?;
        let cap = self.caps.lookup(id, cap_slot).map_err(Error::from)?;
        let wanted = Rights::from_bits_truncate(rights as u32)
            .intersection(Rights::READ | Rights::WRITE | Rights::EXECUTE);
        // RAM is mapped write-back; device MMIO uncached, never executable, and only with
        // the DEVICE right as well.
        let (base, frames, cache) = match self.object(cap.object).map(|o| &o.object) {
            Some(Object::Memory { base, frames }) => {
                (base.start().as_u64(), *frames, CachePolicy::WriteBack)
            }
            Some(Object::Mmio { phys, size }) => {
                if !cap.rights.contains(Rights::DEVICE) || wanted.contains(Rights::EXECUTE) {
                    return Err(Error::InsufficientRights);
                }
                (*phys, size.div_ceil(PAGE_SIZE), CachePolicy::Uncached)
            }
            Some(_) => return Err(Error::WrongObjectKind),
            None => return Err(Error::InvalidCapability),
        };
        if !cap.rights.contains(Rights::MAP) || !cap.rights.contains(wanted) {
            return Err(Error::InsufficientRights);
        }
        if wanted.contains(Rights::WRITE) && wanted.contains(Rights::EXECUTE) {
            return Err(Error::InvalidArgument);
        }
        let size = frames * PAGE_SIZE;
        if !virt.is_multiple_of(PAGE_SIZE)
            || virt < layout::MAP_BASE
            || virt.checked_add(size).is_none_or(|e| e > layout::MAP_END)
        {
            return Err(Error::BadAddress);
        }
        let world = self.world(id).ok_or(Error::InvalidArgument)?;
        if world.mappings.len() >= MAX_MAPPINGS {
            return Err(Error::OutOfMemory);
        }
        if world
            .mappings
            .iter()
            .any(|m| virt < m.virt + m.pages * PAGE_SIZE && m.virt < virt + size)
        {
            return Err(Error::AlreadyMapped);
        }
        let access = Access {
            write: wanted.contains(Rights::WRITE),
            execute: wanted.contains(Rights::EXECUTE),
            user: true,
            global: false,
            cache,
        };
        let mut table: PageTable = PageTable::from_root(world.table.root());
        for page in 0..frames {
            let page_virt = virt + page * PAGE_SIZE;
            let mut supply = ScratchFrames::default();
            let mut result = Ok(());
            for _ in 0..missing_tables(platform.memory(), &table, page_virt) {
                match platform.allocate_frame() {
                    Some(frame) => supply.push(frame),
                    None => result = Err(MapError::OutOfFrames),
                }
            }
            let frame_phys = PhysAddr::new(base + page * PAGE_SIZE);
            if result.is_ok() {
                result = table.map(
                    platform.memory(),
                    &mut supply,
                    VirtAddr::new(page_virt),
                    frame_phys,
                    PageSize::Size4K,
                    access,
                );
            }
            supply.give_back(platform);
            if let Err(error) = result {
                for undo in 0..page {
                    let _ = table.unmap(platform.memory(), VirtAddr::new(virt + undo * PAGE_SIZE));
                }
                return Err(match error {
                    MapError::OutOfFrames => Error::OutOfMemory,
                    MapError::AlreadyMapped { .. } => Error::AlreadyMapped,
                    _ => Error::InvalidArgument,
                });
            }
        }
        let mapping = Mapping {
            slot: cap_slot,
            object: cap.object,
            virt,
            pages: frames,
        };
        if let Some(world) = self.world_mut(id) {
            let _ = world.mappings.push(mapping);
        }
        done([size, 0, 0, 0, 0, 0])
    }

    /// `memory_unmap(slot)`.
    fn sys_memory_unmap(
        &mut self,
        platform: &mut impl Platform,
        id: WorldId,
        slot_arg: u64,
    ) -> Outcome {
        let id = self.space(id);
        let cap_slot = slot(slot_arg)?;
        let world = self.world(id).ok_or(Error::InvalidArgument)?;
        let index = world
            .mappings
            .iter()
            .position(|m| m.slot == cap_slot)
            .ok_or(Error::InvalidArgument)?;
        self.unmap_one(platform, id, index);
        done([0; 6])
    }

    fn unmap_one(&mut self, platform: &mut impl Platform, id: WorldId, index: usize) {
        let Some(world) = self.world_mut(id) else {
            return;
        };
        if index >= world.mappings.len() {
            return;
        }
        let mapping = world.mappings.swap_remove(index);
        let mut table: PageTable = PageTable::from_root(world.table.root());
        let root = table.root();
        for page in 0..mapping.pages {
            let virt = mapping.virt + page * PAGE_SIZE;
            let _ = table.unmap(platform.memory(), VirtAddr::new(virt));
            platform.invalidate_page(root, virt);
        }
        platform.flush_other_cpus(Some(root));
    }

    /// Removes every mapping whose capability is gone (deleted or revoked): a revoked
    /// Memory capability stops working at once.
    fn unmap_stale(&mut self, platform: &mut impl Platform) {
        for id in 0..super::WORLD_SLOTS as WorldId {
            while let Some(index) = self.stale_mapping(id) {
                self.unmap_one(platform, id, index);
            }
        }
    }

    /// The index of a mapping of `id` whose capability is gone, if any.
    fn stale_mapping(&self, id: WorldId) -> Option<usize> {
        let world = self.world(id)?;
        if world.state == WorldState::Stopped {
            return None;
        }
        world.mappings.iter().position(|m| {
            self.caps.lookup(id, m.slot).map_or(true, |c| {
                c.object != m.object || !matches!(c.kind, ObjectKind::Memory | ObjectKind::Mmio)
            })
        })
    }
}

pub(super) fn slot(value: u64) -> Result<CapSlot, Error> {
    let slot = CapSlot::try_from(value).map_err(|_| Error::InvalidCapability)?;
    if slot as usize >= esker_abi::CAP_SLOTS {
        return Err(Error::InvalidCapability);
    }
    Ok(slot)
}
