//! Graph algorithms on task indices (edges `task → the tasks it depends on`): the cycles of a
//! dependency graph and a shortest path inside one, used by validation (to name a cycle) and
//! by planning (to refuse one).

use std::collections::{HashMap, HashSet, VecDeque};

/// Strongly connected components that contain a cycle (more than one node; self-loops are
/// reported separately), each sorted, ordered by their smallest node. Iterative Tarjan, so
/// long chains cannot overflow the stack.
pub(crate) fn cyclic_components(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = edges.len();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0usize; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<usize> = Vec::new();
    let mut next = 0usize;
    let mut out = Vec::new();
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        // (node, position in its edge list)
        let mut call: Vec<(usize, usize)> = vec![(root, 0)];
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(top) = call.last_mut() {
            let (v, pos) = *top;
            if let Some(&w) = edges[v].get(pos) {
                top.1 += 1;
                if w >= n {
                    continue;
                }
                if index[w] == usize::MAX {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    call.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
            } else {
                call.pop();
                if let Some(&(parent, _)) = call.last() {
                    low[parent] = low[parent].min(low[v]);
                }
                if low[v] == index[v] {
                    let mut comp = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        comp.push(w);
                        if w == v {
                            break;
                        }
                    }
                    if comp.len() > 1 {
                        comp.sort_unstable();
                        out.push(comp);
                    }
                }
            }
        }
    }
    out.sort();
    out
}

/// The shortest path `from ⇝ to` inside `component`, as nodes after `from` ending with `to`,
/// prefixed by `from` itself: `[from, …, to]`. When `from == to` it is a cycle through `from`.
pub(crate) fn cycle_through(
    edges: &[Vec<usize>],
    component: &[usize],
    from: usize,
    to: usize,
) -> Option<Vec<usize>> {
    let inside: HashSet<usize> = component.iter().copied().collect();
    let mut prev: HashMap<usize, usize> = HashMap::new();
    let mut queue = VecDeque::from([from]);
    let mut seen: HashSet<usize> = HashSet::from([from]);
    while let Some(v) = queue.pop_front() {
        let mut targets = edges[v].clone();
        targets.sort_unstable();
        for w in targets {
            if !inside.contains(&w) {
                continue;
            }
            if w == to {
                let mut path = vec![to];
                let mut cur = v;
                while cur != from {
                    path.push(cur);
                    match prev.get(&cur) {
                        Some(&p) => cur = p,
                        None => return None,
                    }
                }
                path.push(from);
                path.reverse();
                return Some(path);
            }
            if seen.insert(w) {
                prev.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    None
}
