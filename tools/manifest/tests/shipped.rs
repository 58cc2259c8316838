//! The shipped `system.toml`: it compiles, its layout is the documented one, and the
//! bundle built from it round-trips through the kernel's decoder.

use std::path::Path;

use esker_abi::{ObjectKind, Rights, badge};
use esker_kernel_core::manifest::{Bundle, ObjectSpec};
use esker_manifest::{CompiledOwned, Manifest, build_bundle, load};

fn shipped() -> Manifest {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../system.toml");
    match load(&path) {
        Ok(manifest) => manifest,
        Err(errors) => panic!(
            "system.toml does not check:\n{}",
            errors.iter().map(|e| format!("{e}\n")).collect::<String>()
        ),
    }
}

fn fake_binaries(manifest: &Manifest) -> Vec<(String, Vec<u8>)> {
    manifest
        .worlds
        .iter()
        .map(|w| {
            (
                w.binary.clone(),
                format!("\x7fELF {}", w.binary).into_bytes(),
            )
        })
        .collect()
}

fn caps_of<'a>(
    compiled: &'a CompiledOwned,
    world: &str,
) -> Vec<(u32, &'a str, ObjectKind, Rights, u64)> {
    let world = compiled
        .worlds
        .iter()
        .find(|w| w.name == world)
        .expect("world exists");
    world
        .caps
        .iter()
        .map(|c| {
            (
                c.slot,
                c.name.as_str(),
                compiled.objects[usize::from(c.object)].kind(),
                c.rights,
                c.badge,
            )
        })
        .collect()
}

#[test]
fn shipped_manifest_declares_the_five_servers() {
    let manifest = shipped();
    let names: Vec<&str> = manifest.worlds.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["vmkauthd", "storage", "vswitch", "hostd", "vmx"]);
    let vmx = manifest.world("vmx").expect("vmx");
    assert!(vmx.guest_facing);
    assert_eq!(vmx.vm.as_deref(), Some("vm1"));
    assert!(
        manifest
            .worlds
            .iter()
            .all(|w| (512..=2048).contains(&w.memory_kib))
    );
}

#[test]
fn shipped_manifest_compiles_to_the_documented_layout() {
    let manifest = shipped();
    let compiled = manifest.compile();
    assert_eq!(compiled, manifest.compile(), "compilation is deterministic");
    let hostd = u16::try_from(manifest.world_index("hostd").expect("hostd")).expect("small index");
    let vmx = u16::try_from(manifest.world_index("vmx").expect("vmx")).expect("small index");
    assert_eq!(
        caps_of(&compiled, "hostd"),
        [
            (0, "log", ObjectKind::Log, Rights::LOG, 0),
            (1, "serve:hostd", ObjectKind::Endpoint, Rights::RECEIVE, 0),
            (
                2,
                "call:auth",
                ObjectKind::Endpoint,
                Rights::CALL,
                badge::encode(hostd, 0b111)
            ),
            (
                3,
                "call:storage",
                ObjectKind::Endpoint,
                Rights::CALL,
                badge::encode(hostd, 0b1)
            ),
            (
                4,
                "call:vswitch",
                ObjectKind::Endpoint,
                Rights::CALL,
                badge::encode(hostd, 0b1)
            ),
            (
                5,
                "call:vmx",
                ObjectKind::Endpoint,
                Rights::CALL,
                badge::encode(hostd, 0b1)
            ),
        ]
    );
    let ring = Rights::READ | Rights::WRITE | Rights::MAP;
    assert_eq!(
        caps_of(&compiled, "vmx"),
        [
            (0, "log", ObjectKind::Log, Rights::LOG, 0),
            (1, "serve:vmx", ObjectKind::Endpoint, Rights::RECEIVE, 0),
            (
                2,
                "call:auth",
                ObjectKind::Endpoint,
                Rights::CALL,
                badge::encode(vmx, 0b1)
            ),
            (
                3,
                "call:storage",
                ObjectKind::Endpoint,
                Rights::CALL,
                badge::encode(vmx, 0b1)
            ),
            (
                4,
                "call:vswitch",
                ObjectKind::Endpoint,
                Rights::CALL,
                badge::encode(vmx, 0b1)
            ),
            (5, "memory:ring-vm1-vswitch", ObjectKind::Memory, ring, 0),
            (
                6,
                "signal:ring-vm1",
                ObjectKind::Notification,
                Rights::SIGNAL,
                0
            ),
        ]
    );
    assert_eq!(
        caps_of(&compiled, "storage"),
        [
            (0, "log", ObjectKind::Log, Rights::LOG, 0),
            (1, "serve:storage", ObjectKind::Endpoint, Rights::RECEIVE, 0),
            (
                2,
                "device:ata0:ioports:0",
                ObjectKind::IoPorts,
                Rights::DEVICE,
                0
            ),
            (
                3,
                "device:ata0:ioports:1",
                ObjectKind::IoPorts,
                Rights::DEVICE,
                0
            ),
            (
                4,
                "device:ata0:irq",
                ObjectKind::Interrupt,
                Rights::DEVICE,
                0
            ),
            (5, "irq:ata0", ObjectKind::Notification, Rights::WAIT, 0),
        ]
    );
}

