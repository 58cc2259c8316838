//! Creating worlds from the manifest, and stopping them.
//!
//! A world's address space is a fresh page table sharing the kernel's upper half, with its
//! program's segments (W^X, user), a stack below `layout::STACK_TOP` with an unmapped guard
//! page, and the two-page IPC buffer at `layout::IPC_BUFFER`. Every frame is charged to the
//! world's memory budget; a world that does not fit is refused whole, and whatever was
//! allocated for it is given back. Stopping a world frees everything it owns.

use core::fmt;

use esker_abi::{IPC_ADDRESS_OFFSET, IPC_DATA_OFFSET, IPC_THREAD_OFFSET, layout, start_info};
use heapless::{String, Vec};

use super::{Object, Platform, Registers, STACK_PAGES, System, World, WorldState, ipc};
use crate::addr::{PAGE_SIZE, PhysAddr, PhysFrame, VirtAddr};
use crate::cap::{Capability, WorldId};
use crate::elf::{ElfError, ElfImage};
use crate::logframe::{Kind, SourceId};
use crate::manifest::{BundleView, ObjectSpec, WorldSpec};
use crate::paging::{
    Access, CachePolicy, EntryFormat, FrameSource, MapError, PageSize, PageTable, PhysMemory, X86,
};

/// Why a world (or the whole manifest) could not be created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorldError {
    /// The program is not a loadable ELF for a world.
    Elf(ElfError),
    /// The world needs more memory than its budget.
    OverBudget {
        /// Budget in KiB.
        budget_kib: u64,
        /// Needed so far, in KiB.
        needed_kib: u64,
    },
    /// Physical memory ran out.
    OutOfMemory,
    /// Building its address space failed.
    Map(MapError),
    /// Too many worlds or objects, or a name too long.
    Limit(&'static str),
    /// Installing a capability failed.
    Capability(crate::cap::CapError),
    /// The scheduler refused its parameters (admission control).
    Admission(crate::sched::AdmissionError),
    /// No run of physical memory this large is free.
    NoContiguousMemory {
        /// KiB asked for.
        kib: u64,
    },
    /// An object it needs could not be created (reported before).
    MissingObject,
    /// The CPU cannot run virtual machines (no SVM with nested paging).
    NoVirtualization,
}

/// Stands for an object that could not be created.
const MISSING: u32 = u32::MAX;

impl fmt::Display for WorldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Elf(e) => write!(f, "program: {e}"),
            Self::OverBudget {
                budget_kib,
                needed_kib,
            } => {
                write!(
                    f,
                    "needs at least {needed_kib} KiB but its budget is {budget_kib} KiB (memory_kib)"
                )
            }
            Self::OutOfMemory => f.write_str("out of physical memory"),
            Self::Map(e) => write!(f, "address space: {e}"),
            Self::Limit(what) => write!(f, "limit reached: {what}"),
            Self::Capability(e) => write!(f, "capability: {e}"),
            Self::Admission(e) => write!(f, "not admitted: {e}"),
            Self::NoContiguousMemory { kib } => write!(
                f,
                "needs {} MiB of contiguous physical memory; the host does not have that much free",
                kib.div_ceil(1024)
            ),
            Self::MissingObject => {
                f.write_str("an object it needs was not created (see the line above)")
            }
            Self::NoVirtualization => f.write_str(
                "this CPU cannot run virtual machines (AMD SVM with nested paging is needed)",
            ),
        }
    }
}

/// Each thread's share of its world's scheduling parameters: the world's shares,
/// reservation and limit are for all its threads together (as ESX divides a VM's among its
/// vCPUs). A reservation is rounded up, so the threads together hold at least the world's;
/// a limit down, but never below a thread's reservation.
pub(super) fn thread_params(world: crate::sched::Params, threads: u32) -> crate::sched::Params {
    if threads <= 1 {
        return world;
    }
    let reservation_mhz = world.reservation_mhz.div_ceil(threads);
    crate::sched::Params {
        // Zero shares stay zero: the scheduler refuses them.
        shares: if world.shares == 0 {
            0
        } else {
            (world.shares / threads).max(1)
        },
        reservation_mhz,
        limit_mhz: if world.limit_mhz == 0 {
            0
        } else {
            (world.limit_mhz / threads).max(reservation_mhz).max(1)
        },
        affinity: world.affinity,
    }
}

