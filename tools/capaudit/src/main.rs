//! `capaudit`: audits the system manifest's capabilities against the rule file, prints the
//! capability graph and every violation, writes the graph as DOT (and SVG when Graphviz is
//! installed). Exit code 0 when clean, 1 with violations, 2 when an input cannot be read.

use std::path::PathBuf;
use std::process::ExitCode;

use capaudit::{Rules, audit, expected_capabilities, read_elf_dir};
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "capaudit",
    about = "Audit the capabilities of an Esker system manifest"
)]
struct Cli {
    /// The system manifest.
    #[arg(long, default_value = "system.toml")]
    manifest: PathBuf,
    /// The rule file.
    #[arg(long, default_value = "audit.toml")]
    rules: PathBuf,
    /// Directory of the worlds' ELFs (`<world>.elf`, `<binary>.elf` or `<binary>`); enables
    /// the least-privilege check.
    #[arg(long)]
    elf_dir: Option<PathBuf>,
    /// Where to write capabilities.dot (and .svg).
    #[arg(long, default_value = "target/audit")]
    out: PathBuf,
    /// Print only the expected-capability lines (the format the QEMU test compares).
    #[arg(long)]
    expected: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let manifest = match esker_manifest::load(&cli.manifest) {
        Ok(m) => m,
        Err(diagnostics) => return input_error(&diagnostics),
    };
    if cli.expected {
        for line in expected_capabilities(&manifest) {
            println!("{line}");
        }
        return ExitCode::SUCCESS;
    }
    let rules = match Rules::load(&cli.rules, &manifest) {
        Ok(r) => r,
        Err(diagnostics) => return input_error(&diagnostics),
    };
    let elfs = match cli
        .elf_dir
        .as_deref()
        .map(|dir| read_elf_dir(&manifest, dir))
        .transpose()
    {
        Ok(elfs) => elfs,
        Err(e) => {
            eprintln!("capaudit: {e}");
            return ExitCode::from(2);
        }
    };
    let report = audit(&manifest, &rules, elfs.as_ref());
    print!("{}", report.graph_text());
    match report.write_graph(&cli.out) {
        Ok(files) => {
            let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            println!("\ngraph written to {}", names.join(", "));
        }
        Err(e) => eprintln!("capaudit: {e}"),
    }
    let checked = if elfs.is_some() {
        ""
    } else {
        " (least-privilege not checked: no --elf-dir)"
    };
    println!();
    for violation in report.violations() {
        println!("{violation}");
    }
    println!(
        "capaudit: {} violation(s){checked}",
        report.violations().len()
    );
    if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn input_error(diagnostics: &[esker_manifest::Diagnostic]) -> ExitCode {
    for d in diagnostics {
        eprintln!("{d}");
    }
    ExitCode::from(2)
}