#[test]
fn the_ata_interrupt_signals_its_notification() {
    let compiled = shipped().compile();
    let kernel = compiled.to_kernel().expect("fits the kernel's limits");
    let interrupt = kernel
        .objects
        .iter()
        .find_map(|o| match o {
            ObjectSpec::Interrupt {
                name: "ata0",
                line,
                notification,
                bit,
            } => Some((*line, *notification, *bit)),
            _ => None,
        })
        .expect("ata0 has an interrupt object");
    assert_eq!((interrupt.0, interrupt.2), (14, 0));
    assert_eq!(
        kernel.objects[usize::from(interrupt.1)],
        ObjectSpec::Notification { name: "irq:ata0" }
    );
    let ports: Vec<_> = kernel
        .objects
        .iter()
        .filter(|o| matches!(o, ObjectSpec::IoPorts { .. }))
        .collect();
    assert_eq!(
        ports,
        [
            &ObjectSpec::IoPorts {
                name: "ata0",
                base: 0x1f0,
                count: 8
            },
            &ObjectSpec::IoPorts {
                name: "ata0",
                base: 0x3f6,
                count: 1
            }
        ]
    );
}

#[test]
fn bundle_round_trips_through_the_kernel_decoder() {
    let manifest = shipped();
    let binaries = fake_binaries(&manifest);
    let bytes = build_bundle(&manifest, &binaries).expect("bundle builds");
    let bundle = Bundle::decode(&bytes).expect("the kernel decodes it");
    let compiled = manifest.compile();
    assert_eq!(bundle.manifest, compiled.to_kernel().expect("fits"));
    for (name, elf) in &binaries {
        assert_eq!(bundle.binary(name), Some(elf.as_slice()), "binary {name}");
    }
}

#[test]
fn a_missing_binary_is_named() {
    let manifest = shipped();
    let mut binaries = fake_binaries(&manifest);
    binaries.retain(|(name, _)| name != "vswitch");
    assert_eq!(
        build_bundle(&manifest, &binaries),
        Err("world \"vswitch\" needs binary \"vswitch\", which was not provided (provided: vmkauthd, storage, hostd, vmx)"
            .to_owned())
    );
}

#[test]
fn an_altered_manifest_compiles_without_panicking() {
    let mut manifest = shipped();
    manifest.channels[0].servers.push("nobody".to_owned());
    manifest.devices[0].holders.push("hostd".to_owned());
    let compiled = manifest.compile();
    let hostd = compiled
        .worlds
        .iter()
        .find(|w| w.name == "hostd")
        .expect("hostd");
    assert!(hostd.caps.iter().any(|c| c.name == "device:ata0:irq"));
}

#[test]
fn grant_gives_a_client_call_and_grant() {
    let text = "[worlds.a]\nbinary = \"a\"\nmemory_kib = 64\n[worlds.b]\nbinary = \"b\"\nmemory_kib = 64\n\
                [worlds.c]\nbinary = \"c\"\nmemory_kib = 64\n\
                [channels.auth]\nserver = \"a\"\nprotocol = \"auth\"\nclients = { b = [\"status\"], c = [\"status\"] }\n\
                grant = [\"b\"]\n";
    let manifest = esker_manifest::parse(text, "system.toml").expect("valid");
    let compiled = manifest.compile();
    let kernel = compiled.to_kernel().expect("compiles");
    let rights_of = |world: &str| {
        let w = kernel
            .worlds
            .iter()
            .find(|w| w.name == world)
            .expect("world");
        w.caps
            .iter()
            .find(|c| c.name == "call:auth")
            .expect("call cap")
            .rights
    };
    assert_eq!(rights_of("b"), Rights::CALL | Rights::GRANT);
    assert_eq!(rights_of("c"), Rights::CALL);
}

#[test]
fn controls_gives_a_world_capability_with_read_and_write() {
    let text = "[worlds.a]\nbinary = \"a\"\nmemory_kib = 64\ncontrols = [\"b\"]\n\
                [worlds.b]\nbinary = \"b\"\nmemory_kib = 64\n";
    let manifest = esker_manifest::parse(text, "system.toml").expect("valid");
    let compiled = manifest.compile();
    let kernel = compiled.to_kernel().expect("compiles");
    let a = kernel
        .worlds
        .iter()
        .find(|w| w.name == "a")
        .expect("world a");
    let cap = a
        .caps
        .iter()
        .find(|c| c.name == "world:b")
        .expect("world:b capability");
    assert_eq!(cap.rights, Rights::READ | Rights::WRITE);
    assert!(matches!(
        kernel.objects[usize::from(cap.object)],
        ObjectSpec::World { name: "b" }
    ));
    let bad = esker_manifest::parse(
        "[worlds.a]\nbinary = \"a\"\nmemory_kib = 64\ncontrols = [\"nobody\"]\n",
        "system.toml",
    )
    .expect_err("unknown world");
    assert_eq!(
        bad[0].to_string(),
        "system.toml:4: world \"a\": controls \"nobody\" is not a declared world"
    );
}
