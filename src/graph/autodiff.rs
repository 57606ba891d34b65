//! Reverse-mode differentiation over the graph, as a list of backward steps.

use super::compile::Compiler;
use super::ir::{BufId, Graph, Op};
use super::{Backward, Step};

/// Reverse-mode over the graph: visits nodes last to first; each node's layer turns the gradient
/// of its output into gradients of its inputs ([`Layer::backward`](super::rule::Layer::backward)), which
/// [`Backward::contribute`] sums. `saved` holds what each node's forward kept for it.
pub(super) fn derive_backward(
    graph: &Graph,
    c: &mut Compiler,
    act: &[BufId],
    saved: &[Vec<BufId>],
    dlogits: BufId,
) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut grad: Vec<Option<BufId>> = vec![None; graph.nodes.len()];
    grad[graph.nodes.len() - 1] = Some(dlogits);
    for (i, node) in graph.nodes.iter().enumerate().rev() {
        let (Some(dy), Op::Layer(layer)) = (grad[i], &node.op) else { continue };
        layer.backward(&mut Backward {
            compiler: c,
            graph,
            act,
            node: i,
            dy,
            saved: &saved[i],
            steps: &mut steps,
            grad: &mut grad,
        });
    }
    steps
}
