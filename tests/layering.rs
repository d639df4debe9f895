//! The crate's layering (issue 20): every module uses only the modules `src/lib.rs`'s table
//! allows it, read from every `crate::` path in its source — `use` lines and paths written in
//! code alike — so the shape cannot close into a circle again unnoticed. Test modules
//! (`#[cfg(test)]` to the end of a file, and `*_tests.rs` files) may reach further up; comments
//! are not read.
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The table in `src/lib.rs`: module → the modules it may use.
fn table(lib: &str) -> BTreeMap<String, BTreeSet<String>> {
    let names = |cell: &str| -> BTreeSet<String> {
        cell.split(',')
            .map(|n| n.trim().trim_matches('`').to_owned())
            .filter(|n| !n.is_empty() && n != "—")
            .collect()
    };
    lib.lines()
        .filter_map(|l| l.strip_prefix("//! | `"))
        .map(|row| {
            let cells: Vec<&str> = row.split('|').collect();
            (
                cells[0].trim().trim_end_matches('`').to_owned(),
                names(cells[1]),
            )
        })
        .collect()
}

/// The top-level module a source file belongs to (`None`: the crate root or a binary).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    match first.as_str() {
        "lib.rs" | "bin" => None,
        name => Some(name.trim_end_matches(".rs").to_owned()),
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            // Unit tests kept beside the code they test (`#[path = "x_tests.rs"] mod tests;`).
            && !path.to_string_lossy().ends_with("_tests.rs")
        {
            out.push(path);
        }
    }
}

/// The production part of a file: its test module and comments left out.
fn production(text: &str) -> String {
    let end = text
        .match_indices("#[cfg(test)]\n")
        .map(|(at, m)| (at, text[at + m.len()..].trim_start()))
        .find(|(_, next)| {
            ["mod ", "pub mod ", "pub(crate) mod "]
                .iter()
                .any(|p| next.starts_with(p))
        })
        .map_or(text.len(), |(at, _)| at);
    text[..end]
        .lines()
        .map(|l| match l.find("//") {
            // A `//` inside a string literal is rare in this crate and never near `crate::`.
            Some(at) => &l[..at],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first path segment of every `crate::` path in `code`, with its line number; a group
/// `crate::{a::X, b}` gives each of its members.
fn crate_paths(code: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, _) in code.match_indices("crate::") {
        let line = code[..n].matches('\n').count() + 1;
        let rest = &code[n + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut item) = (0, String::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push((line, first_segment(&item)));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            if !item.trim().is_empty() {
                out.push((line, first_segment(&item)));
            }
        } else {
            out.push((line, first_segment(rest)));
        }
    }
    out
}

fn first_segment(path: &str) -> String {
    path.trim()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

#[test]
fn every_module_uses_only_what_the_layering_table_allows() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let allowed = table(&fs::read_to_string(src.join("lib.rs")).unwrap());
    assert!(allowed.len() >= 10, "no table in src/lib.rs: {allowed:?}");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut wrong = Vec::new();
    let mut seen = BTreeSet::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let may = allowed
            .get(&module)
            .unwrap_or_else(|| panic!("module {module} is not in src/lib.rs's table"));
        seen.insert(module.clone());
        let code = production(&fs::read_to_string(file).unwrap());
        for (line, used) in crate_paths(&code) {
            if used != module && !may.contains(&used) {
                wrong.push(format!(
                    "{}:{line}: {module} uses {used}",
                    file.strip_prefix(root).unwrap().display()
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "uses the table does not allow:\n{}",
        wrong.join("\n")
    );
    // Every module in the table exists, and the table itself has no circle: repeatedly remove
    // the modules that use nothing left.
    let mut left = allowed.clone();
    for name in left.keys() {
        assert!(
            seen.contains(name),
            "{name} is in the table but not in src/"
        );
    }
    while !left.is_empty() {
        let free: Vec<String> = left
            .iter()
            .filter(|(_, uses)| uses.iter().all(|u| !left.contains_key(u)))
            .map(|(m, _)| m.clone())
            .collect();
        assert!(!free.is_empty(), "the table has a circle among {left:?}");
        for m in free {
            left.remove(&m);
        }
    }
}

#[test]
fn paths_are_read_from_use_groups_and_code_but_not_comments() {
    let code = production(
        "use crate::{fault::{A, B}, config};\n// crate::cli in a comment\nlet x = crate::schedule::f(); // crate::host\n#[cfg(test)]\npub(crate) mod tests { use crate::filter; }",
    );
    let got: Vec<String> = crate_paths(&code).into_iter().map(|(_, m)| m).collect();
    assert_eq!(got, ["fault", "config", "schedule"]);
}
