//! `cargo xtask audit`: the capability-policy audit of the shipped system, against the
//! world programs as built (so least-privilege compares the grants with what each
//! program declares it uses).

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::cargo;
use crate::image::{self, Flavor};
use crate::worlds;

/// The rule file next to the manifest.
pub fn default_rules() -> std::path::PathBuf {
    cargo::workspace_root().join("audit.toml")
}

/// Builds the worlds of `manifest` into the normal image directory and audits them with
/// `rules`, printing the graph and every violation. Fails if there is any violation.
pub fn run(manifest: &Path, rules: &Path) -> Result<()> {
    let dir = Flavor::Normal.image_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    worlds::build_bundle(manifest, &dir)?;
    audit_built(
        manifest,
        rules,
        &dir.join(esker_logdecode::WORLDS_DIR),
        true,
    )
}

/// Audits `manifest` against the ELFs in `elf_dir`.
pub fn audit_built(manifest: &Path, rules: &Path, elf_dir: &Path, print_graph: bool) -> Result<()> {
    let model = worlds::load_manifest(manifest)?;
    let rules = capaudit::Rules::load(rules, &model).map_err(|diagnostics| {
        let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("the rule file has errors:\n  {}", lines.join("\n  "))
    })?;
    let elfs = capaudit::read_elf_dir(&model, elf_dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    let report = capaudit::audit(&model, &rules, Some(&elfs));
    if print_graph {
        println!("{}", report.graph_text());
    }
    let out = cargo::target_dir().join("audit");
    match report.write_graph(&out) {
        Ok(paths) => {
            for path in paths {
                println!("audit: wrote {}", cargo::display(&path));
            }
        }
        Err(e) => println!("audit: could not write the graph: {e}"),
    }
    for violation in report.violations() {
        println!("{violation}");
    }
    if !report.is_clean() {
        bail!(
            "{} capability-policy violation(s) in {}",
            report.violations().len(),
            cargo::display(manifest)
        );
    }
    println!(
        "audit: {} passes every rule (least-privilege checked against the built programs)",
        cargo::display(manifest)
    );
    Ok(())
}

/// The manifest `cargo xtask audit` uses by default.
pub fn default_manifest() -> std::path::PathBuf {
    image::default_manifest()
}
