//! Physical memory (identity-mapped below 4 GiB by the boot stub) and the Multiboot
//! information, copied out before any check writes over RAM.

use esker_testguest::{
    BootInfo, INFO_LEN, MEMORY_AVAILABLE, Region, exit, mmap_entries, parse_info,
};

/// The boot stub maps [0, 4 GiB): nothing above is reachable.
pub const MAPPED_LIMIT: u64 = 1 << 32;

/// Writes the 8-byte word at physical `addr`.
///
/// # Safety
///
/// `addr` must be 8-byte aligned, in [4 KiB, [`MAPPED_LIMIT`]), and the word must belong to
/// no Rust object (it is outside the guest's image) and to nothing whose change would
/// break the guest (free RAM, as the memory map and the image bounds tell).
pub unsafe fn write_u64(addr: u64, value: u64) {
    // SAFETY: identity-mapped, aligned, non-null and unowned: the caller's promise.
    unsafe { (addr as *mut u64).write_volatile(value) }
}

/// Reads the 8-byte word at physical `addr`.
///
/// # Safety
///
/// `addr` must be 8-byte aligned, in [4 KiB, [`MAPPED_LIMIT`]), and not inside a Rust
/// object that is being mutated (anything outside the guest's image qualifies).
pub unsafe fn read_u64(addr: u64) -> u64 {
    // SAFETY: identity-mapped, aligned, non-null: the caller's promise.
    unsafe { (addr as *const u64).read_volatile() }
}

/// A 32-bit MMIO read at physical `addr`.
///
/// # Safety
///
/// `addr` must be 4-byte aligned, in [4 KiB, [`MAPPED_LIMIT`]), and a device register
/// whose read has no side effect on the guest's memory (or RAM outside the image).
pub unsafe fn read_u32(addr: u64) -> u32 {
    let value: u32;
    // SAFETY: identity-mapped, aligned, non-null: the caller's promise. One `mov`, as
    // Linux's `readl` does: a volatile read may be folded into `test`/`cmp` with memory,
    // which the monitor's MMIO emulation does not do.
    unsafe {
        core::arch::asm!(
            "mov {value:e}, dword ptr [{addr}]",
            addr = in(reg) addr,
            value = out(reg) value,
            options(nostack, readonly, preserves_flags)
        );
    }
    value
}

/// Copies `buf.len()` bytes from physical `addr`.
///
/// # Safety
///
/// `addr..addr + buf.len()` must lie in [4 KiB, [`MAPPED_LIMIT`]) and outside every Rust
/// object (in particular outside the guest's image).
pub unsafe fn copy_from(addr: u64, buf: &mut [u8]) {
    for (i, byte) in buf.iter_mut().enumerate() {
        // SAFETY: within the range the caller vouches for.
        *byte = unsafe { (addr as *const u8).add(i).read_volatile() };
    }
}

/// Copies `bytes` to physical `addr`.
///
/// # Safety
///
/// As for [`write_u64`], for every byte of `addr..addr + bytes.len()`.
pub unsafe fn copy_to(addr: u64, bytes: &[u8]) {
    for (i, byte) in bytes.iter().enumerate() {
        // SAFETY: within the range the caller vouches for.
        unsafe { (addr as *mut u8).add(i).write_volatile(*byte) };
    }
}

/// Longest command line kept.
const CMDLINE_MAX: usize = 256;
/// Most memory-map entries kept.
pub const MAX_REGIONS: usize = 32;
/// Longest memory map read, in bytes.
const MMAP_MAX: usize = 2048;

/// What the loader told the guest, copied into the guest's own memory.
pub struct Boot {
    /// The information structure's fields.
    pub info: BootInfo,
    cmdline: [u8; CMDLINE_MAX],
    cmdline_len: usize,
    regions: [Region; MAX_REGIONS],
    region_count: usize,
}

