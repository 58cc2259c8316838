//! Creating worlds from the manifest, and stopping them.
//!
//! A world's address space is a fresh page table sharing the kernel's upper half, with its
//! program's segments (W^X, user), a stack below `layout::STACK_TOP` with an unmapped guard
//! page, and the two-page IPC buffer at `layout::IPC_BUFFER`. Every frame is charged to the
//! world's memory budget; a world that does not fit is refused whole, and whatever was
//! allocated for it is given back. Stopping a world frees everything it owns.

use core::fmt;

use esker_abi::{IPC_DATA_OFFSET, layout, start_info};
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
            .configure(self.cpu_count, mhz, crate::sched::Topology::Flat)
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

    /// Creates one world with id `id` and installs its capabilities.
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
        let image = ElfImage::parse(elf).map_err(WorldError::Elf)?;
        image
            .check_user_layout(
                layout::PROGRAM_BASE,
                layout::STACK_TOP - STACK_PAGES * PAGE_SIZE - PAGE_SIZE,
            )
            .map_err(WorldError::Elf)?;
        let mut name: String<32> = String::new();
        name.push_str(spec.name)
            .map_err(|_| WorldError::Limit("world name longer than 32 bytes"))?;

        self.sched
            .add(id, crate::sched::Params::from(spec.sched), self.now)
            .map_err(WorldError::Admission)?;
        let result = self.create_admitted_world(platform, id, spec, &image, name, object_ids);
        if result.is_err() {
            let _ = self.sched.remove(id, self.now);
        }
        result
    }

    /// The rest of [`create_world`](Self::create_world), once the scheduler admitted it.
    fn create_admitted_world(
        &mut self,
        platform: &mut impl Platform,
        id: WorldId,
        spec: &WorldSpec<'_>,
        image: &ElfImage<'_>,
        name: String<32>,
        object_ids: &[u32],
    ) -> Result<(), WorldError> {
        let budget = u64::from(spec.memory_kib) / 4;
        let mut charge = Charge {
            platform,
            budget,
            used: 0,
        };
        let root = charge.frame()?;
        let built = Self::build_address_space(&mut charge, root, image);
        let frames = charge.used;
        let platform = charge.platform;
        let (table, ipc_buffer) = match built {
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

        // Start info into the IPC buffer's data.
        let mut record = [0u8; 1024];
        let length = start_info::encode(
            spec.name,
            spec.caps.iter().map(|c| (c.slot, c.name)),
            &mut record,
        )
        .map_err(|_| WorldError::Limit("start-info record longer than 1 KiB"))?;
        platform.write_phys(
            PhysAddr::new(ipc_buffer.start().as_u64() + IPC_DATA_OFFSET as u64),
            &record[..length],
        );

        let registers = Registers {
            rip: image.entry(),
            rsp: layout::STACK_TOP,
            rdi: length as u64,
            cs: super::USER_CODE_SELECTOR,
            ss: super::USER_DATA_SELECTOR,
            rflags: super::USER_RFLAGS,
            ..Registers::default()
        };
        let source = (id + 1) as SourceId;
        platform.log_packet(Kind::Announce, source, spec.name.as_bytes());
        self.worlds[usize::from(id)] = Some(World {
            name,
            source,
            state: WorldState::Ready,
            registers,
            table,
            ipc_buffer,
            reply_to: None,
            mappings: Vec::new(),
            log_budget: super::LogBudget::full(self.now),
            frames,
            guest: None,
        });
        self.make_ready(id);
        Ok(())
    }

    fn build_address_space<P: Platform>(
        charge: &mut Charge<'_, P>,
        root: PhysFrame,
        image: &ElfImage<'_>,
    ) -> Result<(PageTable, PhysFrame), WorldError> {
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
        // Stack (the page below it stays unmapped as a guard).
        for i in 1..=STACK_PAGES {
            let frame = charge.frame()?;
            map_page(
                charge,
                &mut table,
                layout::STACK_TOP - i * PAGE_SIZE,
                frame,
                user(true, false),
            )?;
        }
        // IPC buffer: two contiguous frames (the kernel copies messages through the direct
        // map, across the page boundary).
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
        if let Err(e) = charge.map(
            &mut table,
            layout::IPC_BUFFER,
            ipc_buffer,
            user(true, false),
        ) {
            charge.platform.free_frame(second);
            return Err(e);
        }
        charge.map(
            &mut table,
            layout::IPC_BUFFER + PAGE_SIZE,
            second,
            user(true, false),
        )?;
        Ok((table, ipc_buffer))
    }

    /// Stops a world for good: it leaves every queue, its callers get `PeerStopped`, its
    /// capabilities are deleted (copies it handed out survive) and its frames are freed.
    pub(super) fn stop_world(&mut self, platform: &mut impl Platform, id: WorldId) {
        let Some(world) = self.world_mut(id) else {
            return;
        };
        world.state = WorldState::Stopped;
        let mappings = core::mem::take(&mut world.mappings);
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
        // Whoever waits for this world's reply learns that it stopped.
        let waiting: Vec<WorldId, { super::MAX_WORLDS }> = self
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
        self.caps.clear_world(id);
        self.fail_orphaned_endpoints(id);
        let Some(world) = self.world_mut(id) else {
            return;
        };
        let root = world.table.root();
        world.frames = 0;
        // Unmap shared regions first: their frames belong to Memory objects, not the world.
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
