//! Virtual machines: the `Vm` object (a guest-physical address space — a nested page
//! table — and an ASID) and the `Vcpu` object (a VMCB and the guest's general registers),
//! the system calls a monitor uses on them, and what happens on a VM exit.
//!
//! A vCPU runs *as* the world that runs it: `vcpu_run` marks the world as in guest mode
//! and the hardware layer, when the scheduler picks that world, enters the guest instead
//! of returning to user mode. The scheduler sees no difference: a guest is charged,
//! preempted by the timer (SVM's INTR intercept) and cannot hold the CPU. Exits the kernel
//! does not handle itself (everything but host interrupts) complete the `vcpu_run` call
//! with the exit as a postcard message in the world's IPC buffer; the next `vcpu_run`
//! carries the monitor's reply.

use esker_abi::{
    Error, MAX_MESSAGE_BYTES, ObjectKind, Rights, VCPU_EXIT, VCPU_HALTED, VCPU_TIMEOUT,
};
use heapless::Vec;

use super::{Object, Platform, System, WorldState, kernel_line};
use crate::addr::{PAGE_SIZE, PhysAddr, PhysFrame, VirtAddr};
use crate::cap::{ObjectId, WorldId};
use crate::paging::{Access, CachePolicy, FrameSource, MapError, Npt, PageSize, PageTable};
use crate::virt::svm::{self, IoPermissionMap, MsrPermissionMap, SvmExitCode, TlbControl};
use crate::virt::vcpu::{self, ExitReply, GuestRegisters};

/// Largest exit message or reply (postcard; the registers are a fixed 344-byte string, so
/// either is under 450 bytes).
const WIRE_BUFFER: usize = 512;

/// Guest-physical addresses a VM may use: below 512 GiB.
pub const GUEST_PHYSICAL_LIMIT: u64 = 1 << 39;
/// Most Memory regions mapped into one VM at once.
pub const MAX_VM_MAPPINGS: usize = 8;
/// Largest region one `vm_map` maps (bounds the page-table frames it may need).
pub const MAX_VM_MAP_BYTES: u64 = 4 << 30;

/// MSRs whose guest values live in the VMCB (VMRUN/VMLOAD switch them), so the guest may
/// read and write them without an exit.
const PASSTHROUGH_MSRS: [u32; 10] = [
    0xc000_0100, // FS.base
    0xc000_0101, // GS.base
    0xc000_0102, // KernelGSbase
    0xc000_0081, // STAR
    0xc000_0082, // LSTAR
    0xc000_0083, // CSTAR
    0xc000_0084, // SFMASK
    0x174,       // SYSENTER_CS
    0x175,       // SYSENTER_ESP
    0x176,       // SYSENTER_EIP
];

/// A region mapped into a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmMapping {
    /// The world that mapped it and the slot of its Memory capability: if that capability
    /// goes (deleted, revoked), the mapping goes too.
    pub holder: WorldId,
    /// The slot.
    pub slot: esker_abi::CapSlot,
    /// The Memory object.
    pub object: ObjectId,
    /// Guest-physical start.
    pub gpa: u64,
    /// Bytes.
    pub size: u64,
}

/// A virtual machine's address space.
#[derive(Debug)]
pub struct Vm {
    /// Root of its nested page table.
    pub npt: PageTable<Npt>,
    /// Its address-space identifier (1 and up).
    pub asid: u32,
    /// Regions mapped.
    pub mappings: Vec<VmMapping, MAX_VM_MAPPINGS>,
    /// CPUs (bit per CPU index) that may hold guest translations from before a mapping
    /// was removed: a vCPU entering on one of them flushes the ASID there first. All set
    /// at creation and on every unmap (each vCPU of the VM, on whatever CPU it enters
    /// next, flushes once).
    pub stale_cpus: u64,
}

