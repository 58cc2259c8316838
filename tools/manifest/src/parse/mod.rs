//! From `system.toml` text to a checked [`Manifest`].
//!
//! The document is read section by section — worlds first, so that every later reference
//! can be resolved — and every problem is reported, each at the line of the value it is
//! about. The per-section readers live in the submodules; this one owns the document
//! shape, names, and the world references all sections share. After reading, the manifest
//! is compiled once and the kernel's limits are checked against the result.

mod channels;
mod devices;
mod memory;
mod vms;
mod worlds;

use crate::diagnostic::{Diagnostic, Diagnostics, Source};
use crate::limits;
use crate::model::Manifest;
use crate::toml_read::{
    DeTable, DeValue, Entry, Fields, Located, Spanned, entries, parse_document,
};

/// The top-level sections, in reading order.
const SECTIONS: [&str; 6] = [
    "worlds",
    "channels",
    "devices",
    "memory",
    "notifications",
    "vms",
];

/// Longest name of a world, channel, device, region, notification, binary or VM.
pub const MAX_NAME_LEN: usize = 32;

/// Reads and checks a manifest; `file` names it in diagnostics.
pub fn parse(text: &str, file: &str) -> Result<Manifest, Vec<Diagnostic>> {
    let mut diags = Diagnostics::new(Source { file, text });
    let Some(document) = parse_document(&mut diags, text) else {
        return Err(diags.into_sorted());
    };
    let mut manifest = Manifest {
        file: file.to_owned(),
        worlds: Vec::new(),
        channels: Vec::new(),
        devices: Vec::new(),
        memory: Vec::new(),
        notifications: Vec::new(),
        vms: Vec::new(),
    };
    for (key, _) in entries(&document) {
        if !SECTIONS.contains(&key.value) {
            diags.error(
                &key.span,
                format!(
                    "unknown section \"{}\" (expected one of: {})",
                    key.value,
                    SECTIONS.join(", ")
                ),
            );
        }
    }
    let world_entries = section(&mut diags, &document, "worlds");
    let world_names = world_entries
        .iter()
        .map(|(k, _)| k.value.to_owned())
        .collect();
    let mut cx = Context { diags, world_names };
    for (name, value) in world_entries {
        if let Some(world) = worlds::read(&mut cx, name, value) {
            manifest.worlds.push(world);
        }
    }
    if cx.world_names.is_empty() {
        cx.diags.error_at_line(
            1,
            "the manifest declares no worlds (add a [worlds.<name>] table)",
        );
    }
    for (name, value) in section(&mut cx.diags, &document, "channels") {
        if let Some(channel) = channels::read(&mut cx, name, value) {
            manifest.channels.push(channel);
        }
    }
    let mut claimed = devices::Claimed::default();
    for (name, value) in section(&mut cx.diags, &document, "devices") {
        if let Some(device) = devices::read(&mut cx, &mut claimed, name, value) {
            manifest.devices.push(device);
        }
    }
    for (name, value) in section(&mut cx.diags, &document, "memory") {
        if let Some(region) = memory::read_region(&mut cx, name, value) {
            manifest.memory.push(region);
        }
    }
    for (name, value) in section(&mut cx.diags, &document, "notifications") {
        if let Some(notification) = memory::read_notification(&mut cx, name, value) {
            manifest.notifications.push(notification);
        }
    }
    let consoles: Vec<&str> = manifest
        .worlds
        .iter()
        .filter(|w| w.console)
        .map(|w| w.name.as_str())
        .collect();
    if consoles.len() > 1 {
        let line = manifest
            .worlds
            .iter()
            .filter(|w| w.console)
            .nth(1)
            .map_or(1, |w| w.line);
        cx.diags.error_at_line(
            line,
            format!(
                "console = true is set for {} worlds ({}); the host console goes to one",
                consoles.len(),
                consoles.join(", ")
            ),
        );
    }
    for (name, value) in section(&mut cx.diags, &document, "vms") {
        if let Some(vm) = vms::read(&mut cx, name, value) {
            if let Some(monitor) = manifest.world(&vm.monitor)
                && monitor.vm.as_deref() != Some(vm.name.as_str())
            {
                cx.diags.error_at_line(
                    vm.line,
                    format!(
                        "vm \"{}\": its monitor, world \"{}\", must declare guest_facing = true and vm = \"{}\"",
                        vm.name, vm.monitor, vm.name
                    ),
                );
            }
            if manifest.vms.iter().any(|other| other.monitor == vm.monitor) {
                cx.diags.error_at_line(
                    vm.line,
                    format!(
                        "vm \"{}\": world \"{}\" already monitors another VM (one monitor world per VM)",
                        vm.name, vm.monitor
                    ),
                );
            }
            manifest.vms.push(vm);
        }
    }
    if cx.diags.is_empty() {
        limits::check(&manifest, &mut cx.diags);
    }
    if cx.diags.is_empty() {
        Ok(manifest)
    } else {
        Err(cx.diags.into_sorted())
    }
}