/// Frames charged to one world while it is built. On failure everything reachable from
/// the world's page table is freed (see [`free_user_half`]), so only a frame not yet mapped
/// needs giving back by hand.
struct Charge<'p, P: Platform> {
    platform: &'p mut P,
    budget: u64,
    used: u64,
}

impl<P: Platform> Charge<'_, P> {
    fn frame(&mut self) -> Result<PhysFrame, WorldError> {
        if self.used >= self.budget {
            return Err(WorldError::OverBudget {
                budget_kib: self.budget * 4,
                needed_kib: (self.used + 1) * 4,
            });
        }
        let frame = self
            .platform
            .allocate_frame()
            .ok_or(WorldError::OutOfMemory)?;
        self.used += 1;
        Ok(frame)
    }

    /// Maps `frame` at `virt`, giving the frame back if that fails.
    fn map(
        &mut self,
        table: &mut PageTable,
        virt: u64,
        frame: PhysFrame,
        access: Access,
    ) -> Result<(), WorldError> {
        map_page(self, table, virt, frame, access).inspect_err(|_| self.platform.free_frame(frame))
    }
}

/// Maps one user page. The page-table builder borrows the platform's memory, so the
/// frames for missing intermediate tables are charged to the world first and handed over
/// from a list.
fn map_page<P: Platform>(
    charge: &mut Charge<'_, P>,
    table: &mut PageTable,
    virt: u64,
    frame: PhysFrame,
    access: Access,
) -> Result<(), WorldError> {
    let needed = missing_tables(charge.platform.memory(), table, virt);
    let mut supply = ScratchFrames::default();
    for _ in 0..needed {
        let table_frame = charge.frame()?;
        supply.push(table_frame);
    }
    let mem = charge.platform.memory();
    table
        .map(
            mem,
            &mut supply,
            VirtAddr::new(virt),
            frame.start(),
            PageSize::Size4K,
            access,
        )
        .map_err(WorldError::Map)
}

/// Frames handed to the page-table builder from a list filled beforehand.
#[derive(Default)]
pub(super) struct ScratchFrames(Vec<PhysFrame, 3>);

impl ScratchFrames {
    /// Adds a frame (at most three are ever needed for one 4 KiB page).
    pub(super) fn push(&mut self, frame: PhysFrame) {
        let _ = self.0.push(frame);
    }

    /// Gives back the frames the builder did not use.
    pub(super) fn give_back(self, platform: &mut impl Platform) {
        for frame in self.0 {
            platform.free_frame(frame);
        }
    }
}

impl FrameSource for ScratchFrames {
    fn allocate_table_frame(&mut self) -> Option<PhysFrame> {
        self.0.pop()
    }
}

/// How many page-table levels are missing on the way to the 4 KiB page at `virt`.
pub(super) fn missing_tables(mem: &impl PhysMemory, table: &PageTable, virt: u64) -> usize {
    let v = VirtAddr::new(virt);
    let indices = [v.p4_index(), v.p3_index(), v.p2_index()];
    let mut frame = table.root();
    for (depth, index) in indices.into_iter().enumerate() {
        let entry = mem.read_entry(frame, index);
        if !X86::is_present(entry) {
            return 3 - depth;
        }
        frame = PhysFrame::containing(PhysAddr::new(X86::address(entry)));
    }
    0
}

const fn user(write: bool, execute: bool) -> Access {
    Access {
        write,
        execute,
        user: true,
        global: false,
        cache: CachePolicy::WriteBack,
    }
}

