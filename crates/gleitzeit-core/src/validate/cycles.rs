//! Dependency cycles, named task by task: cycles among the explicit dependencies, and cycles
//! that only the dependencies implied by template references close. The graph algorithms are
//! [`crate::graph`]'s, shared with planning.

use std::collections::HashSet;

use super::checker::Checker;
use super::fields::at;
use super::references::Implied;
use super::task::Draft;
use crate::error::ErrorKind;
use crate::graph::{cycle_through, cyclic_components};

/// Reports every cycle: `explicit` are the written dependencies, `implied` those template
/// references add, `all` their union.
pub(super) fn report_cycles(
    c: &mut Checker<'_>,
    drafts: &[Draft],
    explicit: &[Vec<usize>],
    implied: &[Vec<Implied>],
    all: &[Vec<usize>],
) {
    let name_of = |i: usize| drafts[i].name.as_deref().unwrap_or("?");
    let cycle_text = |cycle: &[usize]| {
        cycle
            .iter()
            .map(|&i| name_of(i))
            .collect::<Vec<_>>()
            .join(" → ")
    };

    // Cycles among explicit dependencies.
    let explicit_sccs = cyclic_components(explicit);
    for scc in &explicit_sccs {
        let start = scc[0];
        if let Some(cycle) = cycle_through(explicit, scc, start, start) {
            c.err(
                at(&drafts[start].label, "dependencies"),
                ErrorKind::Cycle,
                format!(
                    "dependency cycle: {} (each task depends on the next)",
                    cycle_text(&cycle)
                ),
            );
        }
    }

    // Cycles that only references close.
    let explicit_sets: Vec<HashSet<usize>> = explicit_sccs
        .iter()
        .map(|s| s.iter().copied().collect())
        .collect();
    for scc in cyclic_components(all) {
        let set: HashSet<usize> = scc.iter().copied().collect();
        if explicit_sets.contains(&set) {
            continue;
        }
        let edge = scc.iter().find_map(|&u| {
            implied[u]
                .iter()
                .find(|x| set.contains(&x.to) && !explicit[u].contains(&x.to))
                .map(|x| (u, x))
        });
        let Some((u, imp)) = edge else { continue };
        if let Some(back) = cycle_through(all, &scc, imp.to, u) {
            let mut cycle = vec![u];
            cycle.extend(back);
            c.err(
                at(&drafts[u].label, &imp.field),
                ErrorKind::ReferenceCycle,
                format!(
                    "`{{{{{}}}}}` implies a dependency on {:?}, which would form a cycle: {} \
                     (each task depends on the next); only ancestors can be referenced",
                    imp.reference,
                    name_of(imp.to),
                    cycle_text(&cycle)
                ),
            );
        }
    }
}