/// A virtual CPU.
#[derive(Debug)]
pub struct Vcpu {
    /// The VM it belongs to.
    pub vm: ObjectId,
    /// Its VMCB.
    pub vmcb: PhysFrame,
    /// Its register page: the general registers VMRUN does not keep in the VMCB (the
    /// first 128 bytes, [`vcpu::GeneralRegisters`]) and its FXSAVE area (at 512).
    pub state: PhysFrame,
    /// The world that runs it (the first to call `vcpu_run`).
    pub owner: Option<WorldId>,
    /// Exits taken.
    pub exits: u64,
    /// The monitor holds an exit message it has not answered yet (its next reply
    /// answers that exit; otherwise it answers a timeout).
    pub outstanding: bool,
    /// `vcpu_kick` came while no `vcpu_run` was in progress: the next one returns
    /// [`VCPU_TIMEOUT`] at once (after applying its reply).
    pub kicked: bool,
}

/// Offset of the FXSAVE area in a vCPU's register page.
pub const VCPU_FXSAVE_OFFSET: u64 = 512;

/// What the hardware layer needs to enter a guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestEntry {
    /// The vCPU object.
    pub vcpu: ObjectId,
    /// Physical address of its VMCB (VMRUN's operand).
    pub vmcb: PhysFrame,
    /// Its register page (general registers at 0, FXSAVE area at
    /// [`VCPU_FXSAVE_OFFSET`]).
    pub state: PhysFrame,
}

/// A world running a vCPU (its `vcpu_run` call is in progress).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestMode {
    /// The vCPU.
    pub vcpu: ObjectId,
    /// When the call returns with [`VCPU_TIMEOUT`] (ns since boot), if it has a timeout.
    pub until: Option<u64>,
}

/// Bytes `vm_map` maps per step (bounds the table frames one step can need).
const MAP_CHUNK_BYTES: u64 = 8 << 20;

/// Removes every nested mapping in `gpa..gpa+size` (pages of any size).
fn unmap_guest_range(platform: &mut impl Platform, root: PhysFrame, gpa: u64, size: u64) {
    let mut table = PageTable::<Npt>::from_root(root);
    let mut at = gpa;
    while at < gpa + size {
        match table.unmap(platform.memory(), VirtAddr::new(at)) {
            Ok((_, page)) => at += page.bytes(),
            Err(_) => at += PAGE_SIZE,
        }
    }
}

/// Maps one chunk of guest-physical memory, with table frames allocated beforehand and the
/// unused ones given back.
fn map_chunk(
    platform: &mut impl Platform,
    root: PhysFrame,
    gpa: u64,
    phys: u64,
    len: u64,
    access: Access,
) -> Result<(), MapError> {
    let mut table = PageTable::<Npt>::from_root(root);
    let mut supply = TableFrames::default();
    while !supply.0.is_full() {
        let Some(frame) = platform.allocate_frame() else {
            break;
        };
        let _ = supply.0.push(frame);
    }
    let result = table.map_range(
        platform.memory(),
        &mut supply,
        VirtAddr::new(gpa),
        PhysAddr::new(phys),
        len,
        access,
        PageSize::Size2M,
    );
    for frame in supply.0 {
        platform.free_frame(frame);
    }
    result.map(|_| ())
}

/// Frames handed to the nested page-table builder, allocated beforehand.
#[derive(Default)]
struct TableFrames(Vec<PhysFrame, 12>);

impl FrameSource for TableFrames {
    fn allocate_table_frame(&mut self) -> Option<PhysFrame> {
        self.0.pop()
    }
}

impl System {
    /// Creates a VM object: an empty nested page table and the next ASID.
    pub(super) fn create_vm(&mut self, platform: &mut impl Platform) -> Option<Object> {
        let root = platform.allocate_frame()?;
        self.next_asid += 1;
        Some(Object::Vm(Vm {
            npt: PageTable::from_root(root),
            asid: self.next_asid,
            mappings: Vec::new(),
            stale_cpus: u64::MAX,
        }))
    }

