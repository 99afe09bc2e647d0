//! The layers of `src/` point down: every top-level module uses only the modules listed below it in
//! `src/lib.rs`'s "Layers" list, which is the one place the order is written.
//!
//! The check reads the source, not the compiler's view: every `crate::X` path (and each `X` of a
//! `use crate::{X, ...}` group, and `super::` paths that climb to the crate root) in code that is
//! not test code. Test code may use anything (a unit test of a controller may start a real API
//! server): `tests.rs` files, modules declared `#[cfg(test)] mod x;`, and every item under
//! `#[cfg(test)]` are skipped. Comments and string literals are not read as paths.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// Upward imports that are known and being removed on other branches of issue 18, each with the
/// module that imports, the module imported, and who removes it. The lead empties this list as
/// those branches are merged: an entry that no longer occurs fails the test, so it cannot linger.
const KNOWN_UPWARD: &[(&str, &str, &str)] = &[];

/// One `crate::` use of another top-level module.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Import {
    from: String,
    to: String,
    file: PathBuf,
    line: usize,
}

impl fmt::Display for Import {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {} -> {}", self.file.display(), self.line, self.from, self.to)
    }
}

/// The layer order from `lib.rs`'s doc: the `//! - [`name`]` items under `# Layers`, top first.
fn layer_order(lib_rs: &str) -> Vec<String> {
    let mut in_layers = false;
    let mut order = Vec::new();
    for line in lib_rs.lines() {
        let Some(doc) = line.strip_prefix("//!") else { continue };
        let doc = doc.trim();
        if doc.starts_with('#') {
            in_layers = doc.trim_start_matches('#').trim() == "Layers";
            continue;
        }
        if in_layers && let Some(rest) = doc.strip_prefix("- [`") && let Some((name, _)) = rest.split_once("`]") {
            order.push(name.to_string());
        }
    }
    order
}

/// The modules `lib.rs` declares (`pub mod x;` / `mod x;`).
fn declared_modules(lib_rs: &str) -> BTreeSet<String> {
    lib_rs
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            l.strip_prefix("mod ")?.strip_suffix(';').map(|m| m.trim().to_string())
        })
        .collect()
}

/// `text` with comments, string literals and character literals blanked out (newlines kept, so
/// that line numbers stay true), leaving code whose braces balance.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if (c == 'r' || (c == 'b' && next == Some('r'))) && is_raw_string_start(&chars, i) && !is_ident_char(i.checked_sub(1).map(|p| chars[p])) {
            // r"..." or r#"..."#, b too.
            let mut j = i + if c == 'b' { 2 } else { 1 };
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            j += 1; // the opening quote
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (1..=hashes).all(|h| chars.get(j + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.extend(chars[i..j.min(chars.len())].iter().map(|&c| blank(c)));
            i = j;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && (next == Some('\\') || chars.get(i + 2) == Some(&'\'')) {
            // A character literal ('x', '\n', '\''); a lifetime ('a) has no closing quote there.
            let mut j = i + 1;
            if chars.get(j) == Some(&'\\') {
                j += 2;
            } else {
                j += 1;
            }
            while j < chars.len() && chars[j] != '\'' {
                j += 1;
            }
            out.extend(chars[i..(j + 1).min(chars.len())].iter().map(|&c| blank(c)));
            i = j + 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn is_ident_char(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || c == '_')
}

fn is_raw_string_start(chars: &[char], i: usize) -> bool {
    let mut j = i + if chars[i] == 'b' { 2 } else { 1 };
    while chars.get(j) == Some(&'#') {
        j += 1;
    }
    chars.get(j) == Some(&'"')
}

/// `code` (already [`code_only`]) with every item under `#[cfg(test)]` blanked out, and the names
/// of the modules it declares as test-only (`#[cfg(test)] mod x;`).
fn without_test_items(code: &str) -> (String, Vec<String>) {
    let mut out: Vec<char> = code.chars().collect();
    let mut test_modules = Vec::new();
    let marker: Vec<char> = "#[cfg(test)]".chars().collect();
    let mut i = 0;
    while i + marker.len() <= out.len() {
        if out[i..i + marker.len()] != marker[..] {
            i += 1;
            continue;
        }
        let start = i;
        let mut j = i + marker.len();
        // The item runs to its first `;` outside braces, or to the brace closing its body.
        let mut depth = 0usize;
        let mut item = String::new();
        while j < out.len() {
            let c = out[j];
            item.push(c);
            j += 1;
            match c {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        break;
                    }
                }
                ';' if depth == 0 => break,
                _ => {}
            }
        }
        let words: Vec<&str> = item.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ';')).filter(|w| !w.is_empty()).collect();
        if let Some(pos) = words.iter().position(|w| *w == "mod") && let Some(name) = words.get(pos + 1) && let Some(name) = name.strip_suffix(';') {
            test_modules.push(name.to_string());
        }
        for c in &mut out[start..j] {
            if *c != '\n' {
                *c = ' ';
            }
        }
        i = j;
    }
    (out.into_iter().collect(), test_modules)
}

