//! `cargo xtask test`: every check the project has, in order, with one summary line.
//!
//! Steps: host packages, `cargo fmt --check`, clippy on the host and on the kernel target
//! (normal and self-test features), host unit tests, both images, then the QEMU tests.
//! Each test counts once (read from libtest's `test result:` lines); each fmt, lint and
//! build step counts once. A failed step does not stop the later ones unless they need
//! what it should have produced. `-D warnings` reaches clippy only through its own
//! arguments, so the build cache is the same as for plain builds.

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};

use anyhow::Result;

use crate::cargo;
use crate::host::{self, Host};
use crate::image::{self, Flavor, KERNEL_PACKAGE, KERNEL_TARGET};

/// The QEMU test package (run last, against the built images).
const QEMU_TESTS_PACKAGE: &str = "esker-qemu-tests";

/// Passed and failed counts, and the names of what failed.
#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
    failures: Vec<String>,
}

impl Tally {
    fn step(&mut self, name: &str, ok: bool) -> bool {
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
            self.failures.push(name.to_string());
        }
        ok
    }
}

/// Runs the whole suite.
pub fn run() -> Result<ExitCode> {
    let mut tally = Tally::default();
    let total_steps = 8;
    let mut header = {
        let mut n = 0;
        move |title: &str| {
            n += 1;
            println!("\n==> [{n}/{total_steps}] {title}");
        }
    };

    header("host packages");
    let host = match host::ensure_packages() {
        Ok(host) => Some(host),
        Err(err) => {
            eprintln!("error: {err:#}");
            None
        }
    };
    tally.step("host packages", host.is_some());

    header("cargo fmt --all --check");
    let ok = run_step(cargo_cmd(&["fmt", "--all", "--check"]));
    tally.step("fmt", ok);

    header("clippy (host, kernel, kernel with selftest)");
    let ok = run_step(cargo_cmd(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]));
    tally.step("clippy (host workspace)", ok);
    for (name, features) in [
        ("clippy (kernel)", None),
        ("clippy (kernel, selftest)", Some("selftest")),
    ] {
        let mut args = vec![
            "clippy",
            "--package",
            KERNEL_PACKAGE,
            "--target",
            KERNEL_TARGET,
        ];
        if let Some(features) = features {
            args.extend(["--features", features]);
        }
        args.extend(["--", "-D", "warnings"]);
        let ok = run_step(cargo_cmd(&args));
        tally.step(name, ok);
    }
    let mut args = vec!["clippy", "--target", KERNEL_TARGET];
    for package in crate::worlds::WORLD_PACKAGES {
        args.extend(["--package", package]);
    }
    args.extend(["--", "-D", "warnings"]);
    let ok = run_step(cargo_cmd(&args));
    tally.step("clippy (user worlds, bare metal)", ok);

    header("host unit tests");
    run_tests(
        &mut tally,
        "host unit tests",
        cargo_cmd(&[
            "test",
            "--workspace",
            "--exclude",
            QEMU_TESTS_PACKAGE,
            "--no-fail-fast",
        ]),
    );

    header("images (normal and selftest)");
    let images_ok = match &host {
        Some(host) => build_images(&mut tally, host),
        None => {
            println!("skipped: the host packages are missing");
            tally.step("images (host packages missing)", false);
            false
        }
    };

    header("capability audit (system.toml against the built worlds)");
    if images_ok {
        let elf_dir = Flavor::Normal.image_dir().join(esker_logdecode::WORLDS_DIR);
        let ok = match crate::audit::audit_built(
            &image::default_manifest(),
            &crate::audit::default_rules(),
            &elf_dir,
            false,
        ) {
            Ok(()) => true,
            Err(err) => {
                eprintln!("error: {err:#}");
                false
            }
        };
        tally.step("capability audit", ok);
    } else {
        println!("not run: the images were not built");
        tally.step("capability audit (not run, no images)", false);
    }

    header("QEMU tests");
    if images_ok {
        let mut command = cargo_cmd(&[
            "test",
            "--package",
            QEMU_TESTS_PACKAGE,
            "--no-fail-fast",
            "--",
            "--test-threads=2",
        ]);
        command
            .env("ESKER_IMAGE_DIR", Flavor::Normal.image_dir())
            .env("ESKER_SELFTEST_IMAGE_DIR", Flavor::Selftest.image_dir())
            .env("ESKER_TEST_IMAGES_DIR", test_images_dir());
        run_tests(&mut tally, "QEMU tests", command);
    } else {
        println!("not run: the images were not built");
        tally.step("QEMU tests (not run, no images)", false);
    }

    println!();
    for failure in &tally.failures {
        println!("FAILED: {failure}");
    }
    println!("{} passed, {} failed", tally.passed, tally.failed);
    Ok(if tally.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn build_images(tally: &mut Tally, host: &Host) -> bool {
    let mut all = true;
    for (name, flavor) in [
        ("image (normal)", Flavor::Normal),
        ("image (selftest)", Flavor::Selftest),
    ] {
        let ok = match image::build(host, flavor) {
            Ok(_) => true,
            Err(err) => {
                eprintln!("error: {err:#}");
                false
            }
        };
        all &= tally.step(name, ok);
    }
    for manifest in test_manifests() {
        let stem = manifest
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = test_images_dir().join(&stem);
        let ok = match image::build_with(host, Flavor::Normal, &manifest, &dir) {
            Ok(_) => true,
            Err(err) => {
                eprintln!("error: {err:#}");
                false
            }
        };
        all &= tally.step(&format!("image (test: {stem})"), ok);
    }
    all &= build_vm_images(tally, host);
    all
}

/// Builds the test guest and one image per VM scenario (`qemu-tests/vms/<scenario>/`) into
/// `target/image-test/vm-<scenario>`.
fn build_vm_images(tally: &mut Tally, host: &Host) -> bool {
    let guest = match crate::guest::build_testguest().map_err(|e| anyhow::anyhow!("{e}")) {
        Ok(path) => path,
        Err(err) => {
            eprintln!("error: {err:#}");
            tally.step("test guest", false);
            return false;
        }
    };
    let mut all = tally.step("test guest", true);
    let root = cargo::workspace_root().join("qemu-tests/vms");
    let mut scenarios: Vec<_> = std::fs::read_dir(&root)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    scenarios.sort();
    for scenario in scenarios {
        let stem = scenario
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = test_images_dir().join(format!("vm-{stem}"));
        let ok = match build_vm_image(host, &guest, &scenario, &dir) {
            Ok(()) => true,
            Err(err) => {
                eprintln!("error: {err:#}");
                false
            }
        };
        all &= tally.step(&format!("image (vm scenario: {stem})"), ok);
    }
    // Debian's Linux guest (downloaded with apt-get the first time).
    let linux = crate::guest::linux(&crate::guest::default_linux_dir())
        .map_err(|e| anyhow::anyhow!("{e}"))
        .and_then(|config| {
            // The one-vCPU guest, and the same kernel on several vCPUs.
            for (file, image_dir) in [
                (config.clone(), "vm-linux"),
                (
                    config.with_file_name(crate::guest::LINUX_SMP_CONFIG),
                    "vm-linux-smp",
                ),
            ] {
                let vm = crate::vms::load(&file)?;
                let dir = test_images_dir().join(image_dir);
                let manifest = crate::vms::write_manifest(&image::default_manifest(), &[vm], &dir)?;
                image::build_with(host, Flavor::Normal, &manifest, &dir)?;
            }
            Ok(())
        });
    if let Err(err) = &linux {
        eprintln!("error: {err:#}");
    }
    all &= tally.step("image (vm scenario: linux)", linux.is_ok());
    all
}

fn build_vm_image(
    host: &Host,
    guest: &std::path::Path,
    scenario: &std::path::Path,
    dir: &std::path::Path,
) -> Result<()> {
    use anyhow::Context as _;
    let files = dir.join("files");
    std::fs::create_dir_all(&files)
        .with_context(|| format!("cannot create {}", files.display()))?;
    let bytes = std::fs::read(guest).with_context(|| format!("cannot read {}", guest.display()))?;
    std::fs::write(files.join("testguest.elf"), &bytes)?;
    std::fs::write(files.join("truncated.elf"), &bytes[..bytes.len().min(3000)])?;
    let mut configs: Vec<_> = std::fs::read_dir(scenario)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    configs.sort();
    let mut vms = Vec::new();
    for config in configs {
        let copy = files.join(config.file_name().unwrap_or_default());
        std::fs::copy(&config, &copy)
            .with_context(|| format!("cannot copy {}", config.display()))?;
        vms.push(crate::vms::load(&copy)?);
    }
    let manifest = crate::vms::write_manifest(&image::default_manifest(), &vms, dir)?;
    image::build_with(host, Flavor::Normal, &manifest, dir)?;
    Ok(())
}

/// Where the test manifests' images go: `target/image-test/<manifest stem>`.
pub fn test_images_dir() -> std::path::PathBuf {
    cargo::target_dir().join("image-test")
}

/// The test manifests, `qemu-tests/manifests/*.toml`, sorted.
fn test_manifests() -> Vec<std::path::PathBuf> {
    let dir = cargo::workspace_root().join("qemu-tests/manifests");
    let mut found: Vec<_> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

fn cargo_cmd(args: &[&str]) -> Command {
    let mut command = cargo::command();
    command.args(args);
    command
}

/// Runs a step's command with inherited output; true if it succeeded.
fn run_step(mut command: Command) -> bool {
    println!("$ {}", cargo::describe(&command));
    match command.status() {
        Ok(status) => status.success(),
        Err(err) => {
            eprintln!("error: cannot run `{}`: {err}", cargo::describe(&command));
            false
        }
    }
}

/// Runs `cargo test`, streaming its output, and adds its individual test counts. A run
/// that fails without any failed test (a build error, a crashed test binary) counts as
/// one failure of its own.
fn run_tests(tally: &mut Tally, name: &str, mut command: Command) {
    println!("$ {}", cargo::describe(&command));
    let mut child = match command.stdout(Stdio::piped()).spawn() {
        Ok(child) => child,
        Err(err) => {
            eprintln!("error: cannot run cargo: {err}");
            tally.step(name, false);
            return;
        }
    };
    let mut counts = TestCounts::default();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("{line}");
            counts.add_line(&line);
        }
    }
    let success = child.wait().is_ok_and(|status| status.success());
    tally.passed += counts.passed;
    tally.failed += counts.failed;
    if counts.failed > 0 {
        tally
            .failures
            .push(format!("{name}: {} failed tests", counts.failed));
    }
    if !success && counts.failed == 0 {
        tally.step(
            &format!("{name} (cargo test failed outside any test)"),
            false,
        );
    }
}

