//! Where the workspace is and how nested `cargo` commands are started from it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest_dir.join("../..");
        root.canonicalize().unwrap_or(root)
    })
}

/// `<workspace>/target`, where images, captures and bench results go.
pub fn target_dir() -> PathBuf {
    workspace_root().join("target")
}

/// A `cargo` command run from the workspace root, with the same cargo that runs us.
pub fn command() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(workspace_root());
    command
}

/// The command as one line for printing (the program by its file name only).
pub fn describe(command: &Command) -> String {
    let program = Path::new(command.get_program());
    std::iter::once(program.file_name().unwrap_or(program.as_os_str()))
        .chain(command.get_args())
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A path relative to the workspace root when it is inside it (for shorter messages).
pub fn display(path: &Path) -> String {
    path.strip_prefix(workspace_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Runs a `cargo build` (it must not yet have `--message-format`), showing cargo's
/// progress and diagnostics as usual, and returns its exit status and every executable it
/// reported as `(target name, path)`.
pub fn build_executables(
    mut command: Command,
    label: &str,
) -> std::io::Result<(std::process::ExitStatus, Vec<(String, PathBuf)>)> {
    use std::io::BufRead;
    command.arg("--message-format=json-render-diagnostics");
    println!("{label}: {}", describe(&command));
    let mut child = command.stdout(std::process::Stdio::piped()).spawn()?;
    let mut executables = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line?;
            let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
                println!("{line}");
                continue;
            };
            if message["reason"] != "compiler-artifact" {
                continue;
            }
            if let (Some(target), Some(path)) = (
                message["target"]["name"].as_str(),
                message["executable"].as_str(),
            ) {
                executables.push((target.to_owned(), PathBuf::from(path)));
            }
        }
    }
    Ok((child.wait()?, executables))
}