/// The module path of a file under `src/`: `agent/runtime/docker.rs` is `[agent, runtime, docker]`,
/// `agent/mod.rs` is `[agent]`.
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs").to_string();
        if stem != "mod" {
            parts.push(stem);
        }
    }
    parts
}

fn ident_at(chars: &[char], mut i: usize) -> (String, usize) {
    while chars.get(i).is_some_and(|c| c.is_whitespace()) {
        i += 1;
    }
    let start = i;
    while is_ident_char(chars.get(i).copied()) {
        i += 1;
    }
    (chars[start..i].iter().collect(), i)
}

/// The top-level modules `code` (of the file at `module`) names through `crate::` or `super::`
/// paths, with the line of each.
fn referenced_modules(code: &str, module: &[String]) -> Vec<(String, usize)> {
    let chars: Vec<char> = code.chars().collect();
    let mut found = Vec::new();
    let line_of = |i: usize| chars[..i].iter().filter(|&&c| c == '\n').count() + 1;
    let mut i = 0;
    while i < chars.len() {
        if is_ident_char(i.checked_sub(1).map(|p| chars[p])) || !is_ident_char(Some(chars[i])) {
            i += 1;
            continue;
        }
        let (word, end) = ident_at(&chars, i);
        let after_colons = |j: usize| chars.get(j) == Some(&':') && chars.get(j + 1) == Some(&':');
        let mut top_level_at = None;
        if word == "crate" && after_colons(end) {
            top_level_at = Some(end + 2);
        } else if word == "super" && after_colons(end) {
            let mut climbs = 1;
            let mut j = end + 2;
            loop {
                let (next, next_end) = ident_at(&chars, j);
                if next == "super" && after_colons(next_end) {
                    climbs += 1;
                    j = next_end + 2;
                } else {
                    break;
                }
            }
            if climbs >= module.len() {
                top_level_at = Some(j);
            }
            i = j;
        }
        if let Some(at) = top_level_at {
            let mut j = at;
            while chars.get(j).is_some_and(|c| c.is_whitespace()) {
                j += 1;
            }
            if chars.get(j) == Some(&'{') {
                // `use crate::{a::b, c}`: the first segment of each path at the group's top level.
                let mut depth = 0;
                let mut expect_name = true;
                let mut k = j;
                while k < chars.len() {
                    match chars[k] {
                        '{' => {
                            depth += 1;
                            if depth == 1 {
                                expect_name = true;
                            }
                        }
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        ',' if depth == 1 => expect_name = true,
                        c if depth == 1 && expect_name && is_ident_char(Some(c)) => {
                            let (name, name_end) = ident_at(&chars, k);
                            found.push((name, line_of(k)));
                            expect_name = false;
                            k = name_end;
                            continue;
                        }
                        _ => {}
                    }
                    k += 1;
                }
                i = k;
            } else {
                let (name, name_end) = ident_at(&chars, j);
                if !name.is_empty() {
                    found.push((name, line_of(j)));
                }
                i = name_end;
            }
            continue;
        }
        i = end.max(i + 1);
    }
    found
}