    /// Creates a vCPU of `vm` (an object id): its VMCB with Esker's baseline controls and
    /// its register page. Guest state is set by the monitor's first reply.
    pub(super) fn create_vcpu(
        &mut self,
        platform: &mut impl Platform,
        vm: ObjectId,
    ) -> Option<Object> {
        let (iopm, msrpm) = self.permission_maps(platform)?;
        let Some(Object::Vm(machine)) = self.object(vm).map(|o| &o.object) else {
            return None;
        };
        let setup = svm::setup::ControlSetup {
            asid: machine.asid,
            nested_cr3: machine.npt.root().start().as_u64(),
            iopm_base_pa: iopm.start().as_u64(),
            msrpm_base_pa: msrpm.start().as_u64(),
            tsc_offset: 0,
        };
        let vmcb = platform.allocate_frame()?;
        let state = platform.allocate_frame()?;
        platform.with_vcpu(vmcb, state, |vmcb, gpr| {
            svm::setup::init(vmcb, gpr, &setup, &GuestRegisters::protected_mode_flat(0));
        });
        // A valid initial FXSAVE image: FCW = 0x37f, MXCSR = 0x1f80 (the reset values).
        let base = state.start().as_u64() + VCPU_FXSAVE_OFFSET;
        platform.write_phys(PhysAddr::new(base), &0x037f_u16.to_le_bytes());
        platform.write_phys(PhysAddr::new(base + 24), &0x1f80_u32.to_le_bytes());
        Some(Object::Vcpu(Vcpu {
            vm,
            vmcb,
            state,
            owner: None,
            exits: 0,
            outstanding: false,
            kicked: false,
        }))
    }

    /// The I/O and MSR permission maps every guest shares, made on first use: every port
    /// exits (the monitor owns all devices); MSRs exit except those the VMCB switches.
    fn permission_maps(&mut self, platform: &mut impl Platform) -> Option<(PhysFrame, PhysFrame)> {
        if let Some(maps) = self.svm_maps {
            return Some(maps);
        }
        let iopm = platform.allocate_contiguous(3)?;
        let msrpm = platform.allocate_contiguous(2)?;
        let ports = [0xffu8; IoPermissionMap::SIZE];
        platform.write_phys(iopm.start(), &ports);
        let mut msrs = MsrPermissionMap::INTERCEPT_ALL;
        for msr in PASSTHROUGH_MSRS {
            let _ = msrs.allow_read_write(msr);
        }
        platform.write_phys(msrpm.start(), msrs.as_bytes());
        self.svm_maps = Some((iopm, msrpm));
        Some((iopm, msrpm))
    }

    fn vm_mut(&mut self, id: ObjectId) -> Option<&mut Vm> {
        match self.object_mut(id)? {
            Object::Vm(vm) => Some(vm),
            _ => None,
        }
    }

    /// `vm_map(vm, memory, gpa, rights) -> size`.
    pub(super) fn sys_vm_map(
        &mut self,
        platform: &mut impl Platform,
        id: WorldId,
        a: [u64; 6],
    ) -> Result<Option<[u64; 6]>, Error> {
        let (vm_id, _) = self.capability_for(id, a[0], ObjectKind::Vm, Rights::MAP)?;
        let slot = super::syscall::slot(a[1])?;
        // The mapping lasts as long as the capability in the world's (shared) table.
        let id = self.space(id);
        let cap = self.caps.lookup(id, slot).map_err(Error::from)?;
        let Some(Object::Memory { base, frames }) = self.object(cap.object).map(|o| &o.object)
        else {
            return Err(if cap.kind == ObjectKind::Memory {
                Error::InvalidCapability
            } else {
                Error::WrongObjectKind
            });
        };
        let (base, size) = (*base, *frames * PAGE_SIZE);
        let wanted = Rights::from_bits_truncate(a[3] as u32)
            .intersection(Rights::WRITE | Rights::EXECUTE)
            .union(Rights::READ | Rights::MAP);
        if !cap.rights.contains(wanted) {
            return Err(Error::InsufficientRights);
        }
        let gpa = a[2];
        if !gpa.is_multiple_of(PAGE_SIZE)
            || size > MAX_VM_MAP_BYTES
            || gpa
                .checked_add(size)
                .is_none_or(|end| end > GUEST_PHYSICAL_LIMIT)
        {
            return Err(Error::BadAddress);
        }
        let Some(Object::Vm(vm)) = self.object(vm_id).map(|o| &o.object) else {
            return Err(Error::InvalidCapability);
        };
        if vm.mappings.is_full() {
            return Err(Error::OutOfMemory);
        }
        if vm
            .mappings
            .iter()
            .any(|m| gpa < m.gpa + m.size && m.gpa < gpa + size)
        {
            return Err(Error::AlreadyMapped);
        }
        let root = vm.npt.root();
        let access = Access {
            write: wanted.contains(Rights::WRITE),
            execute: wanted.contains(Rights::EXECUTE),
            user: true,
            global: false,
            cache: CachePolicy::WriteBack,
        };
        // In chunks, each with its table frames allocated beforehand (a chunk needs at
        // most a PDPT, a PD and one page table per 2 MiB it covers).
        let mut done = 0;
        while done < size {
            let chunk = (size - done).min(MAP_CHUNK_BYTES);
            if let Err(error) = map_chunk(
                platform,
                root,
                gpa + done,
                base.start().as_u64() + done,
                chunk,
                access,
            ) {
                unmap_guest_range(platform, root, gpa, done);
                return Err(match error {
                    MapError::OutOfFrames => Error::OutOfMemory,
                    MapError::AlreadyMapped { .. } | MapError::HugePageInTheWay { .. } => {
                        Error::AlreadyMapped
                    }
                    _ => Error::InvalidArgument,
                });
            }
            done += chunk;
        }
        if let Some(vm) = self.vm_mut(vm_id) {
            let _ = vm.mappings.push(VmMapping {
                holder: id,
                slot,
                object: cap.object,
                gpa,
                size,
            });
        }
        Ok(Some([size, 0, 0, 0, 0, 0]))
    }

