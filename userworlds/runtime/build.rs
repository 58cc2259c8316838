//! Puts the world linker script on the linker's search path.
//!
//! Every world's own build script then links with `-Tesker-world.ld -Tdefmt.x` (only for
//! `target_os = "none"`); the search path set here reaches every crate that depends on the
//! runtime, the same way `defmt.x` reaches them from defmt's build script.
use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let script = include_str!("esker-world.ld");
    std::fs::write(out.join("esker-world.ld"), script).expect("OUT_DIR is writable");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=esker-world.ld");
    println!("cargo:rerun-if-changed=build.rs");
}
