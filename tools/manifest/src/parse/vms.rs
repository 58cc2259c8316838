//! Reading `[vms.<name>]` tables: a virtual machine, the world that monitors it, its RAM,
//! its vCPUs and the package (configuration, kernel, initrd) its monitor loads.

use super::{Context, check_name, worlds::narrow};
use crate::model::Vm;
use crate::toml_read::{DeValue, Located, Spanned};

const KEYS: [&str; 4] = ["monitor", "memory_mb", "vcpus", "package"];

/// Most guest RAM a VM may ask for, in MiB (guest RAM sits below the 3 GiB PCI hole).
pub const MAX_MEMORY_MB: u64 = 3072;
/// Most vCPUs a VM may have.
pub const MAX_VCPUS: u64 = 16;

/// Reads a VM; `None` (with diagnostics) if anything is wrong.
pub(super) fn read(
    cx: &mut Context<'_>,
    name: Located<&str>,
    value: &Spanned<DeValue<'_>>,
) -> Option<Vm> {
    let fields = cx.declaration("vm", &name, value)?;
    let errors_before = cx.diags_len();
    fields.only(&mut cx.diags, &KEYS);
    let what = fields.what().to_owned();

    let monitor = fields.required_string(&mut cx.diags, "monitor");
    if let Some(monitor) = &monitor {
        cx.world_ref(&what, "monitor", monitor);
    }
    let memory_mb = fields.required_integer(&mut cx.diags, "memory_mb", 1..=MAX_MEMORY_MB);
    let vcpus = fields.integer(&mut cx.diags, "vcpus", 1..=MAX_VCPUS);
    let package = fields.string(&mut cx.diags, "package");
    if let Some(package) = &package {
        check_name(&mut cx.diags, &what, "package", package);
    }
    if cx.diags_len() != errors_before {
        return None;
    }
    Some(Vm {
        name: name.value.to_owned(),
        monitor: monitor?.value,
        memory_mb: narrow(memory_mb?.value),
        vcpus: vcpus.map_or(1, |v| narrow(v.value)),
        package: package.map(|p| p.value),
        line: cx.line(&name.span),
    })
}