impl System {
    /// Creates every object and world the bundle's manifest lists. A world that cannot
    /// be created is reported through `report` and left out; the others are created.
    pub fn instantiate(
        &mut self,
        platform: &mut impl Platform,
        bundle: &BundleView<'_>,
        mut report: impl FnMut(&str, &str, &WorldError),
    ) -> Result<(), WorldError> {
        self.now = platform.now_ns();
        let mhz = u32::try_from(platform.tsc_khz() / 1000)
            .unwrap_or(u32::MAX)
            .max(1);
        if self
            .sched
            .configure(self.cpu_count, mhz, platform.topology())
            .is_err()
        {
            return Err(WorldError::Limit("scheduler configuration"));
        }
        let mut ids: Vec<u32, { crate::manifest::MAX_OBJECTS }> = Vec::new();
        for spec in bundle.objects() {
            let object = match self.create_object(platform, bundle, &spec, &ids) {
                Ok(object) => object,
                Err(error) => {
                    // This object is missing; the worlds that would hold it are not created
                    // (a VM whose memory does not fit stays off), everything else is.
                    report("object", spec.name(), &error);
                    ids.push(MISSING)
                        .map_err(|_| WorldError::Limit("kernel objects"))?;
                    continue;
                }
            };
            let id = self
                .add_object(spec.name(), object)
                .ok_or(WorldError::Limit("kernel objects"))?;
            ids.push(id)
                .map_err(|_| WorldError::Limit("kernel objects"))?;
        }
        self.finish_instantiate(platform, bundle, &ids, report)
    }

    /// Creates the kernel object a manifest entry describes.
    fn create_object(
        &mut self,
        platform: &mut impl Platform,
        bundle: &BundleView<'_>,
        spec: &ObjectSpec<'_>,
        ids: &[u32],
    ) -> Result<Object, WorldError> {
        let spec = *spec;
        Ok(match spec {
            ObjectSpec::Log { .. } => Object::Log,
            ObjectSpec::World { name } => Object::World(
                bundle
                    .worlds()
                    .position(|w| w.name == name)
                    .unwrap_or(usize::MAX) as WorldId,
            ),
            ObjectSpec::Endpoint { .. } => Object::Endpoint(ipc::Endpoint::new()),
            ObjectSpec::Notification { .. } => Object::Notification(ipc::Notification::new()),
            ObjectSpec::Memory { size_kib, .. } => {
                let frames = u64::from(size_kib).div_ceil(4).max(1);
                let base = platform
                    .allocate_contiguous(frames)
                    .ok_or(WorldError::NoContiguousMemory { kib: frames * 4 })?;
                Object::Memory { base, frames }
            }
            ObjectSpec::Package { binary, .. } => {
                let bytes = bundle.binary(binary).unwrap_or_default();
                let frames = (bytes.len() as u64).div_ceil(PAGE_SIZE).max(1);
                let base = platform
                    .allocate_contiguous(frames)
                    .ok_or(WorldError::NoContiguousMemory { kib: frames * 4 })?;
                platform.write_phys(base.start(), bytes);
                Object::Memory { base, frames }
            }
            ObjectSpec::Console { .. } => Object::Console,
            ObjectSpec::Vm { .. } => {
                if platform.svm_limits().is_none() {
                    return Err(WorldError::NoVirtualization);
                }
                self.create_vm(platform).ok_or(WorldError::OutOfMemory)?
            }
            ObjectSpec::Vcpu { vm, .. } => {
                let vm = ids
                    .get(usize::from(vm))
                    .copied()
                    .filter(|&vm| vm != MISSING)
                    .ok_or(WorldError::MissingObject)?;
                self.create_vcpu(platform, vm)
                    .ok_or(WorldError::OutOfMemory)?
            }
            ObjectSpec::IoPorts { base, count, .. } => Object::IoPorts { base, count },
            ObjectSpec::Mmio { phys, size, .. } => Object::Mmio { phys, size },
            ObjectSpec::Interrupt {
                line,
                notification,
                bit,
                ..
            } => Object::Interrupt {
                line,
                // Objects are created in order, so the notification's id is known if it
                // comes first; otherwise it is fixed up below.
                notification: u32::from(notification),
                bit,
            },
        })
    }

    /// Links interrupts to their notifications, then creates the worlds.
    fn finish_instantiate(
        &mut self,
        platform: &mut impl Platform,
        bundle: &BundleView<'_>,
        ids: &[u32],
        mut report: impl FnMut(&str, &str, &WorldError),
    ) -> Result<(), WorldError> {
        // Interrupts name their notification by manifest index: translate to object ids and
        // enable the lines now that someone can receive them.
        for &id in ids {
            if let Some(Object::Interrupt {
                line, notification, ..
            }) = self.object_mut(id)
            {
                let line = *line;
                *notification = ids.get(*notification as usize).copied().unwrap_or(u32::MAX);
                platform.set_irq_enabled(line, true);
            }
        }
        for (index, spec) in bundle.worlds().enumerate() {
            let Some(elf) = bundle.binary(spec.binary) else {
                continue;
            };
            if spec
                .caps
                .iter()
                .any(|cap| ids.get(usize::from(cap.object)) == Some(&MISSING))
            {
                report("world", spec.name, &WorldError::MissingObject);
                continue;
            }
            if let Err(error) = self.create_world(platform, index as WorldId, &spec, elf, ids) {
                report("world", spec.name, &error);
            }
        }
        Ok(())
    }

