//! One small bad manifest per kind of mistake (`tests/fixtures/*.toml`), each asserting the
//! exact diagnostics, line numbers included. Fixtures are read as if they were
//! `system.toml`; limits are tested with generated manifests.

use std::path::Path;

use esker_manifest::parse;

fn diagnostics_of(text: &str) -> Vec<String> {
    match parse(text, "system.toml") {
        Ok(_) => vec!["<accepted>".to_owned()],
        Err(list) => list.iter().map(ToString::to_string).collect(),
    }
}

#[track_caller]
fn check(fixture: &str, expected: &[&str]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(fixture);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(diagnostics_of(&text), expected, "fixture {fixture}");
}

#[test]
fn syntax_error() {
    check(
        "syntax_error.toml",
        &["system.toml:3: string values must be quoted, expected literal string"],
    );
}

#[test]
fn duplicate_world() {
    check(
        "duplicate_world.toml",
        &[
            "system.toml:5: [worlds.vmkauthd] is declared twice (each name may be declared only once)",
        ],
    );
}

#[test]
fn duplicate_holder() {
    check(
        "duplicate_holder.toml",
        &["system.toml:6: device \"ata0\": \"storage\" is listed twice in holders"],
    );
}

#[test]
fn unknown_section() {
    check(
        "unknown_section.toml",
        &[
            "system.toml:5: unknown section \"channel\" (expected one of: worlds, channels, devices, memory, notifications, vms)",
        ],
    );
}

#[test]
fn unknown_key() {
    check(
        "unknown_key.toml",
        &[
            "system.toml:3: world \"vmkauthd\": unknown key memory_mb (expected one of: binary, memory_kib, shares, \
           reservation_mhz, limit_mhz, affinity, coschedule, guest_facing, vm, controls, console)",
        ],
    );
}

#[test]
fn missing_key() {
    check(
        "missing_key.toml",
        &["system.toml:1: world \"vmkauthd\": missing binary"],
    );
}

#[test]
fn wrong_type() {
    check(
        "wrong_type.toml",
        &["system.toml:3: world \"vmkauthd\": memory_kib must be an integer (found a string)"],
    );
}

#[test]
fn bad_name() {
    check(
        "bad_name.toml",
        &[
            "system.toml:1: world \"VmkAuthd\" is not a valid name (use 1 to 32 lowercase letters, digits, '-' or '_')",
        ],
    );
}

#[test]
fn world_memory_not_multiple_of_4() {
    check(
        "world_memory_not_multiple_of_4.toml",
        &["system.toml:3: world \"vmkauthd\": memory_kib = 513 is not a multiple of 4"],
    );
}

#[test]
fn region_size_not_multiple_of_4() {
    check(
        "region_size_not_multiple_of_4.toml",
        &["system.toml:6: memory \"ring\": size_kib = 6 is not a multiple of 4"],
    );
}

#[test]
fn unknown_server() {
    check(
        "unknown_server.toml",
        &["system.toml:14: channel \"auth\": server \"vmkauthdd\" is not a declared world"],
    );
}

#[test]
fn unknown_client() {
    check(
        "unknown_client.toml",
        &["system.toml:8: channel \"auth\": client \"hostdd\" is not a declared world"],
    );
}

#[test]
fn unknown_protocol() {
    check(
        "unknown_protocol.toml",
        &[
            "system.toml:7: channel \"auth\": unknown protocol \"authentication\" (known: auth, storage, vswitch, hostd, vmx)",
        ],
    );
}

#[test]
fn unknown_operation() {
    check(
        "unknown_operation.toml",
        &[
            "system.toml:14: channel \"auth\": client \"vmx\" is given operation \"issue_tiket\", which protocol \"auth\" \
           does not have (it has: status, issue_ticket, verify_ticket)",
        ],
    );
}

#[test]
fn channel_without_server() {
    check(
        "no_server.toml",
        &["system.toml:5: channel \"auth\" has no server (set server = \"<world>\")"],
    );
}

