//! Dependencies between jobs and triggers (`after`): a DAG, checked at
//! submission.

use std::collections::{BTreeMap, BTreeSet};

use shoal_model::FieldError;

/// Refuses `after` edges that would close a cycle. `graph` maps each
/// existing job or trigger to the names it runs after; `name` is the one
/// being created or changed (its old edges in `graph` are ignored) and
/// `after` its new parents, in order. The error names the first parent
/// that closes a cycle and the cycle's path:
/// `after[0].job: a cycle: load -> extract -> load`.
pub fn check_after(
    graph: &BTreeMap<String, Vec<String>>,
    name: &str,
    after: &[&str],
) -> Result<(), FieldError> {
    for (i, parent) in after.iter().enumerate() {
        if let Some(path) = path_to(graph, name, parent, name) {
            let mut cycle = vec![name.to_owned()];
            cycle.extend(path);
            return Err(FieldError::new(
                format!("after[{i}].job"),
                format!("a cycle: {}", cycle.join(" -> ")),
            ));
        }
    }
    Ok(())
}

/// A path from `from` to `to` following `after` edges (as they will be:
/// `changed`'s edges are ignored, since it is the node being replaced),
/// `from` and `to` included.
fn path_to(
    graph: &BTreeMap<String, Vec<String>>,
    changed: &str,
    from: &str,
    to: &str,
) -> Option<Vec<String>> {
    // Depth-first, iterative, each node visited once: linear in the graph.
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut stack: Vec<(&str, usize)> = vec![(from, 0)];
    let mut path: Vec<&str> = Vec::new();
    while let Some((node, depth)) = stack.pop() {
        path.truncate(depth);
        path.push(node);
        if node == to {
            return Some(path.iter().map(|s| (*s).to_owned()).collect());
        }
        if !seen.insert(node) || node == changed {
            continue;
        }
        if let Some(parents) = graph.get(node) {
            for p in parents.iter().rev() {
                stack.push((p.as_str(), depth + 1));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        edges
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.iter().map(|s| (*s).to_owned()).collect()))
            .collect()
    }

    #[test]
    fn a_cycle_is_refused_with_its_path() {
        let g = graph(&[("extract", &["load"]), ("load", &[])]);
        let e = check_after(&g, "load", &["extract"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "after[0].job: a cycle: load -> extract -> load"
        );

        let g = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &[])]);
        let e = check_after(&g, "c", &["x", "a"]).unwrap_err();
        assert_eq!(e.to_string(), "after[1].job: a cycle: c -> a -> b -> c");
        assert_eq!(
            check_after(&g, "c", &["c"]).unwrap_err().to_string(),
            "after[0].job: a cycle: c -> c"
        );
    }

    #[test]
    fn a_dag_is_accepted() {
        // Diamond: report after clean and stats, both after extract.
        let g = graph(&[
            ("clean", &["extract"]),
            ("stats", &["extract"]),
            ("extract", &[]),
        ]);
        check_after(&g, "report", &["clean", "stats"]).unwrap();
        // Changing a node replaces its old edges: load used to run after
        // extract; now extract runs after load, and load after nothing.
        let g = graph(&[("load", &["extract"]), ("extract", &[])]);
        check_after(&g, "extract", &["load"]).unwrap_err();
        let g2 = graph(&[("load", &[]), ("extract", &[])]);
        check_after(&g2, "extract", &["load"]).unwrap();
        // Parents that do not exist yet are no cycle.
        check_after(&BTreeMap::new(), "a", &["b"]).unwrap();
    }

    proptest! {
        /// Adding edges one by one, only when check_after allows them,
        /// always leaves a graph with a topological order.
        #[test]
        fn accepted_edges_never_form_a_cycle(edges in proptest::collection::vec((0u8..8, 0u8..8), 0..40)) {
            let mut g: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (a, b) in edges {
                let (a, b) = (format!("n{a}"), format!("n{b}"));
                let mut parents = g.get(&a).cloned().unwrap_or_default();
                if parents.contains(&b) { continue; }
                parents.push(b);
                let refs: Vec<&str> = parents.iter().map(String::as_str).collect();
                if check_after(&g, &a, &refs).is_ok() {
                    g.insert(a, parents);
                }
            }
            // Kahn's algorithm consumes every node iff there is no cycle.
            let mut nodes: BTreeSet<String> = g.keys().cloned().collect();
            nodes.extend(g.values().flatten().cloned());
            let mut done: BTreeSet<String> = BTreeSet::new();
            loop {
                let ready: Vec<String> = nodes.iter().filter(|n| !done.contains(*n) && g.get(*n).is_none_or(|ps| ps.iter().all(|p| done.contains(p)))).cloned().collect();
                if ready.is_empty() { break; }
                done.extend(ready);
            }
            prop_assert_eq!(done.len(), nodes.len());
        }
    }
}