    /// Creates one world with id `id` and installs its capabilities; a world with
    /// several threads gets the others too (ids from [`super::MAX_WORLDS`] up).
    fn create_world(
        &mut self,
        platform: &mut impl Platform,
        id: WorldId,
        spec: &WorldSpec<'_>,
        elf: &[u8],
        object_ids: &[u32],
    ) -> Result<(), WorldError> {
        if usize::from(id) >= super::MAX_WORLDS {
            return Err(WorldError::Limit("worlds"));
        }
        let threads = usize::from(spec.threads).clamp(1, layout::MAX_THREADS);
        let image = ElfImage::parse(elf).map_err(WorldError::Elf)?;
        image
            .check_user_layout(
                layout::PROGRAM_BASE,
                layout::thread_stack_top(threads as u64 - 1) - STACK_PAGES * PAGE_SIZE - PAGE_SIZE,
            )
            .map_err(WorldError::Elf)?;
        let mut name: String<32> = String::new();
        name.push_str(spec.name)
            .map_err(|_| WorldError::Limit("world name longer than 32 bytes"))?;

        // The world's first thread has its id; the others take free slots after the
        // manifest's worlds.
        let mut ids: Vec<WorldId, { layout::MAX_THREADS }> = Vec::new();
        let _ = ids.push(id);
        let mut free =
            (super::MAX_WORLDS..super::WORLD_SLOTS).filter(|&i| self.worlds[i].is_none());
        while ids.len() < threads {
            let slot = free.next().ok_or(WorldError::Limit("threads"))?;
            let _ = ids.push(slot as WorldId);
        }
        let params = thread_params(crate::sched::Params::from(spec.sched), threads as u32);
        for (added, &thread) in ids.iter().enumerate() {
            if let Err(error) = self.sched.add(thread, params, self.now) {
                for &undo in &ids[..added] {
                    let _ = self.sched.remove(undo, self.now);
                }
                return Err(WorldError::Admission(error));
            }
        }
        // The threads of one world (a VM's vCPUs) are co-scheduled, relaxed: none runs far
        // ahead of a runnable sibling (see `sched`) — unless the manifest turned it off.
        if ids.len() > 1 && spec.sched.coschedule {
            for &thread in &ids {
                let _ = self.sched.set_group(thread, Some(id), self.now);
            }
        }
        let result = self.create_admitted_world(platform, &ids, spec, &image, name, object_ids);
        if result.is_err() {
            for &thread in &ids {
                let _ = self.sched.remove(thread, self.now);
            }
        }
        result
    }