    /// `vm_unmap(vm, gpa, size)`: removes every mapping that lies inside the range.
    pub(super) fn sys_vm_unmap(
        &mut self,
        platform: &mut impl Platform,
        id: WorldId,
        a: [u64; 6],
    ) -> Result<Option<[u64; 6]>, Error> {
        let (vm_id, _) = self.capability_for(id, a[0], ObjectKind::Vm, Rights::MAP)?;
        let (gpa, size) = (a[1], a[2]);
        let end = gpa.checked_add(size).ok_or(Error::BadAddress)?;
        let mut removed = 0u64;
        while let Some(index) = self.vm_mut(vm_id).and_then(|vm| {
            vm.mappings
                .iter()
                .position(|m| m.gpa >= gpa && m.gpa + m.size <= end)
        }) {
            removed += self.remove_vm_mapping(platform, vm_id, index);
        }
        Ok(Some([removed, 0, 0, 0, 0, 0]))
    }

    /// Removes mapping `index` of VM `vm_id` from its nested page table; returns its size.
    fn remove_vm_mapping(
        &mut self,
        platform: &mut impl Platform,
        vm_id: ObjectId,
        index: usize,
    ) -> u64 {
        let Some(vm) = self.vm_mut(vm_id) else {
            return 0;
        };
        let mapping = vm.mappings.swap_remove(index);
        vm.stale_cpus = u64::MAX;
        let root = vm.npt.root();
        unmap_guest_range(platform, root, mapping.gpa, mapping.size);
        // A vCPU of this VM running on another CPU leaves the guest before this returns;
        // it flushes at its next entry.
        platform.flush_other_cpus(None);
        mapping.size
    }

    /// Removes VM mappings whose Memory capability is gone (called after a delete or
    /// revoke): the guest loses the memory at once.
    pub(super) fn unmap_stale_vm_memory(&mut self, platform: &mut impl Platform) {
        for vm_id in 0..super::MAX_OBJECTS as ObjectId {
            loop {
                let stale = match self.object(vm_id).map(|o| &o.object) {
                    Some(Object::Vm(vm)) => vm.mappings.iter().position(|m| {
                        self.caps
                            .lookup(m.holder, m.slot)
                            .map_or(true, |c| c.object != m.object)
                    }),
                    _ => None,
                };
                let Some(index) = stale else { break };
                self.remove_vm_mapping(platform, vm_id, index);
            }
        }
    }