#[test]
fn server_is_also_client() {
    check(
        "server_is_client.toml",
        &["system.toml:8: channel \"auth\": world \"vmkauthd\" is both its server and a client"],
    );
}

#[test]
fn client_without_operations() {
    check(
        "client_without_operations.toml",
        &["system.toml:12: channel \"auth\": client \"hostd\" is given no operations"],
    );
}

#[test]
fn unknown_right() {
    check(
        "unknown_right.toml",
        &[
            "system.toml:7: memory \"ring\": unknown right \"wirte\" given to world \"vmx\" (memory rights: read, write, \
           execute, grant, map)",
        ],
    );
}

#[test]
fn right_that_does_not_apply_to_memory() {
    check(
        "right_not_for_memory.toml",
        &[
            "system.toml:7: memory \"ring\": right \"call\" (given to world \"vmx\") does not apply to memory (memory \
           rights: read, write, execute, grant, map)",
        ],
    );
}

#[test]
fn memory_shared_with_no_world() {
    check(
        "memory_not_shared.toml",
        &[
            "system.toml:5: memory \"ring\" is shared with no world (add shared = { <world> = [<rights>] })",
        ],
    );
}

#[test]
fn guest_facing_world_without_vm() {
    check(
        "guest_facing_without_vm.toml",
        &[
            "system.toml:1: world \"vmx\": a guest-facing world must name the VM it monitors (vm = \"<name>\")",
        ],
    );
}

#[test]
fn limit_below_reservation() {
    check(
        "limit_below_reservation.toml",
        &["system.toml:5: world \"vmx\": limit_mhz = 100 is below reservation_mhz = 500"],
    );
}

#[test]
fn cpu_out_of_range() {
    check(
        "bad_affinity.toml",
        &["system.toml:4: world \"vmx\": CPU 64 in affinity does not exist (CPUs are 0..=63)"],
    );
}

#[test]
fn overlapping_ports() {
    check(
        "overlapping_ports.toml",
        &[
            "system.toml:11: device \"ata1\": ports 0x1f6..=0x1f7 overlap 0x1f0..=0x1f7 of device \"ata0\"",
        ],
    );
}

#[test]
fn interrupt_used_twice() {
    check(
        "shared_interrupt.toml",
        &["system.toml:11: device \"ata1\": interrupt 14 is already used by device \"ata0\""],
    );
}

#[test]
fn unaligned_mmio() {
    check(
        "unaligned_mmio.toml",
        &["system.toml:7: device \"nic0\": mmio: phys and size must be multiples of 4096"],
    );
}

#[test]
fn device_without_hardware() {
    check(
        "device_without_hardware.toml",
        &["system.toml:5: device \"ata0\" grants no hardware (give it ioports, mmio or interrupt)"],
    );
}

#[test]
fn notification_without_waiter() {
    check(
        "notification_without_waiter.toml",
        &[
            "system.toml:5: notification \"ring\": missing waiter",
            "system.toml:6: notification \"ring\": signaller \"vswitch\" is not a declared world",
        ],
    );
}

#[test]
fn no_worlds() {
    check(
        "no_worlds.toml",
        &["system.toml:1: the manifest declares no worlds (add a [worlds.<name>] table)"],
    );
}

#[test]
fn every_error_is_reported_in_line_order() {
    check(
        "every_error_reported.toml",
        &[
            "system.toml:3: world \"vmkauthd\": memory_kib = 510 is not a multiple of 4",
            "system.toml:6: channel \"auth\": server \"vmkauthdd\" is not a declared world",
            "system.toml:8: channel \"auth\": client \"hostd\" is not a declared world",
            "system.toml:12: memory \"ring\": unknown right \"fly\" given to world \"vmkauthd\" (memory rights: read, \
             write, execute, grant, map)",
        ],
    );
}

