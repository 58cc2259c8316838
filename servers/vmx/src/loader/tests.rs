//! Loader tests on synthetic images: a minimal bzImage, a Multiboot a.out-kludge image
//! and ELF32/ELF64 Multiboot images, checked byte for byte where they land, plus
//! hostile variants that must fail cleanly.

use super::*;
use crate::memory::GuestMemory;
use alloc::format;
use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;
use esker_kernel_core::virt::vcpu::{DescriptorTable, LINUX_BOOT_CS};
use proptest::prelude::*;

const MIB: u64 = 1 << 20;

fn set16(image: &mut [u8], offset: usize, value: u16) {
    image[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
}

fn set32(image: &mut [u8], offset: usize, value: u32) {
    image[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

fn set64(image: &mut [u8], offset: usize, value: u64) {
    image[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
}

fn ram(bytes: u64) -> Vec<u8> {
    vec![0u8; bytes as usize]
}

fn read_u16(memory: &[u8], gpa: u64) -> u16 {
    u16::from_le_bytes(memory[gpa as usize..gpa as usize + 2].try_into().unwrap())
}

fn read_u32(memory: &[u8], gpa: u64) -> u32 {
    memory.read_u32(gpa).unwrap()
}

fn read_u64(memory: &[u8], gpa: u64) -> u64 {
    memory.read_u64(gpa).unwrap()
}

// --- A fake bzImage ---

const SETUP_SECTS: u8 = 4;
const SETUP_BYTES: usize = (SETUP_SECTS as usize + 1) * 512;
const PAYLOAD_BYTES: usize = 0x3000;
const HEADER_END: usize = 0x26c;
const VERSION_STRING: &[u8] = b"6.1.0-test (esker@example.invalid) #1 SMP PREEMPT_DYNAMIC\0";

fn payload() -> Vec<u8> {
    (0..PAYLOAD_BYTES).map(|i| (i * 7 + 1) as u8).collect()
}

/// A bzImage with a protocol 2.15 header, 4 setup sectors and a 12 KiB "kernel".
fn bzimage() -> Vec<u8> {
    let mut image = vec![0u8; SETUP_BYTES];
    image[0x1f1] = SETUP_SECTS;
    set32(&mut image, 0x1f4, (PAYLOAD_BYTES / 16) as u32);
    set16(&mut image, 0x1fa, 0xffff); // vid_mode: normal
    set16(&mut image, 0x1fe, 0xaa55);
    image[0x200] = 0xeb;
    image[0x201] = (HEADER_END - 0x202) as u8;
    image[0x202..0x206].copy_from_slice(b"HdrS");
    set16(&mut image, 0x206, 0x020f);
    set16(&mut image, 0x20e, 0x300 - 0x200);
    image[0x211] = 0x01 | 0x80; // LOADED_HIGH, CAN_USE_HEAP (the loader clears it)
    set32(&mut image, 0x214, 0x10_0000);
    set32(&mut image, 0x22c, 0x7fff_ffff);
    set32(&mut image, 0x230, 0x20_0000);
    image[0x234] = 1;
    set16(&mut image, 0x236, 0x3);
    set32(&mut image, 0x238, 2047);
    set64(&mut image, 0x258, 0x100_0000);
    set32(&mut image, 0x260, 0x40_0000);
    image[0x300..0x300 + VERSION_STRING.len()].copy_from_slice(VERSION_STRING);
    image.extend_from_slice(&payload());
    image
}

#[test]
fn bzimage_is_detected() {
    assert_eq!(detect(&bzimage()), Ok(ImageKind::LinuxBzImage));
}

#[test]
fn bzimage_loads_with_zero_page_tables_and_gdt() {
    let image = bzimage();
    let mut memory = ram(64 * MIB);
    let initrd: Vec<u8> = (0..MIB as usize + 123).map(|i| (i % 251) as u8).collect();
    let cmdline = "console=ttyS0 root=/dev/vda quiet";
    let loaded = load(memory.as_mut_slice(), &image, Some(&initrd), cmdline).unwrap();
    let memory = memory.as_slice();
    assert_eq!(loaded.kind, ImageKind::LinuxBzImage);

    // Registers: the 64-bit entry, zero page in RSI.
    let registers = loaded.registers;
    assert_eq!(registers.rip, 0x100_0200);
    assert_eq!(registers.gpr.rsi, linux::ZERO_PAGE);
    assert_eq!(registers.cr3, linux::PML4);
    assert_eq!(
        registers.gdtr,
        DescriptorTable {
            base: 0x8000,
            limit: 31
        }
    );
    assert_eq!(registers.cs.selector, LINUX_BOOT_CS);
    assert!(registers.in_64bit_mode());

    // The zero page: the setup header copied, loader fields set.
    let zp = linux::ZERO_PAGE;
    let mut expected = image[..HEADER_END].to_vec();
    expected[0x210] = 0xff;
    expected[0x211] = 0x01;
    set32(&mut expected, 0x214, 0x100_0000); // code32_start: the load address
    set32(&mut expected, 0x228, 0x2_0000); // cmd_line_ptr
    expected[0x218..0x220].copy_from_slice(&[0; 8]); // ramdisk fields, checked below
    let mut header = memory[zp as usize..zp as usize + HEADER_END].to_vec();
    header[0x218..0x220].copy_from_slice(&[0; 8]);
    assert_eq!(&header[0x1f1..], &expected[0x1f1..], "setup header copied");
    assert_eq!(&memory[zp as usize + 0x202..zp as usize + 0x206], b"HdrS");
    assert_eq!(read_u16(memory, zp + 0x1fe), 0xaa55);
    assert_eq!(read_u16(memory, zp + 0x206), 0x020f);
    assert_eq!(read_u32(memory, zp + 0x260), 0x40_0000);
    assert_eq!(memory[zp as usize + 0x210], 0xff, "type_of_loader");
    assert_eq!(
        memory[zp as usize + 0x211],
        0x01,
        "LOADED_HIGH, no CAN_USE_HEAP"
    );
    assert_eq!(read_u32(memory, zp + 0x214), 0x100_0000, "code32_start");
    assert_eq!(read_u32(memory, zp + 0x228), 0x2_0000, "cmd_line_ptr");
    assert_eq!(read_u32(memory, zp + 0xc8), 0, "ext_cmd_line_ptr");
    // Everything the loader does not set stays zero (the sentinel at 0x1ef in particular).
    let page = &memory[zp as usize..zp as usize + 0x1000];
    let set_by_loader = |offset: usize| {
        (0xc0..0xcc).contains(&offset)
            || offset == 0x1e8
            || (0x1f1..HEADER_END).contains(&offset)
            || (0x2d0..0x2d0 + 3 * 20).contains(&offset)
    };
    assert!(
        (0..0x1000)
            .filter(|&offset| !set_by_loader(offset))
            .all(|offset| page[offset] == 0)
    );

    // The command line.
    assert_eq!(
        &memory[0x2_0000..0x2_0000 + cmdline.len()],
        cmdline.as_bytes()
    );
    assert_eq!(memory[0x2_0000 + cmdline.len()], 0);

    // The kernel at pref_address.
    assert_eq!(
        &memory[0x100_0000..0x100_0000 + PAYLOAD_BYTES],
        payload().as_slice()
    );

    // The initrd: page-aligned, as high as RAM allows.
    let initrd_address = u64::from(read_u32(memory, zp + 0x218));
    assert_eq!(initrd_address, (64 * MIB - initrd.len() as u64) & !0xfff);
    assert_eq!(read_u32(memory, zp + 0x21c), initrd.len() as u32);
    assert_eq!(read_u32(memory, zp + 0xc0), 0, "ext_ramdisk_image");
    assert_eq!(read_u32(memory, zp + 0xc4), 0, "ext_ramdisk_size");
    let at = initrd_address as usize;
    assert_eq!(&memory[at..at + initrd.len()], initrd.as_slice());

    // E820.
    assert_eq!(memory[zp as usize + 0x1e8], 3);
    let entry = |n: u64| {
        let at = zp + 0x2d0 + n * 20;
        (
            read_u64(memory, at),
            read_u64(memory, at + 8),
            read_u32(memory, at + 16),
        )
    };
    assert_eq!(entry(0), (0, 0x9_fc00, 1));
    assert_eq!(entry(1), (0x9_fc00, 0x100_000 - 0x9_fc00, 2));
    assert_eq!(entry(2), (0x10_0000, 64 * MIB - 0x10_0000, 1));
    assert_eq!(entry(3), (0, 0, 0));

    // Page tables: 4 GiB identity-mapped with 2 MiB pages.
    assert_eq!(read_u64(memory, 0x9000), 0xa003);
    assert!((1..512).all(|i| read_u64(memory, 0x9000 + i * 8) == 0));
    for directory in 0..4 {
        assert_eq!(
            read_u64(memory, 0xa000 + directory * 8),
            (0xb000 + directory * 0x1000) | 3
        );
    }
    assert!((4..512).all(|i| read_u64(memory, 0xa000 + i * 8) == 0));
    for page in 0..2048u64 {
        assert_eq!(
            read_u64(memory, 0xb000 + page * 8),
            (page << 21) | 0x83,
            "page {page}"
        );
    }
    assert_eq!(read_u64(memory, 0xb000 + 2047 * 8), 0xffe0_0083);

    // GDT: null, null, code64 at 0x10, data at 0x18.
    assert_eq!(read_u64(memory, 0x8000), 0);
    assert_eq!(read_u64(memory, 0x8008), 0);
    assert_eq!(read_u64(memory, 0x8010), 0x00af_9b00_0000_ffff);
    assert_eq!(read_u64(memory, 0x8018), 0x00cf_9300_0000_ffff);

    assert_eq!(
        loaded.summary,
        format!(
            "Linux 6.1.0-test bzImage (protocol 2.15) at 0x1000000, initrd 1.0 MiB at {initrd_address:#x}, \
             command line {} bytes",
            cmdline.len()
        )
    );
}

#[test]
fn bzimage_without_initrd_or_version() {
    let mut image = bzimage();
    set16(&mut image, 0x20e, 0);
    let mut memory = ram(32 * MIB);
    let loaded = load(memory.as_mut_slice(), &image, None, "").unwrap();
    assert_eq!(
        loaded.summary,
        "Linux bzImage (protocol 2.15) at 0x1000000, no initrd, command line 0 bytes"
    );
    assert_eq!(read_u32(&memory, linux::ZERO_PAGE + 0x218), 0);
    assert_eq!(read_u32(&memory, linux::ZERO_PAGE + 0x21c), 0);
    assert_eq!(memory[0x2_0000], 0);
    // An empty initrd is no initrd.
    let loaded = load(memory.as_mut_slice(), &image, Some(&[]), "").unwrap();
    assert!(loaded.summary.contains("no initrd"));
}

#[test]
fn initrd_respects_initrd_addr_max_and_the_kernel() {
    let mut image = bzimage();
    set32(&mut image, 0x22c, 0x2ff_ffff);
    let mut memory = ram(64 * MIB);
    let initrd = vec![0x5a; 5000];
    load(memory.as_mut_slice(), &image, Some(&initrd), "").unwrap();
    let address = u64::from(read_u32(&memory, linux::ZERO_PAGE + 0x218));
    assert_eq!(address % 4096, 0);
    assert!(address + 5000 <= 0x300_0000);
    assert_eq!(address, (0x300_0000 - 5000) & !0xfff);

    // Too large: the space between the kernel's init_size end (20 MiB) and 48 MiB.
    let initrd = vec![0; 30 << 20];
    let error = load(memory.as_mut_slice(), &image, Some(&initrd), "").unwrap_err();
    assert_eq!(
        error,
        LoadError::InitrdTooLarge {
            size: 30 << 20,
            start: 0x140_0000,
            limit: 0x300_0000
        }
    );
    assert_eq!(
        error.to_string(),
        "the initrd (30.0 MiB) does not fit in guest memory: only 28.0 MiB are free between the \
         kernel's end at 0x1400000 and 0x3000000"
    );
    // A limit below the kernel leaves no room at all.
    set32(&mut image, 0x22c, 0xf_ffff);
    assert!(matches!(
        load(memory.as_mut_slice(), &image, Some(&[1]), ""),
        Err(LoadError::InitrdTooLarge { .. })
    ));
}

#[test]
fn load_address_follows_pref_address_and_alignment() {
    let load_at = |pref: u64, alignment: u32, relocatable: bool| {
        let mut image = bzimage();
        set64(&mut image, 0x258, pref);
        set32(&mut image, 0x230, alignment);
        image[0x234] = u8::from(relocatable);
        let mut memory = ram(64 * MIB);
        load(memory.as_mut_slice(), &image, None, "").map(|loaded| loaded.registers.rip - 0x200)
    };
    assert_eq!(
        load_at(0x200_0000, 0x20_0000, true),
        Ok(0x200_0000),
        "aligned and fits"
    );
    assert_eq!(
        load_at(0x110_0000, 0x20_0000, true),
        Ok(0x100_0000),
        "misaligned"
    );
    assert_eq!(
        load_at(0x100_0000, 0x200_0000, true),
        Ok(0x200_0000),
        "16 MiB aligned up"
    );
    assert_eq!(load_at(0, 0x20_0000, true), Ok(0x100_0000), "below 1 MiB");
    assert_eq!(
        load_at(0x3e0_0000, 0x20_0000, true),
        Ok(0x100_0000),
        "does not fit"
    );
    assert_eq!(
        load_at(0x10_0000, 0x20_0000, false),
        Ok(0x10_0000),
        "fixed at 1 MiB"
    );
    assert_eq!(
        load_at(0x8000_0000, 0x20_0000, false),
        Err(LoadError::NotRelocatable {
            address: 0x8000_0000,
            size: 0x40_0000,
            ram: 64 * MIB
        })
    );
    assert_eq!(
        load_at(0x100_0000, 3, true).unwrap_err().to_string(),
        "bad bzImage header: kernel_alignment is 0x3, not a power of two"
    );
}

#[test]
fn bzimage_errors_are_explained() {
    let mut memory = ram(32 * MIB);
    let mut try_load = |image: &[u8], initrd: Option<&[u8]>, cmdline: &str| {
        linux::load(memory.as_mut_slice(), image, initrd, cmdline)
            .unwrap_err()
            .to_string()
    };

    let image = bzimage();
    assert_eq!(
        try_load(&image[..SETUP_BYTES + 4096], None, ""),
        "kernel image is truncated: the header says 12288 bytes of protected-mode code, the file has 4096"
    );
    assert_eq!(
        try_load(&image[..2000], None, ""),
        "kernel image is truncated: the header says 2560 bytes of real-mode setup code, the file has 2000 bytes in all"
    );
    assert_eq!(
        try_load(&image[..0x250], None, ""),
        "kernel image is truncated: the setup header needs 620 bytes, there are 592"
    );
    assert_eq!(
        try_load(&image[..0x100], None, ""),
        "kernel image is truncated: 256 bytes is too short for a bzImage setup header"
    );

    let mut bad = image.clone();
    set16(&mut bad, 0x1fe, 0x1234);
    assert_eq!(
        try_load(&bad, None, ""),
        "not a Linux bzImage: the boot flag at 0x1fe is 0x1234, not 0xaa55"
    );
    let mut bad = image.clone();
    bad[0x202] = b'X';
    assert_eq!(
        try_load(&bad, None, ""),
        "not a Linux bzImage: no \"HdrS\" signature at 0x202"
    );

    let mut bad = image.clone();
    set16(&mut bad, 0x206, 0x020b);
    assert_eq!(
        try_load(&bad, None, ""),
        "the kernel uses boot protocol 2.11; Esker needs 2.12 or newer (Linux 3.8 or later)"
    );

    let mut bad = image.clone();
    set16(&mut bad, 0x236, 0x2);
    assert_eq!(
        try_load(&bad, None, ""),
        "the kernel has no 64-bit entry point (XLF_KERNEL_64 is clear): Esker boots only 64-bit x86 Linux kernels"
    );

    let mut bad = image.clone();
    bad[0x201] = 0x40;
    assert_eq!(
        try_load(&bad, None, ""),
        "kernel image is truncated: the setup header needs 612 bytes, there are 578"
    );

    let mut bad = image.clone();
    set32(&mut bad, 0x1f4, 0);
    assert_eq!(
        try_load(&bad, None, ""),
        "bad bzImage header: syssize is 0x0, so there is no protected-mode kernel"
    );

    let mut bad = image.clone();
    set32(&mut bad, 0x260, 60 << 20);
    assert_eq!(
        try_load(&bad, None, ""),
        "not enough guest memory for the kernel: it needs 60.0 MiB (init_size) from 0x1000000, \
         up to 76.0 MiB, but the VM has 32.0 MiB"
    );

    let mut bad = image.clone();
    set32(&mut bad, 0x238, 10);
    assert_eq!(
        try_load(&bad, None, "console=tty0"),
        "the command line is 12 bytes long, the kernel accepts at most 10"
    );
    assert_eq!(
        try_load(&image, None, "a\0b"),
        "the command line contains a NUL byte"
    );
    let long = "x".repeat(2048);
    assert_eq!(
        try_load(&image, None, &long),
        "the command line is 2048 bytes long, the kernel accepts at most 2047"
    );
    // The header's limit is capped by the buffer between 0x20000 and the EBDA.
    set32(&mut bad, 0x238, u32::MAX);
    let huge = "x".repeat(0x8_0000);
    assert_eq!(
        try_load(&bad, None, &huge),
        "the command line is 524288 bytes long, the kernel accepts at most 523263"
    );
}

#[test]
fn a_file_longer_than_syssize_loads_only_the_kernel() {
    // A signed kernel carries its signature after the syssize bytes.
    let mut image = bzimage();
    image.extend_from_slice(&[0xee; 100]);
    let mut memory = ram(32 * MIB);
    load(memory.as_mut_slice(), &image, None, "").unwrap();
    let end = 0x100_0000 + PAYLOAD_BYTES;
    assert!(memory[end..end + 100].iter().all(|&b| b == 0));
}

#[test]
fn setup_sects_zero_means_four() {
    let mut image = bzimage();
    image[0x1f1] = 0;
    let mut memory = ram(32 * MIB);
    load(memory.as_mut_slice(), &image, None, "").unwrap();
    assert_eq!(
        &memory[0x100_0000..0x100_0000 + PAYLOAD_BYTES],
        payload().as_slice()
    );
    // The zero page keeps the header's own value.
    assert_eq!(memory[linux::ZERO_PAGE as usize + 0x1f1], 0);
}

// --- Multiboot ---

const MB_MAGIC: u32 = 0x1bad_b002;

fn multiboot_header(flags: u32) -> [u8; 12] {
    let mut header = [0u8; 12];
    header[0..4].copy_from_slice(&MB_MAGIC.to_le_bytes());
    header[4..8].copy_from_slice(&flags.to_le_bytes());
    header[8..12].copy_from_slice(
        &0u32
            .wrapping_sub(MB_MAGIC)
            .wrapping_sub(flags)
            .to_le_bytes(),
    );
    header
}

const AOUT_HEADER: usize = 0x40;
const AOUT_FILE: usize = 0x1000;

/// An a.out-kludge image: 4 KiB loaded at 1 MiB, 8 KiB of bss, entry at +0x80.
fn aout_image() -> Vec<u8> {
    let mut image: Vec<u8> = (0..AOUT_FILE).map(|i| (i * 13 + 5) as u8).collect();
    image[AOUT_HEADER..AOUT_HEADER + 12].copy_from_slice(&multiboot_header(0x1_0003));
    let fields = [0x10_0040u32, 0x10_0000, 0x10_1000, 0x10_3000, 0x10_0080];
    for (i, value) in fields.iter().enumerate() {
        set32(&mut image, AOUT_HEADER + 12 + 4 * i, *value);
    }
    image
}

fn set_aout(image: &mut [u8], field: usize, value: u32) {
    set32(image, AOUT_HEADER + 12 + 4 * field, value);
}

fn check_info(memory: &[u8], ram: u64, cmdline: &str, flags: u32) {
    let info = multiboot::INFO;
    assert_eq!(read_u32(memory, info), flags);
    assert_eq!(read_u32(memory, info + 4), 639, "mem_lower");
    assert_eq!(
        u64::from(read_u32(memory, info + 8)),
        (ram - MIB) / 1024,
        "mem_upper"
    );
    assert_eq!(read_u32(memory, info + 16), 0x9100, "cmdline");
    let at = 0x9100;
    assert_eq!(&memory[at..at + cmdline.len()], cmdline.as_bytes());
    assert_eq!(memory[at + cmdline.len()], 0);
    assert_eq!(read_u32(memory, info + 44), 72, "mmap_length");
    assert_eq!(read_u32(memory, info + 48), 0x9080, "mmap_addr");
    let entry = |n: u64| {
        let at = 0x9080 + n * 24;
        (
            read_u32(memory, at),
            read_u64(memory, at + 4),
            read_u64(memory, at + 12),
            read_u32(memory, at + 20),
        )
    };
    assert_eq!(entry(0), (20, 0, 0x9_fc00, 1));
    assert_eq!(entry(1), (20, 0x9_fc00, 0x6_0400, 2));
    assert_eq!(entry(2), (20, 0x10_0000, ram - MIB, 1));
    assert_eq!(read_u32(memory, info + 64), 0x90e0, "boot_loader_name");
    assert_eq!(&memory[0x90e0..0x90ea], b"Esker vmx\0");
}

#[test]
fn multiboot_aout_kludge_loads_and_zeroes_bss() {
    let image = aout_image();
    assert_eq!(detect(&image), Ok(ImageKind::Multiboot));
    let mut memory = vec![0xaau8; 4 * MIB as usize];
    let cmdline = "kernel --verbose";
    let loaded = load(memory.as_mut_slice(), &image, None, cmdline).unwrap();
    assert_eq!(loaded.kind, ImageKind::Multiboot);
    let registers = loaded.registers;
    assert_eq!(registers.rip, 0x10_0080);
    assert_eq!(registers.gpr.rax, 0x2bad_b002);
    assert_eq!(registers.gpr.rbx, 0x9000);
    assert_eq!(registers.cs.selector, 0x08);
    assert_eq!(registers.cr0 & 1, 1);
    assert!(!registers.in_64bit_mode());

    assert_eq!(&memory[0x10_0000..0x10_1000], image.as_slice());
    assert!(
        memory[0x10_1000..0x10_3000].iter().all(|&b| b == 0),
        "bss zeroed"
    );
    assert_eq!(memory[0x10_3000], 0xaa, "nothing past bss_end_addr");
    check_info(&memory, 4 * MIB, cmdline, 0x245);
    assert_eq!(
        loaded.summary,
        "Multiboot a.out-kludge kernel, 1 segment at 0x100000..0x103000, entry 0x100080, \
         no initrd, command line 16 bytes"
    );
}

#[test]
fn multiboot_initrd_becomes_module_zero() {
    let image = aout_image();
    let mut memory = ram(4 * MIB);
    let initrd: Vec<u8> = (0..5000).map(|i| i as u8).collect();
    let loaded = load(memory.as_mut_slice(), &image, Some(&initrd), "").unwrap();
    check_info(&memory, 4 * MIB, "", 0x24d);
    assert_eq!(read_u32(&memory, 0x9000 + 20), 1, "mods_count");
    assert_eq!(read_u32(&memory, 0x9000 + 24), 0x90d0, "mods_addr");
    assert_eq!(read_u32(&memory, 0x90d0), 0x10_3000, "mod_start");
    assert_eq!(read_u32(&memory, 0x90d4), 0x10_3000 + 5000, "mod_end");
    assert_eq!(read_u32(&memory, 0x90d8), 0x90f0, "string");
    assert_eq!(&memory[0x90f0..0x90f7], b"initrd\0");
    assert_eq!(&memory[0x10_3000..0x10_3000 + 5000], initrd.as_slice());
    assert!(
        loaded
            .summary
            .contains("initrd 4.9 KiB at 0x103000 (module 0)")
    );

    let big = vec![0; 3 * MIB as usize];
    assert_eq!(
        load(memory.as_mut_slice(), &image, Some(&big), "").unwrap_err(),
        LoadError::InitrdTooLarge {
            size: 3 * MIB,
            start: 0x10_3000,
            limit: 4 * MIB
        }
    );
}

#[test]
fn multiboot_aout_address_rules() {
    let mut memory = ram(4 * MIB);
    let mut error = |image: &[u8]| {
        load(memory.as_mut_slice(), image, None, "")
            .unwrap_err()
            .to_string()
    };
    let mut image = aout_image();
    set_aout(&mut image, 1, 0x10_0050);
    assert_eq!(
        error(&image),
        "bad Multiboot a.out-kludge addresses: load_addr is above header_addr"
    );
    let mut image = aout_image();
    set_aout(&mut image, 1, 0xf_0000);
    assert_eq!(
        error(&image),
        "bad Multiboot a.out-kludge addresses: load_addr lies before the start of the file"
    );
    let mut image = aout_image();
    set_aout(&mut image, 2, 0x10_2000);
    assert_eq!(
        error(&image),
        "bad Multiboot a.out-kludge addresses: load_end_addr lies beyond the end of the file"
    );
    let mut image = aout_image();
    set_aout(&mut image, 3, 0x10_0800);
    assert_eq!(
        error(&image),
        "bad Multiboot a.out-kludge addresses: bss_end_addr is below load_end_addr"
    );
    let mut image = aout_image();
    set_aout(&mut image, 4, 0x20_0000);
    assert_eq!(
        error(&image),
        "the kernel's entry point 0x200000 lies outside everything it loads"
    );
    // Loaded over the information area.
    let mut image = aout_image();
    for (field, value) in [
        (0, 0x8040),
        (1, 0x8000),
        (2, 0x9000),
        (3, 0x9100),
        (4, 0x8080),
    ] {
        set_aout(&mut image, field, value);
    }
    assert_eq!(
        error(&image),
        "the kernel loads to 0x8000..0x9100, which overlaps the Multiboot information area (0x9000..0x9101)"
    );
    // Or over the legacy hole.
    let mut image = aout_image();
    for (field, value) in [(0, 0xf_f040), (1, 0xf_f000), (2, 0), (3, 0), (4, 0xf_f080)] {
        set_aout(&mut image, field, value);
    }
    assert_eq!(
        error(&image),
        "the kernel loads to 0xff000..0x100000, which overlaps the legacy BIOS and VGA area (0x9fc00..0x100000)"
    );
    // load_end_addr 0: the rest of the file; bss_end_addr 0: no bss.
    let mut image = aout_image();
    set_aout(&mut image, 2, 0);
    set_aout(&mut image, 3, 0);
    let loaded = load(memory.as_mut_slice(), &image, None, "").unwrap();
    assert!(loaded.summary.contains("1 segment at 0x100000..0x101000"));
    // Beyond RAM.
    let mut small = ram(MIB + 0x2000);
    let image = aout_image();
    assert_eq!(
        load(small.as_mut_slice(), &image, None, "")
            .unwrap_err()
            .to_string(),
        "the kernel loads to 0x100000..0x103000, outside guest RAM (0..0x102000)"
    );
}

#[test]
fn multiboot_flags_the_loader_cannot_honour_are_refused() {
    let mut memory = ram(4 * MIB);
    let with_flags = |flags: u32| {
        let mut image = aout_image();
        image[AOUT_HEADER..AOUT_HEADER + 12].copy_from_slice(&multiboot_header(flags));
        image
    };
    let error = |memory: &mut Vec<u8>, flags| {
        load(memory.as_mut_slice(), &with_flags(flags), None, "")
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        error(&mut memory, 0x1_0007),
        "the kernel requires Multiboot features Esker does not provide: video mode information (flag bit 2)"
    );
    assert_eq!(
        error(&mut memory, 0x1_0023),
        "the kernel requires Multiboot features Esker does not provide: unknown required flags 0x0020"
    );
    assert_eq!(
        error(&mut memory, 0x1_8004),
        "the kernel requires Multiboot features Esker does not provide: video mode information \
         (flag bit 2) and unknown required flags 0x8000"
    );
    // Optional bits (17-31) are ignored; bits 0 and 1 are honoured.
    assert!(
        load(
            memory.as_mut_slice(),
            &with_flags(0xfffe_0003 | 0x1_0000),
            None,
            ""
        )
        .is_ok()
    );
    assert!(load(memory.as_mut_slice(), &with_flags(0x1_0000), None, "").is_ok());
}

#[test]
fn multiboot_header_search_rules() {
    // A bad checksum is reported when no good header follows.
    let mut image = aout_image();
    image[AOUT_HEADER + 8] ^= 1;
    assert_eq!(
        detect(&image).unwrap_err().to_string(),
        "the Multiboot header at offset 0x40 has a bad checksum"
    );
    // Misaligned headers do not count.
    let mut image = vec![0u8; 0x100];
    image[0x41..0x41 + 12].copy_from_slice(&multiboot_header(0));
    assert_eq!(detect(&image), Err(LoadError::UnknownFormat));
    // Nor do headers past 8 KiB.
    let mut image = vec![0u8; 0x3000];
    image[0x2000..0x200c].copy_from_slice(&multiboot_header(0));
    assert_eq!(detect(&image), Err(LoadError::UnknownFormat));
    // The last place a 12-byte header fits.
    image[0x1ff4..0x2000].copy_from_slice(&multiboot_header(0));
    assert_eq!(detect(&image), Ok(ImageKind::Multiboot));
    // But an a.out-kludge header must fit whole.
    image[0x1ff4..0x2000].copy_from_slice(&multiboot_header(0x1_0000));
    let mut memory = ram(4 * MIB);
    assert_eq!(
        load(memory.as_mut_slice(), &image, None, "")
            .unwrap_err()
            .to_string(),
        "the Multiboot header at offset 0x1ff4 runs past the first 8 KiB of the file or its end"
    );
}

// --- ELF Multiboot kernels ---

/// An ELF kernel with a higher-half text segment (1 MiB physical, 2 KiB in memory of
/// which 512 bytes from the file), a note, and a data segment at 2 MiB; the entry is
/// virtual, 0x10 into the text.
fn elf_image(elf64: bool) -> Vec<u8> {
    let mut image = vec![0u8; 0x1300];
    image[..4].copy_from_slice(b"\x7fELF");
    image[4] = if elf64 { 2 } else { 1 };
    image[5] = 1;
    image[6] = 1;
    set16(&mut image, 16, 2);
    let text_vaddr: u64 = if elf64 {
        0xffff_ffff_8010_0000
    } else {
        0xc010_0000
    };
    let data_vaddr: u64 = if elf64 {
        0xffff_ffff_8020_0000
    } else {
        0xc020_0000
    };
    // (type, offset, vaddr, paddr, filesz, memsz)
    let headers = [
        (
            1u32,
            0x1000u64,
            text_vaddr,
            0x10_0000u64,
            0x200u64,
            0x800u64,
        ),
        (4, 0x1100, 0, 0, 0x10, 0x10),
        (1, 0x1200, data_vaddr, 0x20_0000, 0x100, 0x100),
    ];
    if elf64 {
        set16(&mut image, 18, 62);
        set32(&mut image, 20, 1);
        set64(&mut image, 24, text_vaddr + 0x10);
        set64(&mut image, 32, 64);
        set16(&mut image, 52, 64);
        set16(&mut image, 54, 56);
        set16(&mut image, 56, headers.len() as u16);
        for (i, &(kind, offset, vaddr, paddr, filesz, memsz)) in headers.iter().enumerate() {
            let ph = 64 + i * 56;
            set32(&mut image, ph, kind);
            set32(&mut image, ph + 4, 5);
            set64(&mut image, ph + 8, offset);
            set64(&mut image, ph + 16, vaddr);
            set64(&mut image, ph + 24, paddr);
            set64(&mut image, ph + 32, filesz);
            set64(&mut image, ph + 40, memsz);
            set64(&mut image, ph + 48, 0x1000);
        }
    } else {
        set16(&mut image, 18, 3);
        set32(&mut image, 20, 1);
        set32(&mut image, 24, (text_vaddr + 0x10) as u32);
        set32(&mut image, 28, 52);
        set16(&mut image, 40, 52);
        set16(&mut image, 42, 32);
        set16(&mut image, 44, headers.len() as u16);
        for (i, &(kind, offset, vaddr, paddr, filesz, memsz)) in headers.iter().enumerate() {
            let ph = 52 + i * 32;
            set32(&mut image, ph, kind);
            set32(&mut image, ph + 4, offset as u32);
            set32(&mut image, ph + 8, vaddr as u32);
            set32(&mut image, ph + 12, paddr as u32);
            set32(&mut image, ph + 16, filesz as u32);
            set32(&mut image, ph + 20, memsz as u32);
            set32(&mut image, ph + 24, 5);
            set32(&mut image, ph + 28, 0x1000);
        }
    }
    for (i, byte) in image[0x1000..].iter_mut().enumerate() {
        *byte = (i * 3 + 1) as u8;
    }
    image[0x1000..0x100c].copy_from_slice(&multiboot_header(0x3));
    image
}

#[test]
fn multiboot_elf_kernels_load_by_physical_address() {
    for elf64 in [false, true] {
        let image = elf_image(elf64);
        assert_eq!(detect(&image), Ok(ImageKind::Multiboot));
        let mut memory = vec![0xaau8; 4 * MIB as usize];
        let loaded = load(memory.as_mut_slice(), &image, None, "x").unwrap();
        assert_eq!(loaded.registers.rip, 0x10_0010, "virtual entry translated");
        assert_eq!(loaded.registers.gpr.rax, 0x2bad_b002);
        assert_eq!(loaded.registers.gpr.rbx, 0x9000);
        assert_eq!(&memory[0x10_0000..0x10_0200], &image[0x1000..0x1200]);
        assert!(
            memory[0x10_0200..0x10_0800].iter().all(|&b| b == 0),
            "bss zeroed"
        );
        assert_eq!(memory[0x10_0800], 0xaa);
        assert_eq!(&memory[0x20_0000..0x20_0100], &image[0x1200..0x1300]);
        assert_eq!(memory[0x20_0100], 0xaa);
        assert_eq!(memory[0], 0xaa, "the note is not loaded");
        check_info(&memory, 4 * MIB, "x", 0x245);
        let format = if elf64 { "ELF64" } else { "ELF32" };
        assert_eq!(
            loaded.summary,
            format!(
                "Multiboot {format} kernel, 2 segments at 0x100000..0x200100, entry 0x100010, \
                 no initrd, command line 1 bytes"
            )
        );
    }
}

#[test]
fn multiboot_elf_physical_entry_and_errors() {
    let mut memory = ram(4 * MIB);
    let mut error = |image: &[u8]| {
        load(memory.as_mut_slice(), image, None, "")
            .unwrap_err()
            .to_string()
    };
    // A physical entry inside a segment is taken as it is.
    let mut image = elf_image(true);
    set64(&mut image, 24, 0x20_0004);
    let mut ok_memory = ram(4 * MIB);
    let loaded = load(ok_memory.as_mut_slice(), &image, None, "").unwrap();
    assert_eq!(loaded.registers.rip, 0x20_0004);

    set64(&mut image, 24, 0x30_0000);
    assert_eq!(
        error(&image),
        "the kernel's entry point 0x300000 lies outside everything it loads"
    );

    let mut image = elf_image(true);
    image[5] = 2;
    assert_eq!(error(&image), "bad ELF kernel: not little-endian");
    let mut image = elf_image(true);
    image[4] = 3;
    assert_eq!(
        error(&image),
        "bad ELF kernel: unknown ELF class (neither 32- nor 64-bit)"
    );
    let mut image = elf_image(true);
    set16(&mut image, 18, 3);
    assert_eq!(
        error(&image),
        "bad ELF kernel: not an x86 executable (e_machine)"
    );
    let mut image = elf_image(false);
    set16(&mut image, 18, 62);
    assert_eq!(
        error(&image),
        "bad ELF kernel: not an x86 executable (e_machine)"
    );
    let mut image = elf_image(true);
    set16(&mut image, 16, 3);
    assert_eq!(
        error(&image),
        "bad ELF kernel: not an executable (e_type is not ET_EXEC)"
    );
    let mut image = elf_image(true);
    set16(&mut image, 56, 100);
    assert_eq!(
        error(&image),
        "bad ELF kernel: the program headers lie beyond the end of the file"
    );
    let mut image = elf_image(true);
    set16(&mut image, 54, 20);
    assert_eq!(
        error(&image),
        "bad ELF kernel: program headers are smaller than the ELF class needs"
    );
    let mut image = elf_image(true);
    set64(&mut image, 64 + 32, 0x900);
    assert_eq!(
        error(&image),
        "bad ELF kernel: a segment has more file bytes than memory bytes"
    );
    let mut image = elf_image(true);
    set64(&mut image, 64 + 8, 0x1200);
    assert_eq!(
        error(&image),
        "bad ELF kernel: a segment's bytes lie beyond the end of the file"
    );
    let mut image = elf_image(false);
    set16(&mut image, 44, 0);
    assert_eq!(error(&image), "bad ELF kernel: no loadable segments");
    let mut image = elf_image(true);
    image[0] = 0;
    assert_eq!(
        error(&image),
        "bad ELF kernel: not an ELF file, and the Multiboot header has no a.out-kludge addresses (flag 16)"
    );
    // A segment above RAM, and one that would cross 4 GiB.
    let mut image = elf_image(true);
    set64(&mut image, 64 + 2 * 56 + 24, 0x3f_ff80);
    assert_eq!(
        error(&image),
        "the kernel loads to 0x3fff80..0x400080, outside guest RAM (0..0x400000)"
    );
    let mut image = elf_image(true);
    set64(&mut image, 64 + 2 * 56 + 24, u64::MAX - 0x10);
    assert!(error(&image).contains("outside guest RAM"));
    // A command line that would run into the hole.
    let image = elf_image(true);
    let long = "x".repeat(0x9_6b00);
    assert_eq!(
        load(memory.as_mut_slice(), &image, None, &long)
            .unwrap_err()
            .to_string(),
        "the command line is 617216 bytes long, the kernel accepts at most 617215"
    );
    assert_eq!(
        load(memory.as_mut_slice(), &image, None, "a\0").unwrap_err(),
        LoadError::CommandLineHasNul
    );
}

// --- Detection, helpers ---

#[test]
fn unknown_images_are_refused_by_detect() {
    let message = "not a Linux bzImage or Multiboot kernel (no \"HdrS\" at 0x202, no Multiboot \
                   header in the first 8 KiB)";
    assert_eq!(detect(&[]).unwrap_err().to_string(), message);
    assert_eq!(detect(&[0x90; 10_000]).unwrap_err().to_string(), message);
    let mut memory = ram(MIB);
    assert_eq!(
        load(memory.as_mut_slice(), b"hello", None, "")
            .unwrap_err()
            .to_string(),
        message
    );
    // "HdrS" without the boot flag and no Multiboot header: the bzImage's problem.
    let mut image = bzimage();
    set16(&mut image, 0x1fe, 0);
    assert_eq!(detect(&image), Err(LoadError::BadBootFlag { found: 0 }));
}

#[test]
fn sizes_read_well() {
    assert_eq!(Bytes(0).to_string(), "0 bytes");
    assert_eq!(Bytes(1023).to_string(), "1023 bytes");
    assert_eq!(Bytes(1024).to_string(), "1.0 KiB");
    assert_eq!(Bytes(5000).to_string(), "4.9 KiB");
    assert_eq!(Bytes(2_200_000).to_string(), "2.1 MiB");
    assert_eq!(Bytes(3 << 30).to_string(), "3.0 GiB");
    assert_eq!(Bytes(u64::MAX).to_string(), "17179869184.0 GiB");
}

#[test]
fn memory_map_clips_to_ram() {
    let map: Vec<_> = memory_map(0x8_0000).collect();
    assert_eq!(map, [(0, 0x8_0000, true), (0x9_fc00, 0x6_0400, false)]);
    let map: Vec<_> = memory_map(2 * MIB).collect();
    assert_eq!(
        map,
        [
            (0, 0x9_fc00, true),
            (0x9_fc00, 0x6_0400, false),
            (MIB, MIB, true)
        ]
    );
}

// --- Hostile images ---

fn mutate(
    mut image: Vec<u8>,
    cut: Option<usize>,
    flips: &[(usize, u8)],
    words: &[(usize, u32)],
) -> Vec<u8> {
    if let Some(cut) = cut {
        let len = image.len();
        image.truncate(cut % (len + 1));
    }
    if image.is_empty() {
        return image;
    }
    let len = image.len();
    for &(at, bit) in flips {
        image[at % len] ^= 1 << (bit % 8);
    }
    for &(at, value) in words {
        // Header fields live in the first KiB of every fixture.
        let at = (at % 0x400) & !3;
        if at + 4 <= len {
            set32(&mut image, at, value);
        }
    }
    image
}

fn base_image(kind: u8) -> Vec<u8> {
    match kind % 4 {
        0 => bzimage(),
        1 => aout_image(),
        2 => elf_image(false),
        _ => elf_image(true),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(image in proptest::collection::vec(any::<u8>(), 0..0x3000)) {
        let mut memory = ram(24 * MIB);
        let _ = detect(&image);
        let _ = load(memory.as_mut_slice(), &image, Some(&[1, 2, 3]), "console=ttyS0");
        let _ = linux::load(memory.as_mut_slice(), &image, None, "");
        let _ = multiboot::load(memory.as_mut_slice(), &image, None, "");
    }

    #[test]
    fn mangled_images_fail_cleanly(
        kind in any::<u8>(),
        cut in proptest::option::of(any::<usize>()),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        words in proptest::collection::vec((any::<usize>(), any::<u32>()), 0..4),
        ram_mib in 1u64..40,
        initrd_len in proptest::option::of(0usize..0x40_0000),
        cmdline in "[ -~]{0,64}",
    ) {
        let image = mutate(base_image(kind), cut, &flips, &words);
        let mut memory = ram(ram_mib * MIB);
        let initrd = initrd_len.map(|len| vec![0x42u8; len]);
        let _ = detect(&image);
        if let Ok(loaded) = load(memory.as_mut_slice(), &image, initrd.as_deref(), &cmdline) {
            // Whatever loaded starts where its kind says.
            match loaded.kind {
                ImageKind::LinuxBzImage => prop_assert_eq!(loaded.registers.gpr.rsi, linux::ZERO_PAGE),
                ImageKind::Multiboot => prop_assert_eq!(loaded.registers.gpr.rbx, multiboot::INFO),
            }
            prop_assert!(loaded.registers.rip < ram_mib * MIB);
        }
    }
}

#[test]
fn real_debian_kernel_loads_when_present() {
    extern crate std;
    let Ok(entries) = std::fs::read_dir("/boot") else {
        std::println!("skipped: no /boot directory");
        return;
    };
    let mut kernels: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("vmlinuz-"))
        })
        .collect();
    kernels.sort();
    let Some(path) = kernels.last() else {
        std::println!("skipped: no /boot/vmlinuz-* on this machine");
        return;
    };
    let Ok(image) = std::fs::read(path) else {
        std::println!("skipped: {} is not readable", path.display());
        return;
    };
    let mut memory = ram(256 * MIB);
    let initrd = vec![0u8; 4 * MIB as usize];
    let loaded = load(
        memory.as_mut_slice(),
        &image,
        Some(&initrd),
        "console=ttyS0",
    )
    .unwrap();
    std::println!("{}: {}", path.display(), loaded.summary);
    assert_eq!(loaded.kind, ImageKind::LinuxBzImage);
    assert!(loaded.summary.starts_with("Linux "));
    assert_eq!(memory[linux::ZERO_PAGE as usize + 0x210], 0xff);
}

#[test]
fn a_linux_guest_is_told_its_tsc_rate_once() {
    use super::linux::command_line_with_tsc;
    assert_eq!(
        command_line_with_tsc("console=ttyS0 noapic", 2_600_000),
        "console=ttyS0 noapic tsc_early_khz=2600000"
    );
    assert_eq!(
        command_line_with_tsc("", 1_000_000),
        "tsc_early_khz=1000000"
    );
    // The user's own setting wins; an unknown rate adds nothing.
    assert_eq!(
        command_line_with_tsc("tsc_early_khz=3000000 quiet", 2_600_000),
        "tsc_early_khz=3000000 quiet"
    );
    assert_eq!(command_line_with_tsc("quiet", 0), "quiet");
    // A word that merely contains the name is not a setting.
    assert_eq!(
        command_line_with_tsc("x.tsc_early_khz=1", 5),
        "x.tsc_early_khz=1 tsc_early_khz=5"
    );
}