    /// `vcpu_run(vcpu, reply_len, flags, timeout_ns)`.
    pub(super) fn sys_vcpu_run(
        &mut self,
        platform: &mut impl Platform,
        id: WorldId,
        a: [u64; 6],
    ) -> Result<Option<[u64; 6]>, Error> {
        let (vcpu_id, _) = self.capability_for(id, a[0], ObjectKind::Vcpu, Rights::WRITE)?;
        let Some(Object::Vcpu(vcpu)) = self.object(vcpu_id).map(|o| &o.object) else {
            return Err(Error::InvalidCapability);
        };
        if vcpu.owner.is_some_and(|owner| owner != id) {
            return Err(Error::InsufficientRights);
        }
        let (vmcb, state, outstanding) = (vcpu.vmcb, vcpu.state, vcpu.outstanding);
        let Some(host) = platform.svm_limits() else {
            return Err(Error::InvalidArgument);
        };
        if a[2] & VCPU_HALTED != 0 && a[3] == 0 {
            // Halted without a timeout would sleep forever.
            return Err(Error::InvalidArgument);
        }
        let reply_len = a[1];
        if reply_len > MAX_MESSAGE_BYTES as u64 {
            return Err(Error::MessageTooLong);
        }
        let data = self.world(id).ok_or(Error::InvalidArgument)?.ipc_data();
        if reply_len > 0 {
            let mut bytes = [0u8; WIRE_BUFFER];
            let Some(bytes) = bytes.get_mut(..reply_len as usize) else {
                return Err(Error::MessageTooLong);
            };
            platform.read_phys(data, bytes);
            let reply: ExitReply =
                postcard::from_bytes(bytes).map_err(|_| Error::InvalidArgument)?;
            // After a timeout (or before the first run) the monitor has not seen the
            // guest's state: an event the kernel is re-delivering (the guest was stopped
            // by a host interrupt while taking it) must survive the reply.
            let result = platform.with_vcpu(vmcb, state, |vmcb, gpr| {
                let kept = vmcb.control.event_injection;
                let redelivering = !outstanding && kept & (1 << 31) != 0;
                if redelivering && reply.inject.is_some() {
                    return Err(None);
                }
                let result = vcpu::svm::apply_reply(vmcb, gpr, &reply, &host);
                if redelivering {
                    vmcb.control.event_injection = kept;
                }
                result.map_err(Some)
            });
            if let Err(error) = result {
                let name = self
                    .object(vcpu_id)
                    .map(|o| o.name.clone())
                    .unwrap_or_default();
                match error {
                    Some(error) => kernel_line(
                        platform,
                        format_args!("vcpu {name}: reply refused: {error}"),
                    ),
                    None => kernel_line(
                        platform,
                        format_args!(
                            "vcpu {name}: reply refused: it injects an event while the guest is still being given another"
                        ),
                    ),
                }
                return Err(Error::InvalidArgument);
            }
        }
        let mut kicked = false;
        if let Some(Object::Vcpu(vcpu)) = self.object_mut(vcpu_id) {
            vcpu.owner = Some(id);
            vcpu.outstanding = false;
            kicked = core::mem::take(&mut vcpu.kicked);
        }
        if kicked {
            // A sibling made something pending for this vCPU since the monitor last
            // looked: it looks again before the guest runs.
            return Ok(Some([0, VCPU_TIMEOUT, 0, 0, 0, 0]));
        }
        let until = (a[3] > 0).then(|| self.now.saturating_add(a[3]));
        if a[2] & VCPU_HALTED != 0 {
            let Some(until) = until else {
                return Err(Error::InvalidArgument);
            };
            self.block(id, WorldState::Sleeping { until });
            self.wake_at(until);
            return Ok(None);
        }
        if let Some(world) = self.world_mut(id) {
            world.guest = Some(GuestMode {
                vcpu: vcpu_id,
                until,
            });
        }
        if let Some(until) = until {
            self.wake_at(until);
        }
        Ok(None)
    }

