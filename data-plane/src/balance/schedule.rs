//! Smooth weighted round-robin (as in nginx): an order in which each member appears in
//! proportion to its weight, spread out rather than in bursts.

/// One full cycle of member indexes for `weights` (all ≥ 1).
pub fn smooth_weighted(weights: &[u32]) -> Vec<usize> {
    let divisor = weights.iter().copied().fold(0, gcd).max(1);
    let weights: Vec<i64> = weights.iter().map(|&w| i64::from(w / divisor)).collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0_i64; weights.len()];
    let mut order = Vec::with_capacity(usize::try_from(total).unwrap_or_default());
    for _ in 0..total {
        for (c, w) in current.iter_mut().zip(&weights) {
            *c += w;
        }
        let Some(best) = (0..current.len()).max_by_key(|&i| (current[i], std::cmp::Reverse(i)))
        else {
            break;
        };
        current[best] -= total;
        order.push(best);
    }
    order
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_members_by_weight() {
        assert_eq!(smooth_weighted(&[5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_weighted(&[1, 1, 1]), [0, 1, 2]);
        assert_eq!(
            smooth_weighted(&[200, 100]),
            [0, 1, 0],
            "reduced by the common divisor"
        );
        let order = smooth_weighted(&[3, 7]);
        assert_eq!(order.iter().filter(|&&i| i == 1).count(), 7);
        assert_eq!(order.len(), 10);
    }

    #[test]
    fn handles_edge_cases() {
        assert!(smooth_weighted(&[]).is_empty());
        assert_eq!(smooth_weighted(&[1000]), [0]);
    }
}