/// Every import between different top-level modules in non-test code of `files` (paths relative
/// to `src/`, and their text).
fn imports(files: &[(PathBuf, String)]) -> Vec<Import> {
    // Files that are test code as a whole: tests.rs, and modules declared `#[cfg(test)] mod x;`.
    let mut test_files: BTreeSet<PathBuf> = BTreeSet::new();
    let mut cleaned: BTreeMap<&Path, String> = BTreeMap::new();
    for (path, text) in files {
        let (code, test_modules) = without_test_items(&code_only(text));
        let dir = if path.file_name().is_some_and(|f| f == "mod.rs" || f == "lib.rs" || f == "main.rs") {
            path.parent().unwrap_or(Path::new("")).to_path_buf()
        } else {
            path.with_extension("")
        };
        for m in test_modules {
            test_files.insert(dir.join(format!("{m}.rs")));
            test_files.insert(dir.join(&m).join("mod.rs"));
        }
        cleaned.insert(path, code);
    }
    let mut out = Vec::new();
    for (path, code) in cleaned {
        let in_test_folder = test_files.iter().any(|t| t.file_name().is_some_and(|f| f == "mod.rs") && t.parent().is_some_and(|p| path.starts_with(p)));
        if path.file_name().is_some_and(|f| f == "tests.rs") || test_files.contains(path) || in_test_folder {
            continue;
        }
        let module = module_path(path);
        let Some(from) = module.first() else { continue };
        if from == "lib" || from == "main" {
            continue;
        }
        for (to, line) in referenced_modules(&code, &module) {
            if &to != from {
                out.push(Import { from: from.clone(), to, file: path.to_path_buf(), line });
            }
        }
    }
    out.sort();
    out
}

/// The imports that go up (or sideways to a module not in the order), given the order top first.
fn upward(imports: &[Import], order: &[String]) -> Vec<Import> {
    let rank = |m: &str| order.iter().position(|o| o == m);
    imports
        .iter()
        .filter(|i| match (rank(&i.from), rank(&i.to)) {
            // Lower in the list means a higher index.
            (Some(from), Some(to)) => to <= from,
            _ => true,
        })
        .cloned()
        .collect()
}

fn read_tree(root: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                out.push((path.strip_prefix(root).expect("under src").to_path_buf(), text));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_module_imports_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib_rs = std::fs::read_to_string(src.join("lib.rs")).expect("reading src/lib.rs");
    let order = layer_order(&lib_rs);
    let declared = declared_modules(&lib_rs);
    let listed: BTreeSet<String> = order.iter().cloned().collect();
    assert_eq!(listed.len(), order.len(), "a module is listed twice under lib.rs's `# Layers`: {order:?}");
    let unlisted: Vec<&String> = declared.difference(&listed).collect();
    let undeclared: Vec<&String> = listed.difference(&declared).collect();
    assert!(
        unlisted.is_empty() && undeclared.is_empty(),
        "lib.rs's `# Layers` list must name exactly the modules lib.rs declares: not listed {unlisted:?}, listed but not declared {undeclared:?}"
    );

    let found = upward(&imports(&read_tree(&src)), &order);
    let is_known = |i: &Import| KNOWN_UPWARD.iter().any(|(from, to, _)| *from == i.from && *to == i.to);
    let new: Vec<String> = found.iter().filter(|i| !is_known(i)).map(|i| format!("  {i}")).collect();
    let stale: Vec<String> = KNOWN_UPWARD
        .iter()
        .filter(|(from, to, _)| !found.iter().any(|i| i.from == *from && i.to == *to))
        .map(|(from, to, who)| format!("  {from} -> {to} (was {who}'s)"))
        .collect();
    let known: Vec<String> = found.iter().filter(|i| is_known(i)).map(|i| format!("  {i}")).collect();
    if !known.is_empty() {
        eprintln!("known upward imports, being removed on other branches:\n{}", known.join("\n"));
    }
    let order_text = order.join(" > ");
    assert!(
        new.is_empty() && stale.is_empty(),
        "layers, top first: {order_text}\n{}{}",
        if new.is_empty() { String::new() } else { format!("imports of a module above (or beside) the importer:\n{}\n", new.join("\n")) },
        if stale.is_empty() { String::new() } else { format!("known upward imports that no longer occur (remove them from KNOWN_UPWARD):\n{}\n", stale.join("\n")) },
    );
}

