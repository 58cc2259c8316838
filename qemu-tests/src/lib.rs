//! Harness of Esker's whole-system tests: boot an image in QEMU and assert on its decoded
//! serial log and exit status.
//!
//! A [`Machine`] is one QEMU run (started through `esker_logdecode::qemu`, the command line
//! every tool shares). Tests wait for log lines with [`Machine::expect`] and for the end
//! with [`Machine::wait_exit`], always with a timeout and never by sleeping. Anything that
//! goes wrong comes back as a [`Failure`] carrying the reason, the QEMU command line and
//! the last 40 decoded lines; test functions return `Result<(), Failure>`, so libtest
//! prints all of that. QEMU is killed when the machine is dropped.
//!
//! Images come from `ESKER_IMAGE_DIR`, `ESKER_SELFTEST_IMAGE_DIR` and
//! `ESKER_TEST_IMAGES_DIR` (set by `cargo xtask test`), defaulting to the workspace's
//! `target/image`, `target/image-selftest` and `target/image-test/<manifest>`. A missing
//! image is a failure, never a skipped test.

mod machine;

use std::path::{Path, PathBuf};
use std::time::Duration;

use esker_kernel_core::contract;
use esker_logdecode::KERNEL_ELF;

pub use machine::{Failure, Machine};

/// Time allowed for a PVH boot to reach a line (TCG on a shared, noisy machine).
pub const PVH_TIMEOUT: Duration = Duration::from_secs(60);
/// Time allowed for a boot through firmware and GRUB to reach a line.
pub const ISO_TIMEOUT: Duration = Duration::from_secs(120);
/// Time allowed for QEMU to exit once the kernel has said what it had to say.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// The production image directory.
pub fn image_dir() -> Result<PathBuf, Failure> {
    find_image_dir("ESKER_IMAGE_DIR", "target/image", "cargo xtask image")
}

/// The self-test image directory (kernel built with feature `selftest`).
pub fn selftest_image_dir() -> Result<PathBuf, Failure> {
    find_image_dir(
        "ESKER_SELFTEST_IMAGE_DIR",
        "target/image-selftest",
        "cargo xtask image --selftest",
    )
}

/// The image built from test manifest `qemu-tests/manifests/<name>.toml`
/// (`ESKER_TEST_IMAGES_DIR/<name>`, default `target/image-test/<name>`).
pub fn test_image_dir(name: &str) -> Result<PathBuf, Failure> {
    let base = std::env::var_os("ESKER_TEST_IMAGES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/image-test"));
    let dir = base.join(name);
    if dir.join(KERNEL_ELF).is_file() {
        Ok(dir)
    } else {
        Err(Failure::setup(format!(
            "no {KERNEL_ELF} in {}: run `cargo xtask test` (it builds the images of \
             qemu-tests/manifests/*.toml)",
            dir.display()
        )))
    }
}

/// The shipped system manifest.
pub fn system_manifest() -> PathBuf {
    workspace_root().join("system.toml")
}

fn find_image_dir(variable: &str, default: &str, command: &str) -> Result<PathBuf, Failure> {
    let dir = std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(default));
    if dir.join(KERNEL_ELF).is_file() {
        Ok(dir)
    } else {
        Err(Failure::setup(format!(
            "no {KERNEL_ELF} in {} (from {variable} or the default {default}): run `{command}` \
             first",
            dir.display()
        )))
    }
}

fn workspace_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The kernel command line that selects self-test `name`.
pub fn selftest_cmdline(name: &str) -> String {
    format!("{}={name}", contract::SELFTEST_KEY)
}

/// The hexadecimal number after `key ` in `text` (`hex_field("cr2 0x1f", "cr2")` is 0x1f).
pub fn hex_field(text: &str, key: &str) -> Option<u64> {
    let pattern = format!("{key} 0x");
    let start = text.find(&pattern)? + pattern.len();
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    u64::from_str_radix(&digits, 16).ok()
}

/// The decimal number right after `prefix` in `text`
/// (`number_after("memory: 512 KiB", "memory: ")` is 512).
pub fn number_after(text: &str, prefix: &str) -> Option<u64> {
    let start = text.find(prefix)? + prefix.len();
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_parsed_out_of_report_lines() {
        let line = "EXCEPTION #PF (vector 14) error code 0x3 rip 0xffffffff80012345 cr2 \
                    0xffffffff80001000 cr3 0x1234000";
        assert_eq!(hex_field(line, "error code"), Some(3));
        assert_eq!(hex_field(line, "cr2"), Some(0xffff_ffff_8000_1000));
        assert_eq!(hex_field(line, "rsp"), None);
        assert_eq!(
            number_after("memory: 523768 KiB usable in 2 regions", "memory: "),
            Some(523_768)
        );
        assert_eq!(number_after("memory: none", "memory: "), None);
    }

    #[test]
    fn a_missing_image_says_how_to_build_it() {
        let err = find_image_dir("ESKER_NO_SUCH_VARIABLE", "no/such/dir", "cargo xtask image")
            .unwrap_err();
        assert!(
            err.to_string().contains("run `cargo xtask image` first"),
            "{err}"
        );
    }
}
