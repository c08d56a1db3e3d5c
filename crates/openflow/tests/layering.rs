//! The crate's modules form layers: no module depends, directly or through others, on a module
//! that depends on it (field, matching, action, flow and text once imported each other in a loop).

use std::collections::{BTreeMap, BTreeSet};

/// Each module's `crate::...` dependencies, from its source.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("src") {
        let path = entry.expect("entry").path();
        let (Some(name), Some("rs")) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|s| s.to_str()),
        ) else {
            continue;
        };
        if name == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("source");
        // Tests inside a module may use anything.
        let text = text.split("#[cfg(test)]").next().unwrap_or_default();
        let deps: BTreeSet<String> = text
            .match_indices("crate::")
            .map(|(i, m)| {
                text[i + m.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .filter(|d| !d.is_empty() && d != name)
            .collect();
        out.insert(name.to_string(), deps);
    }
    out
}

fn reaches(graph: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.to_string()];
    while let Some(m) = todo.pop() {
        for d in graph.get(&m).into_iter().flatten() {
            if d == to {
                return true;
            }
            if seen.insert(d.clone()) {
                todo.push(d.clone());
            }
        }
    }
    false
}

#[test]
fn modules_import_each_other_in_no_loop() {
    let graph = graph();
    assert!(graph.contains_key("action") && graph.contains_key("text"));
    for module in graph.keys() {
        assert!(
            !reaches(&graph, module, module),
            "module {module} depends on itself through {:?}",
            graph[module]
        );
    }
}