    /// `vcpu_kick(vcpu)`: the vCPU's `vcpu_run` returns [`VCPU_TIMEOUT`] as soon as it
    /// can — a sleeping (halted) monitor wakes, a guest running on another CPU is made to
    /// exit, a guest waiting for a CPU leaves guest mode; with no `vcpu_run` in progress
    /// the next one returns at once.
    pub(super) fn sys_vcpu_kick(
        &mut self,
        id: WorldId,
        a: [u64; 6],
    ) -> Result<Option<[u64; 6]>, Error> {
        let (vcpu_id, _) = self.capability_for(id, a[0], ObjectKind::Vcpu, Rights::WRITE)?;
        let Some(Object::Vcpu(vcpu)) = self.object(vcpu_id).map(|o| &o.object) else {
            return Err(Error::InvalidCapability);
        };
        let owner = vcpu.owner;
        let state = owner
            .and_then(|o| self.world(o))
            .map(|w| (w.state, w.guest));
        match (owner, state) {
            (Some(owner), Some((WorldState::Sleeping { .. }, _))) => self.wake_halted(owner),
            (Some(owner), Some((_, Some(mode)))) if mode.vcpu == vcpu_id => {
                self.end_guest_run_soon(owner);
            }
            _ => {
                if let Some(Object::Vcpu(vcpu)) = self.object_mut(vcpu_id) {
                    vcpu.kicked = true;
                }
            }
        }
        Ok(Some([0; 6]))
    }

    /// Makes sure the next dispatch looks at sleepers and guest timeouts by `at`.
    fn wake_at(&mut self, at: u64) {
        self.next_wake = Some(self.next_wake.map_or(at, |w| w.min(at)));
        self.rearm = true;
    }

    /// Wakes sleepers whose time has come; returns the earliest remaining wake-up.
    pub(super) fn wake_sleepers(&mut self) -> Option<u64> {
        let now = self.now;
        let mut earliest: Option<u64> = None;
        for id in 0..super::WORLD_SLOTS as WorldId {
            let Some(world) = self.world_mut(id) else {
                continue;
            };
            match world.state {
                WorldState::Sleeping { until } if until <= now => self.wake_halted(id),
                WorldState::Sleeping { until } => {
                    earliest = Some(earliest.map_or(until, |e: u64| e.min(until)));
                }
                _ => {}
            }
            if let Some(GuestMode {
                until: Some(until), ..
            }) = self.world(id).and_then(|w| w.guest)
            {
                if until <= now {
                    self.end_guest_run_soon(id);
                } else {
                    earliest = Some(earliest.map_or(until, |e| e.min(until)));
                }
            }
        }
        earliest
    }

    /// A monitor sleeping in a halted `vcpu_run` wakes: the call returns
    /// [`VCPU_TIMEOUT`].
    fn wake_halted(&mut self, id: WorldId) {
        if let Some(world) = self.world_mut(id) {
            world
                .registers
                .set_result(Ok([0, VCPU_TIMEOUT, 0, 0, 0, 0]));
        }
        self.make_ready(id);
    }

    /// The guest run of world `id` must end now (its timeout passed, or it was kicked):
    /// if its guest may be in VMRUN on another CPU, only that CPU may end the run — its
    /// timeout becomes now and it is made to look; otherwise the run ends here.
    fn end_guest_run_soon(&mut self, id: WorldId) {
        match self.running_elsewhere(id) {
            Some(cpu) => {
                if let Some(guest) = self.world_mut(id).and_then(|w| w.guest.as_mut()) {
                    guest.until = Some(0);
                }
                self.outgoing_kicks |= 1 << cpu;
            }
            None => self.end_guest_run(id),
        }
    }

    /// World `id` leaves guest mode because its monitor's timeout passed: its `vcpu_run`
    /// returns [`VCPU_TIMEOUT`] when it next runs.
    fn end_guest_run(&mut self, id: WorldId) {
        if let Some(world) = self.world_mut(id) {
            world.guest = None;
            world
                .registers
                .set_result(Ok([0, VCPU_TIMEOUT, 0, 0, 0, 0]));
        }
    }

