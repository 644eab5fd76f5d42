//! The house rules of `src/` that a reader relies on: no module imports the module that imports
//! it (a request flows one way), and no source file grows past 600 lines.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path ("service::worker::thread") -> source, without its test module.
fn modules() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let src = support::root().join("src");
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.insert(module_of(&src, &path), read(&path));
            }
        }
    }
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).expect("read a source file")
}

fn module_of(src: &Path, path: &Path) -> String {
    let rel = path
        .strip_prefix(src)
        .expect("under src")
        .with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

/// The longest known module that `path` names (a module, or an item in one).
fn resolve(known: &BTreeMap<String, String>, path: &str) -> Option<String> {
    let segs: Vec<&str> = path.split("::").collect();
    (1..=segs.len())
        .rev()
        .map(|i| segs[..i].join("::"))
        .find(|m| known.contains_key(m))
}

/// The modules a module's `use crate::...` and `use super::...` lines import.
fn imports(known: &BTreeMap<String, String>, module: &str, source: &str) -> BTreeSet<String> {
    let body = source.split("#[cfg(test)]").next().unwrap_or("");
    let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
    let mut out = BTreeSet::new();
    for stmt in body.split(';') {
        let stmt = stmt.trim();
        let Some(rest) = stmt
            .strip_prefix("pub use ")
            .or_else(|| stmt.strip_prefix("use "))
            .or_else(|| stmt.strip_prefix("pub(crate) use "))
        else {
            continue;
        };
        let (base, group) = match rest.split_once("::{") {
            Some((b, g)) => (b, g.trim_end_matches('}')),
            None => (rest, ""),
        };
        let base = if let Some(b) = base.strip_prefix("crate::") {
            b.to_owned()
        } else if let Some(b) = base.strip_prefix("super::") {
            [parent, b]
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect::<Vec<_>>()
                .join("::")
        } else {
            continue;
        };
        let items: Vec<&str> = if group.is_empty() {
            vec![""]
        } else {
            group.split(',').collect()
        };
        for item in items {
            let item = item
                .split("::")
                .next()
                .unwrap_or("")
                .split(" as ")
                .next()
                .unwrap_or("");
            let item = item.trim();
            let full = if item.is_empty() || item == "self" {
                base.clone()
            } else {
                format!("{base}::{item}")
            };
            if let Some(m) = resolve(known, &full).filter(|m| m != module) {
                out.insert(m);
            }
        }
    }
    out
}

#[test]
fn no_module_imports_its_importer() {
    let known = modules();
    assert!(known.len() > 50, "{} modules found", known.len());
    let graph: BTreeMap<String, BTreeSet<String>> = known
        .iter()
        .map(|(m, s)| (m.clone(), imports(&known, m, s)))
        .collect();
    // The check sees imports at all.
    assert!(graph["service::api::rank"].contains("service::request::rank_mode"));
    let cycles: Vec<(String, String)> = graph
        .iter()
        .flat_map(|(a, deps)| {
            deps.iter()
                .filter(|b| a < *b && graph.get(*b).is_some_and(|d| d.contains(a.as_str())))
                .map(|b| (a.clone(), b.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        cycles.is_empty(),
        "modules importing each other: {cycles:?}"
    );
}

#[test]
fn no_source_file_reaches_600_lines() {
    let long: Vec<(String, usize)> = modules()
        .into_iter()
        .map(|(m, s)| (m, s.lines().count()))
        .filter(|(_, n)| *n >= 600)
        .collect();
    assert!(long.is_empty(), "{long:?}");
}
