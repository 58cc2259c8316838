//! Links the bare-metal world with the runtime's world layout and defmt's.
fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        // Both scripts are on the search path (set by esker-rt's and defmt's build scripts).
        println!("cargo:rustc-link-arg-bins=-Tesker-world.ld");
        // Without defmt.x linking still succeeds and the decoder silently prints nothing.
        println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
        println!("cargo:rustc-link-arg-bins=-znoexecstack");
        println!("cargo:rustc-link-arg-bins=--no-dynamic-linker");
    }
}