    /// The rest of [`create_world`](Self::create_world), once the scheduler admitted its
    /// threads (`ids`, the first is the world's own id).
    fn create_admitted_world(
        &mut self,
        platform: &mut impl Platform,
        ids: &[WorldId],
        spec: &WorldSpec<'_>,
        image: &ElfImage<'_>,
        name: String<32>,
        object_ids: &[u32],
    ) -> Result<(), WorldError> {
        let id = ids[0];
        let budget = u64::from(spec.memory_kib) / 4;
        let mut charge = Charge {
            platform,
            budget,
            used: 0,
        };
        let root = charge.frame()?;
        let built = Self::build_address_space(&mut charge, root, image, ids.len());
        let frames = charge.used;
        let platform = charge.platform;
        let (table, ipc_buffers) = match built {
            Ok(done) => done,
            Err(e) => {
                free_user_half(platform, root);
                return Err(e);
            }
        };

        // Capabilities.
        for cap in &spec.caps {
            let Some(&object) = object_ids.get(usize::from(cap.object)) else {
                continue;
            };
            let kind = self.object(object).map(|o| o.object.kind());
            let Some(kind) = kind else { continue };
            self.caps
                .install(
                    id,
                    cap.slot,
                    Capability {
                        object,
                        kind,
                        rights: cap.rights,
                        badge: cap.badge,
                    },
                )
                .map_err(WorldError::Capability)?;
        }

        // Start info into the first thread's IPC buffer's data (the others find it in
        // the runtime's copy).
        let mut record = [0u8; 1024];
        let length = start_info::encode(
            spec.name,
            spec.caps.iter().map(|c| (c.slot, c.name)),
            &mut record,
        )
        .map_err(|_| WorldError::Limit("start-info record longer than 1 KiB"))?;
        platform.write_phys(
            PhysAddr::new(ipc_buffers[0].start().as_u64() + IPC_DATA_OFFSET as u64),
            &record[..length],
        );

        let source = (id + 1) as SourceId;
        platform.log_packet(Kind::Announce, source, spec.name.as_bytes());
        for (index, (&thread, &ipc_buffer)) in ids.iter().zip(&ipc_buffers).enumerate() {
            let fs_base = layout::thread_ipc_buffer(index as u64);
            let header = ipc_buffer.start().as_u64();
            platform.write_phys(
                PhysAddr::new(header + IPC_THREAD_OFFSET as u64),
                &(index as u32).to_le_bytes(),
            );
            platform.write_phys(
                PhysAddr::new(header + IPC_ADDRESS_OFFSET as u64),
                &fs_base.to_le_bytes(),
            );
            let registers = Registers {
                rip: image.entry(),
                rsp: layout::thread_stack_top(index as u64),
                rdi: if index == 0 { length as u64 } else { 0 },
                cs: super::USER_CODE_SELECTOR,
                ss: super::USER_DATA_SELECTOR,
                rflags: super::USER_RFLAGS,
                ..Registers::default()
            };
            let mut thread_name = name.clone();
            if index > 0 {
                let mut suffix: String<8> = String::new();
                let _ = core::fmt::write(&mut suffix, format_args!("#{index}"));
                while thread_name.len() + suffix.len() > 32 {
                    thread_name.pop();
                }
                let _ = thread_name.push_str(&suffix);
            }
            self.worlds[usize::from(thread)] = Some(World {
                name: thread_name,
                source,
                state: WorldState::Ready,
                registers,
                table: PageTable::from_root(table.root()),
                ipc_buffer,
                reply_to: None,
                mappings: Vec::new(),
                log_budget: super::LogBudget::full(self.now),
                frames: if index == 0 { frames } else { 0 },
                guest: None,
                leader: id,
                thread: index as u8,
                fs_base,
            });
            self.make_ready(thread);
        }
        Ok(())
    }

    /// Builds a world's address space: its program, and for each of its `threads` a
    /// stack and an IPC buffer (see `esker_abi::layout`). Returns the table and the IPC
    /// buffers' first frames, by thread.
    fn build_address_space<P: Platform>(
        charge: &mut Charge<'_, P>,
        root: PhysFrame,
        image: &ElfImage<'_>,
        threads: usize,
    ) -> Result<(PageTable, Vec<PhysFrame, { layout::MAX_THREADS }>), WorldError> {
        let kernel = charge.platform.kernel_table();
        let mut table: PageTable = PageTable::from_root(root);
        {
            let mem = charge.platform.memory();
            mem.zero_frame(root);
            table.copy_upper_half_from(mem, &kernel);
        }
        for segment in image.segments() {
            let first = segment.vaddr / PAGE_SIZE * PAGE_SIZE;
            let end = segment.vaddr + segment.mem_size;
            let mut page = first;
            while page < end {
                let frame = charge.frame()?;
                // Copy the part of the file that falls in this page.
                let page_end = page + PAGE_SIZE;
                let file_start = segment.vaddr;
                let file_end = segment.vaddr + segment.file_bytes.len() as u64;
                let from = page.max(file_start);
                let to = page_end.min(file_end);
                if from < to {
                    let bytes = &segment.file_bytes
                        [(from - file_start) as usize..(to - file_start) as usize];
                    charge
                        .platform
                        .write_phys(PhysAddr::new(frame.start().as_u64() + (from - page)), bytes);
                }
                map_page(
                    charge,
                    &mut table,
                    page,
                    frame,
                    user(segment.writable, segment.executable),
                )?;
                page = page_end;
            }
        }
        let mut buffers = Vec::new();
        for thread in 0..threads.min(layout::MAX_THREADS) as u64 {
            // Stack (the page below it stays unmapped as a guard).
            for i in 1..=STACK_PAGES {
                let frame = charge.frame()?;
                map_page(
                    charge,
                    &mut table,
                    layout::thread_stack_top(thread) - i * PAGE_SIZE,
                    frame,
                    user(true, false),
                )?;
            }
            let buffer =
                Self::map_ipc_buffer(charge, &mut table, layout::thread_ipc_buffer(thread))?;
            let _ = buffers.push(buffer);
        }
        Ok((table, buffers))
    }