/// What every section reader needs: the diagnostics and the declared world names.
pub(crate) struct Context<'s> {
    pub(crate) diags: Diagnostics<'s>,
    /// Every key under `[worlds]`, even of worlds with errors (so that one mistake in a
    /// world does not also make every reference to it an error).
    pub(crate) world_names: Vec<String>,
}

impl Context<'_> {
    /// Reports a reference to an undeclared world; returns whether it resolves.
    pub(crate) fn world_ref(&mut self, what: &str, role: &str, name: &Located<String>) -> bool {
        let known = self.world_names.contains(&name.value);
        if !known {
            self.diags.error(
                &name.span,
                format!("{what}: {role} \"{}\" is not a declared world", name.value),
            );
        }
        known
    }

    /// Starts reading the declaration `kind "name"`, checking its name.
    pub(crate) fn declaration<'t, 'i>(
        &mut self,
        kind: &str,
        name: &Located<&str>,
        value: &'t Spanned<DeValue<'i>>,
    ) -> Option<Fields<'t, 'i>> {
        let what = format!("{kind} \"{}\"", name.value);
        if !is_valid_name(name.value) {
            self.diags.error(
                &name.span,
                format!("{what} is not a valid name ({NAME_RULE})"),
            );
        }
        Fields::new(&mut self.diags, what, name.span.clone(), value)
    }

    /// How many problems were recorded so far (to tell whether a declaration had any).
    pub(crate) fn diags_len(&self) -> usize {
        self.diags.len()
    }

    /// The line of a span.
    pub(crate) fn line(&self, span: &std::ops::Range<usize>) -> usize {
        self.diags.source().line(span)
    }
}

/// The entries of a top-level section (empty if absent; reported if not a table).
fn section<'t, 'i>(
    diags: &mut Diagnostics<'_>,
    document: &'t DeTable<'i>,
    name: &str,
) -> Vec<Entry<'t, 'i>> {
    let Some(value) = document.get(name) else {
        return Vec::new();
    };
    match value.get_ref() {
        DeValue::Table(table) => entries(table),
        _ => {
            diags.error(
                &value.span(),
                format!("{name} must be a table of named declarations ([{name}.<name>])"),
            );
            Vec::new()
        }
    }
}

/// Reports a malformed name; returns whether it is well formed.
pub(crate) fn check_name(
    diags: &mut Diagnostics<'_>,
    what: &str,
    role: &str,
    name: &Located<String>,
) -> bool {
    let ok = is_valid_name(&name.value);
    if !ok {
        diags.error(
            &name.span,
            format!(
                "{what}: {role} \"{}\" is not a valid name ({NAME_RULE})",
                name.value
            ),
        );
    }
    ok
}

/// What a valid name is, for messages.
const NAME_RULE: &str = "use 1 to 32 lowercase letters, digits, '-' or '_'";
const _: () = assert!(MAX_NAME_LEN == 32, "NAME_RULE spells the limit out");

/// Whether `name` is 1..=32 of `[a-z0-9_-]`, starting with a letter or digit.
pub fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_')
}

#[cfg(test)]
mod tests {
    use super::is_valid_name;

    #[test]
    fn names_are_short_lowercase_identifiers() {
        for good in ["vmx", "ring-vm1", "ata_0", "0", &"a".repeat(32)] {
            assert!(is_valid_name(good), "{good}");
        }
        for bad in [
            "",
            "Vmx",
            "-x",
            "_x",
            "a b",
            "irq:ata0",
            "é",
            &"a".repeat(33),
        ] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }
}
