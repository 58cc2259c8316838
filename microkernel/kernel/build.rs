//! Links the bare-metal kernel with its own linker script and defmt's, and points it at
//! the bundle (manifest + world programs) to embed: `ESKER_BUNDLE`, set by
//! `cargo xtask image`, or an empty file (a kernel without worlds).
use std::path::PathBuf;

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=linker.ld");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
        // Without defmt.x linking still succeeds and the decoder silently prints nothing.
        println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
        println!("cargo:rustc-link-arg-bins=-znoexecstack");
        println!("cargo:rustc-link-arg-bins=--no-dynamic-linker");
    }
    println!("cargo:rerun-if-env-changed=ESKER_BUNDLE");
    let bundle = match std::env::var_os("ESKER_BUNDLE") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => {
            let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
            let empty = out.join("empty.bundle");
            std::fs::write(&empty, []).expect("write empty bundle");
            empty
        }
    };
    println!("cargo:rerun-if-changed={}", bundle.display());
    println!("cargo:rustc-env=ESKER_BUNDLE_FILE={}", bundle.display());
}