    /// Maps an IPC buffer at `virt`: two contiguous frames (the kernel copies messages
    /// through the direct map, across the page boundary). Returns the first.
    fn map_ipc_buffer<P: Platform>(
        charge: &mut Charge<'_, P>,
        table: &mut PageTable,
        virt: u64,
    ) -> Result<PhysFrame, WorldError> {
        if charge.used + 2 > charge.budget {
            return Err(WorldError::OverBudget {
                budget_kib: charge.budget * 4,
                needed_kib: (charge.used + 2) * 4,
            });
        }
        let ipc_buffer = charge
            .platform
            .allocate_contiguous(2)
            .ok_or(WorldError::OutOfMemory)?;
        charge.used += 2;
        let second = PhysFrame::from_number(ipc_buffer.number() + 1);
        if let Err(e) = charge.map(table, virt, ipc_buffer, user(true, false)) {
            charge.platform.free_frame(second);
            return Err(e);
        }
        charge.map(table, virt + PAGE_SIZE, second, user(true, false))?;
        Ok(ipc_buffer)
    }

    /// Stops a world for good — all its threads, whichever of them `id` is: they leave
    /// every queue, their callers get `PeerStopped`, the world's capabilities are deleted
    /// (copies it handed out survive) and its frames are freed. A thread running on
    /// another CPU is made to leave it; the address space is freed once none runs it
    /// (see [`Self::reap`]).
    pub(super) fn stop_world(&mut self, platform: &mut impl Platform, id: WorldId) {
        let leader = self.space(id);
        if self
            .world(leader)
            .is_none_or(|w| w.state == WorldState::Stopped)
        {
            return;
        }
        let mut elsewhere = false;
        for thread in self.threads_of(leader) {
            elsewhere |= self.stop_thread(thread);
        }
        self.caps.clear_world(leader);
        self.fail_orphaned_endpoints(leader);
        if elsewhere {
            self.zombies |= 1 << leader;
        } else {
            self.free_address_space(platform, leader);
        }
    }

    /// Stops one thread: it leaves the scheduler and every queue, and whoever waits for
    /// its reply learns that it stopped. Returns whether it is running on another CPU
    /// (which is asked to re-decide).
    fn stop_thread(&mut self, id: WorldId) -> bool {
        let Some(world) = self.world_mut(id) else {
            return false;
        };
        world.state = WorldState::Stopped;
        world.guest = None;
        if self.current == Some(id) {
            self.current = None;
        }
        let _ = self.sched.remove(id, self.now);
        for object in self.objects.iter_mut().flatten() {
            if let Object::Endpoint(endpoint) = &mut object.object {
                endpoint.forget(id);
            }
            if let Object::Notification(notification) = &mut object.object
                && notification.waiter == Some(id)
            {
                notification.waiter = None;
            }
        }
        // Whoever waits for this thread's reply learns that it stopped.
        let waiting: Vec<WorldId, { super::WORLD_SLOTS }> = self
            .worlds
            .iter()
            .enumerate()
            .filter_map(|(i, w)| match w {
                Some(w) if w.state == (WorldState::AwaitingReply { server: id }) => {
                    Some(i as WorldId)
                }
                _ => None,
            })
            .collect();
        for caller in waiting {
            if let Some(world) = self.world_mut(caller) {
                world
                    .registers
                    .set_result(Err(esker_abi::Error::PeerStopped));
            }
            self.make_ready(caller);
        }
        match self.running_elsewhere(id) {
            Some(cpu) => {
                self.outgoing_kicks |= 1 << cpu;
                true
            }
            None => false,
        }
    }