/// Whether the loader's `len` bytes at `addr` can be read: mapped, not page 0, outside
/// the image.
fn readable(addr: u64, len: u64, image: (u64, u64)) -> Result<(), &'static str> {
    let end = addr.checked_add(len).ok_or("wraps around")?;
    if addr < 0x1000 {
        Err("is in page 0")
    } else if end > MAPPED_LIMIT {
        Err("is above 4 GiB")
    } else if addr < image.1 && end > image.0 {
        Err("overlaps the guest's image")
    } else {
        Ok(())
    }
}

impl Boot {
    /// Copies the information at `info_addr` (and the command line and memory map it
    /// points to), ending the VM with exit code 1 if any of it is out of reach.
    pub fn read(info_addr: u32, image: (u64, u64)) -> Boot {
        let fail = |what: &str, addr: u64, why: &str| -> ! {
            crate::fail!("boot", exit::BOOT, "{what} at {addr:#x} {why}")
        };
        let info_addr = u64::from(info_addr);
        if let Err(why) = readable(info_addr, INFO_LEN as u64, image) {
            fail("the Multiboot information", info_addr, why);
        }
        let mut raw = [0u8; INFO_LEN];
        // SAFETY: checked just above: mapped, not page 0, not in the image.
        unsafe { copy_from(info_addr, &mut raw) };
        let info = parse_info(&raw);
        let mut boot = Boot {
            info,
            cmdline: [0; CMDLINE_MAX],
            cmdline_len: 0,
            regions: [Region::default(); MAX_REGIONS],
            region_count: 0,
        };
        if let Some(addr) = info.cmdline {
            let addr = u64::from(addr);
            for i in 0..CMDLINE_MAX as u64 {
                if let Err(why) = readable(addr + i, 1, image) {
                    fail("the command line", addr, why);
                }
                let mut byte = [0u8];
                // SAFETY: checked just above, one byte at a time up to the NUL.
                unsafe { copy_from(addr + i, &mut byte) };
                if byte[0] == 0 {
                    break;
                }
                boot.cmdline[boot.cmdline_len] = byte[0];
                boot.cmdline_len += 1;
            }
        }
        if let Some((addr, len)) = info.mmap {
            let addr = u64::from(addr);
            let len = (len as usize).min(MMAP_MAX);
            if let Err(why) = readable(addr, len as u64, image) {
                fail("the memory map", addr, why);
            }
            let mut map = [0u8; MMAP_MAX];
            // SAFETY: checked just above.
            unsafe { copy_from(addr, &mut map[..len]) };
            for region in mmap_entries(&map[..len]) {
                if boot.region_count == MAX_REGIONS {
                    crate::say!("memory map: more than {MAX_REGIONS} entries, the rest ignored");
                    break;
                }
                boot.regions[boot.region_count] = region;
                boot.region_count += 1;
            }
        }
        boot
    }

    /// The command line (lossy: bytes that are not UTF-8 end it).
    pub fn cmdline(&self) -> &str {
        let bytes = &self.cmdline[..self.cmdline_len];
        let valid = match core::str::from_utf8(bytes) {
            Ok(line) => return line,
            Err(err) => err.valid_up_to(),
        };
        core::str::from_utf8(&bytes[..valid]).unwrap_or_default()
    }

    /// The memory-map entries.
    pub fn regions(&self) -> &[Region] {
        &self.regions[..self.region_count]
    }

    /// The usable RAM as half-open ranges: the available memory-map entries, or without a
    /// map the `mem_lower`/`mem_upper` ranges. Returns how many of `out` were filled.
    pub fn usable(&self, out: &mut [(u64, u64); MAX_REGIONS]) -> usize {
        let mut count = 0;
        if self.info.mmap.is_some() {
            for region in self.regions().iter().filter(|r| r.kind == MEMORY_AVAILABLE) {
                out[count] = (region.base, region.end());
                count += 1;
            }
        } else if let Some((lower, upper)) = self.info.memory_kib {
            out[0] = (0, u64::from(lower) * 1024);
            out[1] = (1 << 20, (1 << 20) + u64::from(upper) * 1024);
            count = 2;
        }
        count
    }
}