/// Sums of libtest's `test result:` lines.
#[derive(Debug, Default, PartialEq, Eq)]
struct TestCounts {
    passed: usize,
    failed: usize,
}

impl TestCounts {
    /// Adds `test result: ok. 12 passed; 0 failed; ...` (or `FAILED.`) if `line` is one.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        let number_before = |word: &str| -> Option<usize> {
            rest.split(';')
                .map(str::trim)
                .find_map(|part| part.strip_suffix(word))
                .and_then(|n| n.trim().rsplit(' ').next())
                .and_then(|n| n.parse().ok())
        };
        if let (Some(passed), Some(failed)) = (number_before(" passed"), number_before(" failed")) {
            self.passed += passed;
            self.failed += failed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_summaries_are_summed() {
        let mut counts = TestCounts::default();
        for line in [
            "running 3 tests",
            "test a ... ok",
            "test result: ok. 12 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.27s",
            "test result: FAILED. 9 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.10s",
            "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s",
            "the test result: is not at the start",
        ] {
            counts.add_line(line);
        }
        assert_eq!(
            counts,
            TestCounts {
                passed: 21,
                failed: 1
            }
        );
    }

    #[test]
    fn steps_count_once() {
        let mut tally = Tally::default();
        assert!(tally.step("fmt", true));
        assert!(!tally.step("clippy", false));
        assert_eq!((tally.passed, tally.failed), (1, 1));
        assert_eq!(tally.failures, ["clippy"]);
    }
}