    /// Frees a stopped world's address space: shared regions are unmapped first (their
    /// frames belong to Memory objects), then every frame reachable from its table.
    fn free_address_space(&mut self, platform: &mut impl Platform, leader: WorldId) {
        let Some(world) = self.world_mut(leader) else {
            return;
        };
        let mappings = core::mem::take(&mut world.mappings);
        let root = world.table.root();
        world.frames = 0;
        let mut table: PageTable = PageTable::from_root(root);
        {
            let mem = platform.memory();
            for mapping in &mappings {
                for page in 0..mapping.pages {
                    let _ = table.unmap(mem, VirtAddr::new(mapping.virt + page * PAGE_SIZE));
                }
            }
        }
        free_user_half(platform, root);
    }

    /// Frees the address spaces of stopped worlds that no CPU runs any more. The kernel
    /// calls it (while [`Self::has_zombies`]) after this CPU loaded its next address space.
    pub fn reap(&mut self, platform: &mut impl Platform) {
        // The common case, on every world switch: nothing to free.
        if self.zombies == 0 {
            return;
        }
        for leader in 0..super::MAX_WORLDS as WorldId {
            if self.zombies & (1 << leader) == 0 {
                continue;
            }
            let busy = self.threads_of(leader).into_iter().any(|thread| {
                self.current == Some(thread) || self.running_elsewhere(thread).is_some()
            });
            if !busy {
                self.zombies &= !(1 << leader);
                self.free_address_space(platform, leader);
            }
        }
    }
}

impl System {
    /// After `stopped` stopped (its capabilities already deleted): every endpoint that no
    /// live world can receive on any more fails its queued senders with `PeerStopped`,
    /// and is marked so that later sends fail at once instead of waiting forever.
    fn fail_orphaned_endpoints(&mut self, stopped: WorldId) {
        for index in 0..self.objects.len() {
            let id = index as u32;
            if !matches!(
                self.object(id).map(|o| &o.object),
                Some(Object::Endpoint(_))
            ) {
                continue;
            }
            let served = (0..super::MAX_WORLDS as WorldId).any(|w| {
                w != stopped
                    && self
                        .world(w)
                        .is_some_and(|world| world.state != WorldState::Stopped)
                    && self.caps.caps_of(w).any(|(_, c)| {
                        c.object == id && c.rights.contains(esker_abi::Rights::RECEIVE)
                    })
            });
            if served {
                continue;
            }
            let Some(Object::Endpoint(endpoint)) = self.object_mut(id) else {
                continue;
            };
            endpoint.orphaned = true;
            let queued = core::mem::take(&mut endpoint.senders);
            for sender in queued {
                if let Some(world) = self.world_mut(sender)
                    && matches!(world.state, WorldState::Sending { .. })
                {
                    world
                        .registers
                        .set_result(Err(esker_abi::Error::PeerStopped));
                    self.make_ready(sender);
                }
            }
        }
    }
}

/// Frees every frame reachable from the lower half of the table rooted at `root` (leaves
/// and tables), then the root itself. Tables are read entry by entry and freed after their
/// entries, so no list is needed (freeing does not change a frame's contents).
fn free_user_half(platform: &mut impl Platform, root: PhysFrame) {
    let table_at = |entry: u64| PhysFrame::containing(PhysAddr::new(X86::address(entry)));
    for i4 in 0..256 {
        let e4 = platform.memory().read_entry(root, i4);
        if !X86::is_present(e4) {
            continue;
        }
        let pdpt = table_at(e4);
        for i3 in 0..512 {
            let e3 = platform.memory().read_entry(pdpt, i3);
            if !X86::is_present(e3) || X86::is_huge(e3) {
                continue;
            }
            let pd = table_at(e3);
            for i2 in 0..512 {
                let e2 = platform.memory().read_entry(pd, i2);
                if !X86::is_present(e2) || X86::is_huge(e2) {
                    continue;
                }
                let pt = table_at(e2);
                for i1 in 0..512 {
                    let e1 = platform.memory().read_entry(pt, i1);
                    if X86::is_present(e1) {
                        platform.free_frame(table_at(e1));
                    }
                }
                platform.free_frame(pt);
            }
            platform.free_frame(pd);
        }
        platform.free_frame(pdpt);
    }
    platform.free_frame(root);
}
