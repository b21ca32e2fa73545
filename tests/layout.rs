//! Issue 16: the source tree stays a house a newcomer can find their way in. Two rules are
//! checked here, by reading `src/` as text:
//! - no import cycles between files: a module may use what is below it, never what uses it
//!   (`use` paths and inline `crate::`/`super::` paths count; test modules do not);
//! - no file in `src/` longer than [`MAX_LINES`] unless its module doc says why, in a line
//!   starting with `//! Length:`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest a file may be without a stated reason (the "~600 lines").
const MAX_LINES: usize = 650;

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The module path of a file under `src` (`core::chat` for `src/core/chat/mod.rs`), empty for
/// the crate root.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).expect("under src").with_extension("");
    let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts == ["lib"] || parts == ["main"] {
        parts.clear();
    }
    parts.join("::")
}

/// The file's text without test modules and comments.
fn code_of(text: &str) -> String {
    let text = text.split("\n#[cfg(test)]\nmod ").next().unwrap_or_default();
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`.
fn expand(path: &str) -> Vec<String> {
    let Some(open) = path.find('{') else { return vec![path.to_owned()] };
    let (prefix, inner) = (&path[..open], &path[open + 1..path.rfind('}').unwrap_or(path.len())]);
    let (mut parts, mut depth, mut current) = (Vec::new(), 0, String::new());
    for ch in inner.chars() {
        match ch {
            ',' if depth == 0 => parts.push(std::mem::take(&mut current)),
            '{' => {
                depth += 1;
                current.push(ch);
            }
            '}' => {
                depth -= 1;
                current.push(ch);
            }
            _ => current.push(ch),
        }
    }
    parts.push(current);
    parts.iter().filter(|p| !p.is_empty()).flat_map(|p| expand(&format!("{prefix}{p}"))).collect()
}

/// The file module a path used from `module` lands in, if it is one of the crate's.
fn target_of(module: &str, path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut base: Vec<&str> = if module.is_empty() { Vec::new() } else { module.split("::").collect() };
    let mut rest = &segments[..];
    match rest.first() {
        Some(&"crate") => {
            base.clear();
            rest = &rest[1..];
        }
        Some(&"super") => {
            while rest.first() == Some(&"super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        Some(&"self") => rest = &rest[1..],
        _ => return None,
    }
    (0..=rest.len()).rev().find_map(|take| {
        let candidate = base.iter().chain(&rest[..take]).copied().collect::<Vec<_>>().join("::");
        modules.contains(&candidate).then_some(candidate)
    })
}

/// Which file modules each file module uses (a module's own ancestors and itself excluded).
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut graph = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        let code = code_of(&std::fs::read_to_string(file).expect("readable"));
        let mut paths: Vec<String> = Vec::new();
        let mut lines = code.lines();
        while let Some(line) = lines.next() {
            let line = line.trim_start();
            let line = ["pub use ", "pub(crate) use ", "pub(super) use ", "use "]
                .iter()
                .find_map(|prefix| line.strip_prefix(prefix));
            let Some(first) = line else { continue };
            let mut statement = first.to_owned();
            while !statement.contains(';') {
                let Some(next) = lines.next() else { break };
                statement.push_str(next);
            }
            let body: String = statement
                .split(';')
                .next()
                .unwrap_or_default()
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            paths.extend(expand(&body).into_iter().map(|p| p.trim_end_matches("::self").to_owned()));
        }
        for (at, _) in code.match_indices("crate::").chain(code.match_indices("super::")) {
            let before = code[..at].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let path: String =
                code[at..].chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
            paths.push(path);
        }
        let used: BTreeSet<String> = paths
            .iter()
            .filter_map(|p| target_of(&module, p, &modules))
            .filter(|t| !t.is_empty() && *t != module && !module.starts_with(&format!("{t}::")))
            .collect();
        graph.insert(module, used);
    }
    graph
}

/// One cycle of `graph`, if it has any.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(node.to_owned(), Mark::Open);
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            match marks.get(next) {
                Some(Mark::Open) => {
                    let start = stack.iter().position(|n| n == next).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(Mark::Done) => {}
                None => {
                    if let Some(cycle) = visit(next, graph, marks, stack) {
                        return Some(cycle);
                    }
                }
            }
        }
        stack.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if !marks.contains_key(node)
            && let Some(cycle) = visit(node, graph, &mut marks, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn no_file_in_src_imports_a_module_that_imports_it_back() {
    let graph = imports();
    assert!(
        graph.contains_key("core::chat") && graph["core::chat"].contains("core::ports"),
        "the reader works"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!("an import cycle between files in src/: {}", cycle.join(" → "));
    }
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::from(["c".to_owned()])),
        ("c".to_owned(), BTreeSet::from(["a".to_owned()])),
    ]
    .into();
    assert_eq!(find_cycle(&graph).map(|c| c.len()), Some(4));
    assert_eq!(expand("crate::core::{chat::{Chat, admin}, ports}").len(), 3);
}

#[test]
fn no_file_in_src_is_longer_than_650_lines_without_a_stated_reason() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut too_long: Vec<String> = files
        .iter()
        .filter_map(|file| {
            let text = std::fs::read_to_string(file).expect("readable");
            let lines = text.lines().count();
            let reason =
                text.lines().take_while(|l| l.starts_with("//!")).any(|l| l.starts_with("//! Length:"));
            (lines > MAX_LINES && !reason).then(|| format!("{} ({lines} lines)", file.display()))
        })
        .collect();
    too_long.sort();
    assert!(too_long.is_empty(), "split these, or say why at their top (`//! Length: …`): {too_long:?}");
}
