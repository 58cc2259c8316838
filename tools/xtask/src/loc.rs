//! Code lines of the microkernel for `cargo xtask bench`: non-blank, non-comment lines of
//! `.rs` files, without tests.
//!
//! Tests are left out three ways: a file stops counting at its `#[cfg(test)]` inline test
//! module; a module declared as `#[cfg(test)] mod name;` is skipped as a file; and any
//! directory named `tests` (integration tests) or `target` is not entered.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Lines and files counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CodeLines {
    /// `.rs` files counted.
    pub files: usize,
    /// Code lines in them.
    pub lines: usize,
}

/// Counts the code lines of every `.rs` file under `dir`.
pub fn count_tree(dir: &Path) -> Result<CodeLines> {
    let mut files = Vec::new();
    collect_rs_files(dir, &mut files)?;
    files.sort();
    let mut sources = Vec::new();
    let mut test_modules = BTreeSet::new();
    for path in files {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let counted = count_file(&text);
        for module in counted.test_modules {
            test_modules.extend(module_files(&path, &module));
        }
        sources.push((path, counted.lines));
    }
    let mut total = CodeLines::default();
    for (path, lines) in sources {
        if !test_modules.contains(&path) {
            total.files += 1;
            total.lines += lines;
        }
    }
    Ok(total)
}

fn collect_rs_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if name != "tests" && name != "target" && !name.starts_with('.') {
                collect_rs_files(&path, out)?;
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// The files an out-of-line `mod module;` declared in `declaring` may live in.
fn module_files(declaring: &Path, module: &str) -> [PathBuf; 2] {
    let parent = declaring.parent().unwrap_or(Path::new(""));
    let stem = declaring.file_stem().unwrap_or_default();
    let dir = if ["mod", "lib", "main"].iter().any(|s| stem == *s) {
        parent.to_path_buf()
    } else {
        parent.join(stem)
    };
    [
        dir.join(format!("{module}.rs")),
        dir.join(module).join("mod.rs"),
    ]
}

/// What one file contributes.
#[derive(Debug, Default, PartialEq, Eq)]
struct FileCount {
    lines: usize,
    /// Names of `#[cfg(test)] mod name;` declarations (their files are tests).
    test_modules: Vec<String>,
}

/// Counts code lines of one file, up to its inline `#[cfg(test)]` module.
fn count_file(text: &str) -> FileCount {
    let mut count = FileCount::default();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut in_block_comment = false;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        if in_block_comment {
            in_block_comment = !line.contains("*/");
            continue;
        }
        if line.is_empty() || line.starts_with("//") {
            continue;
        }
        if line.starts_with("/*") {
            in_block_comment = !line.contains("*/");
            continue;
        }
        if line == "#[cfg(test)]" {
            let next = lines[i..].iter().find(|l| !l.is_empty()).copied();
            if let Some(module) = next.and_then(module_declaration) {
                match module.strip_suffix(';') {
                    Some(name) => {
                        count.test_modules.push(name.trim().to_string());
                        i += 1; // the declaration is not code either
                        continue;
                    }
                    None => break, // the inline test module runs to the end of the file
                }
            }
        }
        count.lines += 1;
    }
    count
}

/// `mod name {` or `mod name;` (optionally `pub`/`pub(crate)`): the part after `mod `.
fn module_declaration(line: &str) -> Option<&str> {
    let rest = line
        .strip_prefix("pub(crate) ")
        .or_else(|| line.strip_prefix("pub "))
        .unwrap_or(line);
    rest.strip_prefix("mod ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_blank_lines_and_the_test_module_are_not_code() {
        let text = "//! Module doc.\n\
                    \n\
                    /// An item.\n\
                    pub fn f() -> u32 {\n\
                    \x20   /* block\n\
                    \x20      comment */\n\
                    \x20   1 // trailing comment counts as code\n\
                    }\n\
                    #[cfg(test)]\n\
                    use std::vec::Vec;\n\
                    \n\
                    #[cfg(test)]\n\
                    mod tests {\n\
                    \x20   #[test]\n\
                    \x20   fn t() {}\n\
                    }\n";
        let count = count_file(text);
        // fn, `1`, `}`, `#[cfg(test)]` + `use` (a test-only import is not a module).
        assert_eq!(count.lines, 5);
        assert!(count.test_modules.is_empty());
    }

    #[test]
    fn out_of_line_test_modules_are_skipped_as_files() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("paging")).unwrap();
        std::fs::create_dir_all(dir.path().join("tests")).unwrap();
        std::fs::write(src.join("lib.rs"), "mod paging;\nfn a() {}\n").unwrap();
        std::fs::write(
            src.join("paging/mod.rs"),
            "#[cfg(test)]\nmod tests;\nfn b() {}\n",
        )
        .unwrap();
        std::fs::write(src.join("paging/tests.rs"), "fn t() {}\nfn u() {}\n").unwrap();
        std::fs::write(dir.path().join("tests/boot.rs"), "fn it() {}\n").unwrap();
        let count = count_tree(dir.path()).unwrap();
        assert_eq!(count, CodeLines { files: 2, lines: 3 });
    }
}
