//! The house rules of `src/`, checked on every test run so they cannot rot:
//! the rooms import each other without a circle, the pipeline never names
//! its conductor, the library does not print, and no function outgrows a
//! screenful and a half.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable src/") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The library's files (the binary's `main.rs` and `cli/` are its clients).
fn library_files() -> Vec<(String, String)> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    files
        .into_iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(src()).unwrap().to_string_lossy().to_string();
            if rel == "main.rs" || rel.starts_with("cli/") {
                return None;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            Some((rel, text))
        })
        .collect()
}

/// The top-level module ("room") a file belongs to.
fn room(rel: &str) -> String {
    rel.split('/')
        .next()
        .unwrap()
        .trim_end_matches(".rs")
        .to_string()
}

/// Text outside `#[cfg(test)]` modules, which may reach anywhere.
fn without_tests(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    }
}

/// Rooms each room names through `crate::ROOM`.
fn room_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, text) in library_files() {
        let from = room(&rel);
        let deps = graph.entry(from.clone()).or_default();
        let text = without_tests(&text);
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != from && name.chars().next().unwrap().is_lowercase() {
                deps.insert(name);
            }
        }
    }
    graph
}

/// A cycle in the graph, if there is one (depth-first, three colours).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(n) {
            Some(2) => return None,
            Some(1) => {
                let start = path.iter().position(|p| p == n).unwrap();
                let mut cycle = path[start..].to_vec();
                cycle.push(n.to_string());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(n.to_string(), 1);
        path.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, graph, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if let Some(c) = visit(n, graph, &mut state, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

#[test]
fn the_rooms_import_each_other_without_a_circle() {
    let graph = room_graph();
    assert!(graph.contains_key("engine") && graph.contains_key("pipeline"));
    assert_eq!(find_cycle(&graph), None, "room graph: {graph:#?}");
}

#[test]
fn the_cycle_finder_finds_a_planted_circle() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        find_cycle(&g),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}

#[test]
fn the_pipeline_never_names_its_conductor() {
    for (rel, text) in library_files() {
        if room(&rel) != "pipeline" {
            continue;
        }
        for banned in ["crate::engine", "crate::jobs", "crate::api", "crate::tools"] {
            assert!(
                !without_tests(&text).contains(banned),
                "{rel} names {banned}"
            );
        }
    }
}

#[test]
fn the_run_path_does_not_print() {
    for (rel, text) in library_files() {
        if !["engine", "pipeline", "jobs", "api"].contains(&room(&rel).as_str()) {
            continue;
        }
        let code: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect();
        for banned in ["println!", "eprintln!", "print!(", "eprint!("] {
            assert!(
                !code.iter().any(|l| l.contains(banned)),
                "{rel} uses {banned}"
            );
        }
    }
}

/// Functions by their length in lines: from a line that starts an item
/// `fn` to the closing brace rustfmt puts at the same indentation.
fn long_functions(text: &str, limit: usize) -> Vec<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let indent = line.len() - t.len();
        let starts = [
            "fn ",
            "pub fn ",
            "async fn ",
            "pub async fn ",
            "pub(crate) fn ",
            "pub(crate) async fn ",
        ]
        .iter()
        .any(|p| t.starts_with(p));
        if !starts || t.ends_with(';') {
            continue;
        }
        let close = " ".repeat(indent) + "}";
        if let Some(len) = lines[i + 1..].iter().position(|l| *l == close) {
            if len + 2 > limit {
                out.push((i + 1, len + 2));
            }
        }
    }
    out
}

#[test]
fn no_function_outside_tests_is_over_150_lines() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut long = Vec::new();
    for p in files {
        let text = std::fs::read_to_string(&p).unwrap();
        for (line, len) in long_functions(without_tests(&text), 150) {
            long.push(format!("{}:{line} ({len} lines)", p.display()));
        }
    }
    assert!(long.is_empty(), "functions over 150 lines: {long:#?}");
}

#[test]
fn the_length_check_sees_a_long_function() {
    let body = "    let x = 1;\n".repeat(160);
    let text = format!("pub async fn big() {{\n{body}}}\n\nfn small() {{\n}}\n");
    assert_eq!(long_functions(&text, 150), vec![(1, 162)]);
}

/// The repository carries the SPEC so its links work in a clone; the copy
/// must stay the contract itself.
#[test]
fn the_spec_copy_is_the_shared_contract() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let copy = std::fs::read_to_string(root.join("docs/SPEC.md")).expect("docs/SPEC.md");
    assert!(copy.contains("# settle — the settlement contract"));
    let shared = root.join("../shared/SPEC.md");
    if let Ok(contract) = std::fs::read_to_string(&shared) {
        assert_eq!(
            copy,
            contract,
            "docs/SPEC.md differs from {}",
            shared.display()
        );
    }
}

#[test]
fn no_source_file_is_over_800_lines() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|p| {
            let n = std::fs::read_to_string(p).unwrap().lines().count();
            (n > 800).then(|| format!("{} ({n} lines)", p.display()))
        })
        .collect();
    assert!(long.is_empty(), "files over 800 lines: {long:#?}");
}
