//! The shape of the code, checked: no module of `src/` depends on itself through others, files
//! and functions stay readable, and nothing is kept alive by `allow(dead_code)`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path (`core::hub`) for every source file that is not a test file.
fn modules(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let Some(rel) = path
                .strip_prefix(src)
                .ok()
                .and_then(|r| r.to_str())
                .and_then(|r| r.strip_suffix(".rs"))
            else {
                continue;
            };
            let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
            let last = parts.last().cloned().unwrap_or_default();
            if last == "tests" || last.ends_with("_tests") {
                continue;
            }
            if matches!(last.as_str(), "mod" | "lib" | "main") {
                parts.pop();
            }
            out.insert(parts, path);
        }
    }
    out
}

/// The code of a file without its comments and its `#[cfg(test)]` module.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read source");
    let text = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => &text,
    };
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::a::b`, `super::a` and `self::a` path in `text`, and the items of one-level
/// `use x::{a, b}` groups.
fn paths(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let words: Vec<&str> = text
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':' || c == '{' || c == ','))
        .collect();
    for w in words {
        let (head, tail) = match w.split_once("::") {
            Some((h, t)) if matches!(h, "crate" | "super" | "self") => (h, t),
            _ => continue,
        };
        let (base, group) = match tail.split_once("::{") {
            Some((b, g)) => (b, Some(g)),
            None => (tail, None),
        };
        let base: Vec<String> = base
            .split("::")
            .filter(|s| !s.is_empty() && !s.contains('{'))
            .map(str::to_string)
            .collect();
        out.push((head.to_string(), base.clone()));
        for item in group.into_iter().flat_map(|g| g.split(',')) {
            let item = item.trim_matches(|c| c == '{' || c == ' ');
            if !item.is_empty() {
                let mut p = base.clone();
                p.push(item.split("::").next().unwrap_or("").to_string());
                out.push((head.to_string(), p));
            }
        }
    }
    out
}

fn graph(src: &Path) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mods = modules(src);
    let resolve = |parts: &[String]| {
        (0..=parts.len())
            .rev()
            .map(|n| parts[..n].to_vec())
            .find(|p| mods.contains_key(p))
    };
    let mut edges = BTreeMap::new();
    for (m, path) in &mods {
        let mut to = BTreeSet::new();
        for (head, tail) in paths(&code(path)) {
            let mut parts = match head.as_str() {
                "crate" => Vec::new(),
                "super" => m[..m.len().saturating_sub(1)].to_vec(),
                _ => m.clone(),
            };
            parts.extend(tail.into_iter().filter(|s| s != "super"));
            if let Some(t) = resolve(&parts)
                && t != *m
            {
                to.insert(t);
            }
        }
        edges.insert(m.clone(), to);
    }
    edges
}

/// A module that depends, through others, on itself; `None` when there is none.
fn cycle(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Option<Vec<String>> {
    fn visit(
        m: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        done: &mut BTreeSet<Vec<String>>,
        path: &mut Vec<Vec<String>>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            return Some(path[i..].iter().map(|p| p.join("::")).collect());
        }
        if !done.insert(m.clone()) {
            return None;
        }
        path.push(m.clone());
        for next in edges.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, edges, done, path) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|m| visit(m, edges, &mut done, &mut Vec::new()))
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn the_module_graph_has_no_cycle() {
    let edges = graph(&src());
    assert!(edges.len() > 50, "only {} modules found", edges.len());
    assert!(edges.values().map(BTreeSet::len).sum::<usize>() > 100);
    if let Some(c) = cycle(&edges) {
        panic!("module cycle: {}", c.join(" -> "));
    }
}

#[test]
fn files_and_functions_stay_readable() {
    for path in modules(&src()).values() {
        let text = code(path);
        let lines = text.lines().count();
        assert!(lines <= 800, "{} has {lines} lines", path.display());
        let mut open: Option<(usize, usize, &str)> = None;
        for (i, line) in text.lines().enumerate() {
            let indent = line.len() - line.trim_start().len();
            let t = line.trim_start();
            let is_fn = t.starts_with("fn ")
                || t.starts_with("pub fn ")
                || t.starts_with("pub(crate) fn ")
                || t.starts_with("pub(super) fn ");
            if is_fn && open.is_none() {
                open = Some((i, indent, t));
            } else if let Some((start, ind, name)) = open
                && line.len() == ind + 1
                && line.ends_with('}')
            {
                let n = i - start + 1;
                assert!(n <= 80, "{}: `{name}` is {n} lines", path.display());
                open = None;
            }
        }
    }
}

#[test]
fn no_dead_code_kept_alive() {
    for path in modules(&src()).values() {
        let text = std::fs::read_to_string(path).expect("read source");
        assert!(
            !text.contains("allow(dead_code)"),
            "{} keeps dead code with allow(dead_code)",
            path.display()
        );
    }
}