#[cfg(test)]
mod checker {
    use super::*;

    const LIB: &str = "//! # Layout\n//! - [`top`]: not the layers\n//!\n//! # Layers\n//! - [`top`]: uses all\n//! - [`middle`]: uses bottom\n//! - [`bottom`]: uses none\n//!\n//! # Other\n//! - [`x`]: not a layer\n\npub mod bottom;\npub mod middle;\npub mod top;\n";

    fn files(list: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
        list.iter().map(|(p, t)| (PathBuf::from(p), t.to_string())).collect()
    }

    fn upward_in(list: &[(&str, &str)]) -> Vec<String> {
        upward(&imports(&files(list)), &layer_order(LIB)).iter().map(|i| i.to_string()).collect()
    }

    #[test]
    fn the_order_is_read_from_the_layers_section_of_lib_rs() {
        assert_eq!(layer_order(LIB), vec!["top", "middle", "bottom"]);
        assert_eq!(declared_modules(LIB), ["bottom", "middle", "top"].map(String::from).into());
    }

    #[test]
    fn an_upward_import_is_reported_with_its_file_and_line() {
        let found = upward_in(&[
            ("top/mod.rs", "use crate::middle::Thing;\nuse crate::bottom;\n"),
            ("middle/mod.rs", "use crate::bottom::Base;\n"),
            ("bottom/mod.rs", "fn f() {}\n\nfn g() { crate::middle::call(); }\n"),
        ]);
        assert_eq!(found, vec!["bottom/mod.rs:3: bottom -> middle"]);
    }

    #[test]
    fn grouped_uses_and_super_paths_to_the_root_count() {
        let found = upward_in(&[
            ("bottom/mod.rs", "use crate::{\n    top::{a, b},\n    bottom::c,\n};\n"),
            ("bottom/deep/leaf.rs", "fn f() { super::super::super::middle::call(); super::super::inner(); super::sibling(); }\n"),
        ]);
        assert_eq!(found, vec!["bottom/deep/leaf.rs:1: bottom -> middle", "bottom/mod.rs:2: bottom -> top"]);
    }

    #[test]
    fn test_code_comments_and_strings_are_not_imports() {
        let found = upward_in(&[
            (
                "bottom/mod.rs",
                "//! See [`crate::top`].\n/* crate::top */\nfn f() { let s = \"crate::top\"; let r = r#\"crate::middle\"#; let c = '{'; }\n\
                 #[cfg(test)]\nmod tests {\n    use crate::top;\n    fn g() { let x = '}'; }\n}\n#[cfg(test)]\nmod suite;\n#[cfg(test)]\nuse crate::middle;\n",
            ),
            ("bottom/tests.rs", "use crate::top;\n"),
            ("bottom/suite.rs", "use crate::top;\n"),
        ]);
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn a_module_missing_from_the_order_is_reported() {
        let found = upward_in(&[("bottom/mod.rs", "use crate::elsewhere::X;\n")]);
        assert_eq!(found, vec!["bottom/mod.rs:1: bottom -> elsewhere"]);
    }
}