    /// If the world the hardware is about to resume is in guest mode, what it needs to
    /// enter the guest; `None` to resume the world in user mode. A guest whose monitor's
    /// timeout has passed leaves guest mode here: its `vcpu_run` returns
    /// [`VCPU_TIMEOUT`].
    pub fn guest_entry(&mut self, platform: &mut impl Platform, id: WorldId) -> Option<GuestEntry> {
        let mode = self.world(id)?.guest?;
        if mode.until.is_some_and(|until| until <= platform.now_ns()) {
            self.end_guest_run(id);
            return None;
        }
        let bit = 1u64 << (self.cpu % 64);
        let Some(Object::Vcpu(vcpu)) = self.object(mode.vcpu).map(|o| &o.object) else {
            self.world_mut(id)?.guest = None;
            return None;
        };
        let (vmcb, state, vm) = (vcpu.vmcb, vcpu.state, vcpu.vm);
        // Guest memory went away since this CPU last flushed the VM's ASID (while the
        // guest was preempted, or ran elsewhere): no stale translation may survive into
        // this run.
        if self.vm_mut(vm).is_some_and(|vm| {
            let stale = vm.stale_cpus & bit != 0;
            vm.stale_cpus &= !bit;
            stale
        }) {
            platform.with_vcpu(vmcb, state, |vmcb, _| {
                vmcb.control.tlb_control = TlbControl::FlushAll as u8;
            });
        }
        Some(GuestEntry {
            vcpu: mode.vcpu,
            vmcb,
            state,
        })
    }

    /// The guest of world `id` exited (the VMCB and register page hold its state). A host
    /// interrupt or NMI is the hardware layer's to take (it lets the interrupt in and the
    /// world re-enters the guest when the scheduler resumes it); anything else completes
    /// the monitor's `vcpu_run` with the exit message.
    pub fn on_vmexit(&mut self, platform: &mut impl Platform, id: WorldId) -> VmExitAction {
        self.now = platform.now_ns();
        if self
            .world(id)
            .is_none_or(|w| w.state == WorldState::Stopped)
        {
            // Its world stopped (on another CPU) while the guest ran: this CPU was asked
            // to re-decide, and the interrupt that asked is pending.
            return VmExitAction::HostInterrupt;
        }
        let Some(mode) = self.world(id).and_then(|w| w.guest) else {
            return VmExitAction::Resume;
        };
        let Some(Object::Vcpu(vcpu)) = self.object(mode.vcpu).map(|o| &o.object) else {
            return VmExitAction::Resume;
        };
        let (vmcb, state) = (vcpu.vmcb, vcpu.state);
        let message = platform.with_vcpu(vmcb, state, |vmcb, gpr| {
            // The first run flushed the TLB; later runs need not (unless mappings go).
            vmcb.control.tlb_control = TlbControl::DoNothing as u8;
            let code = SvmExitCode::from_raw(vmcb.control.exit_code);
            match code {
                // Host events: the host takes them (an SMI in firmware, the rest through
                // the idle context) and the guest resumes untouched.
                SvmExitCode::Intr | SvmExitCode::Nmi | SvmExitCode::Smi | SvmExitCode::Init => {
                    vcpu::svm::resume_unchanged(vmcb);
                    None
                }
                _ => Some(vcpu::svm::exit_message(vmcb, gpr)),
            }
        });
        let Some(message) = message else {
            return VmExitAction::HostInterrupt;
        };
        if let Some(Object::Vcpu(vcpu)) = self.object_mut(mode.vcpu) {
            vcpu.exits += 1;
            vcpu.outstanding = true;
        }
        let mut bytes = [0u8; WIRE_BUFFER];
        let length = match postcard::to_slice(&message, &mut bytes) {
            Ok(used) => used.len(),
            Err(_) => 0,
        };
        let Some(world) = self.world_mut(id) else {
            return VmExitAction::Resume;
        };
        world.guest = None;
        world
            .registers
            .set_result(Ok([length as u64, VCPU_EXIT, 0, 0, 0, 0]));
        let data = world.ipc_data();
        platform.write_phys(data, &bytes[..length]);
        VmExitAction::Resume
    }
}

/// What the hardware layer does after [`System::on_vmexit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmExitAction {
    /// A host interrupt or NMI is pending: take it (the world stays in guest mode).
    HostInterrupt,
    /// Resume the world as [`System::guest_entry`] says (the guest again, or the monitor
    /// with its exit).
    Resume,
}