#[test]
fn interrupt_notification_name_too_long() {
    check(
        "long_interrupt_device_name.toml",
        &[
            "system.toml:5: device \"ata0-primary-channel-controller\": kernel object name \
           \"irq:ata0-primary-channel-controller\" is longer than the kernel's 32 bytes",
        ],
    );
}

/// `count` worlds named w0.. with one binary each, plus `extra` appended verbatim.
fn generated(count: usize, extra: &str) -> String {
    let mut text = String::new();
    for i in 0..count {
        text += &format!("[worlds.w{i}]\nbinary = \"w{i}\"\nmemory_kib = 4\n\n");
    }
    text + extra
}

#[test]
fn too_many_worlds() {
    // World 17 (w16) starts on line 16 * 4 + 1.
    assert_eq!(
        diagnostics_of(&generated(17, "")),
        [
            "system.toml:65: world \"w16\" is world number 17; the kernel creates at most 16 worlds (MAX_WORLDS)"
        ]
    );
}

#[test]
fn too_many_objects() {
    // 3 logs + 62 notifications (spread over the worlds, so none holds too many
    // capabilities): n61, on line 13 + 61 * 2, is object 65.
    let mut extra = String::new();
    for i in 0..62 {
        extra += &format!("[notifications.n{i}]\nwaiter = \"w{}\"\n", i % 3);
    }
    assert_eq!(
        diagnostics_of(&generated(3, &extra)),
        [
            "system.toml:135: notification \"n61\" needs kernel object number 65; the kernel creates at most 64 objects \
          (MAX_OBJECTS)"
        ]
    );
}

#[test]
fn too_many_capabilities() {
    // log + 32 wait capabilities = 33.
    let mut extra = String::new();
    for i in 0..32 {
        extra += &format!("[notifications.n{i}]\nwaiter = \"w0\"\n");
    }
    assert_eq!(
        diagnostics_of(&generated(1, &extra)),
        [
            "system.toml:1: world \"w0\" would hold 33 capabilities; the kernel installs at most 32 per world \
          (MAX_WORLD_CAPS)"
        ]
    );
}

#[test]
fn an_unreadable_file_is_named() {
    let missing = Path::new("no/such/system.toml");
    let errors = esker_manifest::load(missing).expect_err("a missing file must fail");
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .to_string()
            .starts_with("no/such/system.toml: cannot read the manifest: "),
        "{}",
        errors[0]
    );
}

#[test]
fn grant_to_a_world_that_is_not_a_client() {
    check(
        "grant_to_non_client.toml",
        &[
            "system.toml:13: channel \"auth\": grant names \"vmkauthd\", which is not one of its clients",
        ],
    );
}

#[test]
fn vm_errors() {
    check(
        "vm_errors.toml",
        &[
            "system.toml:9: vm \"b\": memory_mb = 4096 is out of range (1..=3072)",
            "system.toml:12: vm \"c\": monitor \"nobody\" is not a declared world",
        ],
    );
}

#[test]
fn two_consoles() {
    check(
        "two_consoles.toml",
        &["system.toml:6: console = true is set for 2 worlds (a, b); the host console goes to one"],
    );
}

#[test]
fn coschedule_is_a_boolean_and_defaults_to_on() {
    let world = |extra: &str| format!("[worlds.vmx]\nbinary = \"vmx\"\nmemory_kib = 2048\n{extra}");
    let coschedule = |text: &str| {
        parse(text, "system.toml")
            .map(|manifest| manifest.worlds[0].sched.coschedule)
            .map_err(|list| list.iter().map(ToString::to_string).collect::<Vec<_>>())
    };
    assert_eq!(coschedule(&world("")), Ok(true));
    assert_eq!(coschedule(&world("coschedule = false\n")), Ok(false));
    let wrong = diagnostics_of(&world("coschedule = \"off\"\n"));
    assert_eq!(wrong.len(), 1, "{wrong:?}");
    assert!(
        wrong[0].starts_with("system.toml:4: ") && wrong[0].contains("coschedule"),
        "{wrong:?}"
    );
}
