//! The host-side projection math of FAB: the minimal L∞ or L2 step from a point onto a
//! hyperplane intersected with the [0, 1] box (the reference's `fab_projections.py`, one row at
//! a time), and the small vector helpers it needs. Pure functions of slices, no backend.

use super::Norm;

/// `⟨a, b⟩`, accumulated in f64.
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(&a, &b)| a as f64 * b as f64)
        .sum::<f64>() as f32
}

/// `‖v‖∞` or `‖v‖₂`.
pub(super) fn norm_of(norm: Norm, v: &[f32]) -> f32 {
    match norm {
        Norm::Linf => v.iter().fold(0.0f32, |m, &x| m.max(x.abs())),
        Norm::L2 => (v.iter().map(|&x| x as f64 * x as f64).sum::<f64>()).sqrt() as f32,
    }
}

/// Projects each row of `points` onto its hyperplane `⟨w, z⟩ = b` intersected with [0, 1]^dim,
/// in the given norm, returning the steps `d` (row-major, like `points`). Rows are independent,
/// so large batches are split across threads without changing any number.
pub(super) fn project_rows(
    norm: Norm,
    points: &[f32],
    w: &[f32],
    b: &[f32],
    dim: usize,
) -> Vec<f32> {
    let rows = b.len();
    let mut d = vec![0.0f32; points.len()];
    if rows == 0 || dim == 0 {
        return d;
    }
    let project = |row: usize, out: &mut [f32]| {
        let range = row * dim..(row + 1) * dim;
        match norm {
            Norm::Linf => projection_linf(&points[range.clone()], &w[range], b[row], out),
            Norm::L2 => projection_l2(&points[range.clone()], &w[range], b[row], out),
        }
    };
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(rows);
    if threads <= 1 || rows * dim < 1 << 15 {
        for (row, out) in d.chunks_mut(dim).enumerate() {
            project(row, out);
        }
    } else {
        let per_thread = rows.div_ceil(threads);
        std::thread::scope(|scope| {
            for (chunk, outs) in d.chunks_mut(per_thread * dim).enumerate() {
                let project = &project;
                scope.spawn(move || {
                    for (j, out) in outs.chunks_mut(dim).enumerate() {
                        project(chunk * per_thread + j, out);
                    }
                });
            }
        });
    }
    d
}

/// Indices sorting `values` ascending (stable).
fn argsort(values: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&i, &j| values[i].total_cmp(&values[j]));
    order
}

/// Running sums accumulated in f64, stored in f32.
fn cumsum(values: impl Iterator<Item = f32>) -> Vec<f32> {
    let mut acc = 0.0f64;
    values
        .map(|v| {
            acc += v as f64;
            acc as f32
        })
        .collect()
}

/// Binary search of the reference: ⌈log₂ dim⌉ halvings of [0, dim − 1], moving the lower end
/// wherever `above(k)` holds.
fn binary_search(dim: usize, above: impl Fn(usize) -> bool) -> usize {
    let (mut lb, mut ub) = (0usize, dim - 1);
    let steps = (dim as f64).log2().ceil() as usize;
    for _ in 0..steps {
        let k = (lb + ub) / 2;
        if above(k) {
            lb = k;
        } else {
            ub = k;
        }
    }
    lb
}

/// Minimal-L∞ step `d` from `t` onto `{z : ⟨w, z⟩ = b} ∩ [0, 1]^n` (the reference's
/// `projection_linf`, one row). With the sign of `w` chosen so the step must decrease `⟨w, ·⟩`,
/// moving every coordinate by λ towards its box face decreases it by a piecewise-linear amount:
/// coordinates are sorted by their distance `p` to that face, and a binary search over the
/// sorted order finds the piece where the optimal λ lies. When the hyperplane is out of the
/// box's reach, `d` goes to the box corner that comes closest.
fn projection_linf(t: &[f32], w_in: &[f32], b_in: f32, d: &mut [f32]) {
    let dim = t.len();
    let wt = dot(w_in, t);
    let sign = if wt - b_in >= 0.0 { 1.0f32 } else { -1.0 };
    let w: Vec<f32> = w_in.iter().map(|&w| w * sign).collect();
    let b = b_in * sign;

    // a: the face each coordinate moves towards (1 where w < 0); d: the full move to it.
    let a: Vec<f32> = w.iter().map(|&w| (w < 0.0) as u8 as f32).collect();
    for k in 0..dim {
        d[k] = (a[k] - t[k]) * (w[k] != 0.0) as u8 as f32;
    }
    let p: Vec<f32> = (0..dim).map(|k| a[k] - t[k] * (2.0 * a[k] - 1.0)).collect();
    let indp = argsort(&p);

    // Needed change of ⟨w, ·⟩ (≤ 0), and the change of the full move to the corner.
    let b = b - wt * sign;
    let b0 = dot(&w, d);

    // In descending order of p: s = Σ|w|, sb = b0 + Σ|w|·p over the coordinates capped at λ.
    let s = cumsum(indp.iter().rev().map(|&k| w[k].abs()));
    let sb: Vec<f32> = cumsum(indp.iter().rev().map(|&k| -w[k] * d[k]))
        .into_iter()
        .map(|v| v + b0)
        .collect();

    let last = dim - 1;
    let b2 = sb[last] - s[last] * p[indp[0]];
    let all_capped = b - b2 > 0.0;
    let reachable = b - b0 > 0.0 && !all_capped;

    if all_capped {
        let lambda = ((b - sb[last]) / -s[last]).max(0.0);
        for k in 0..dim {
            d[k] = (2.0 * a[k] - 1.0) * lambda;
        }
    } else if reachable {
        let lb = binary_search(dim, |k| {
            let current = indp[dim - 1 - k];
            b - (sb[k] - s[k] * p[current]) > 0.0
        });
        let lambda = ((b - sb[lb]) / -s[lb]).max(0.0);
        for k in 0..dim {
            d[k] = lambda.min(d[k]) * a[k] + (-lambda).max(d[k]) * (1.0 - a[k]);
        }
    }
    for k in 0..dim {
        d[k] *= (w[k] != 0.0) as u8 as f32;
    }
}

/// Minimal-L2 step `d` from `t` onto `{z : ⟨w, z⟩ = b} ∩ [0, 1]^n` (the reference's
/// `projection_l2`, one row): the step is `−μw` clipped to the box; coordinates hit their face at
/// `r = μ`, sorted, and a binary search over the sorted order finds μ. Out of reach, `d` goes to
/// the box corner.
fn projection_l2(t: &[f32], w_in: &[f32], b: f32, d: &mut [f32]) {
    let dim = t.len();
    let c = dot(w_in, t) - b;
    let sign = if c >= 0.0 { 1.0f32 } else { -1.0 };
    let w: Vec<f32> = w_in.iter().map(|&w| w * sign).collect();
    let c = c * sign;

    // r: the μ at which each coordinate reaches its face (1e12 for w ≈ 0).
    let r: Vec<f32> = (0..dim)
        .map(|k| {
            let r = (t[k] / w[k]).max((t[k] - 1.0) / w[k]).clamp(-1e12, 1e12);
            if w[k].abs() < 1e-8 || r == -1e12 {
                1e12
            } else {
                r
            }
        })
        .collect();
    let indr = argsort(&r);
    let mut rs: Vec<f32> = indr.iter().map(|&k| r[k]).collect();
    let mut rs2: Vec<f32> = rs[1..].iter().copied().chain([0.0]).collect();
    for v in rs.iter_mut().chain(rs2.iter_mut()) {
        if *v == 1e12 {
            *v = 0.0;
        }
    }

    let w3s: Vec<f32> = indr.iter().map(|&k| w[k] * w[k]).collect();
    let w5 = w.iter().map(|&w| w as f64 * w as f64).sum::<f64>() as f32;
    let ws: Vec<f32> = cumsum(w3s.iter().copied())
        .into_iter()
        .map(|v| w5 - v)
        .collect();
    for k in 0..dim {
        d[k] = -(r[k] * w[k]) * (w[k].abs() > 1e-8) as u8 as f32;
    }
    let s0 = -w5 * rs[0];
    let s: Vec<f32> = std::iter::once(s0)
        .chain(
            cumsum((0..dim).map(|k| (-rs2[k] + rs[k]) * ws[k]))
                .into_iter()
                .map(|v| v + s0),
        )
        .collect();

    let unclipped = s[0] + c < 0.0;
    let unreachable = dot(d, &w) + c > 0.0;
    if unclipped {
        let alpha = c / w5;
        for k in 0..dim {
            d[k] = -alpha * w[k];
        }
    } else if !unreachable {
        let lb = binary_search(dim, |k| s[k] + c > 0.0);
        let alpha = if ws[lb] == 0.0 {
            0.0
        } else {
            (s[lb] + c) / ws[lb] + rs[lb]
        };
        for k in 0..dim {
            if alpha <= r[k] {
                d[k] = -alpha * w[k];
            }
        }
    }
    for k in 0..dim {
        d[k] *= (w[k].abs() > 1e-8) as u8 as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Random rows: pixels partly on the box faces, weights partly zero, hyperplanes at offsets
    /// from easy to out of reach.
    fn cases() -> Vec<(Vec<f32>, Vec<f32>, f32)> {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let dim = 37;
        (0..400)
            .map(|case| {
                let t: Vec<f32> = (0..dim)
                    .map(|_| match rng.random_range(0..6) {
                        0 => 0.0,
                        1 => 1.0,
                        _ => rng.random_range(0.0..1.0),
                    })
                    .collect();
                let w: Vec<f32> = (0..dim)
                    .map(|_| {
                        if rng.random_range(0..5) == 0 {
                            0.0
                        } else {
                            rng.random_range(-1.0..1.0)
                        }
                    })
                    .collect();
                let scale = [0.01, 0.3, 1.0, 3.0, 10.0, 30.0][case % 6];
                let b = dot(&w, &t) + scale * rng.random_range(-1.0f32..1.0);
                (t, w, b)
            })
            .collect()
    }

    /// The optimum by bisection on the KKT form: `d(λ) = clip(step(λ), box)` with
    /// `step = −λ·sign(w)` (L∞) or `−λ·w` (L2), λ ≥ 0 chosen so `⟨w, t + d⟩ = b`; `None` when the
    /// hyperplane is out of the box's reach.
    fn bisection(norm: Norm, t: &[f32], w: &[f32], b: f32) -> Option<Vec<f64>> {
        let c = dot(w, t) as f64 - b as f64;
        let sign = if c >= 0.0 { 1.0 } else { -1.0 };
        let step = |lambda: f64| -> Vec<f64> {
            t.iter()
                .zip(w)
                .map(|(&t, &w)| {
                    let w = w as f64 * sign;
                    let raw = match norm {
                        Norm::Linf => -lambda * w.signum() * (w != 0.0) as u8 as f64,
                        Norm::L2 => -lambda * w,
                    };
                    raw.clamp(-(t as f64), 1.0 - t as f64)
                })
                .collect()
        };
        let change =
            |d: &[f64]| -> f64 { d.iter().zip(w).map(|(d, &w)| d * w as f64 * sign).sum() };
        let target = -c * sign;
        if change(&step(1e9)) > target + 1e-9 {
            return None;
        }
        let (mut lo, mut hi) = (0.0f64, 1e9f64);
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if change(&step(mid)) > target {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Some(step(hi))
    }

    fn check(norm: Norm, project: fn(&[f32], &[f32], f32, &mut [f32])) {
        let (mut reached, mut unreached) = (0, 0);
        for (t, w, b) in cases() {
            let mut d = vec![0.0; t.len()];
            project(&t, &w, b, &mut d);
            for (&t, &d) in t.iter().zip(&d) {
                assert!((-1e-6..=1.0 + 1e-6).contains(&(t + d)), "left the box");
            }
            match bisection(norm, &t, &w, b) {
                Some(expected) => {
                    reached += 1;
                    let got = norm_of(norm, &d) as f64;
                    let want = norm_of(
                        norm,
                        &expected.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                    ) as f64;
                    assert!((got - want).abs() <= 1e-4 * (1.0 + want), "{got} vs {want}");
                    let residual = dot(&w, &t) as f64 + dot(&w, &d) as f64 - b as f64;
                    assert!(residual.abs() < 1e-3, "off the hyperplane by {residual}");
                }
                None => {
                    unreached += 1;
                    // Out of reach: the box corner that comes closest.
                    for ((&t, &w), &d) in t.iter().zip(&w).zip(&d) {
                        if w != 0.0 {
                            let z = t + d;
                            assert!(z.abs() < 1e-6 || (z - 1.0).abs() < 1e-6, "not a corner");
                        }
                    }
                }
            }
        }
        assert!(
            reached > 100 && unreached > 20,
            "{reached} reached, {unreached} not"
        );
    }

    #[test]
    fn linf_projection_is_the_minimal_step_onto_hyperplane_and_box() {
        check(Norm::Linf, projection_linf);
    }

    #[test]
    fn l2_projection_is_the_minimal_step_onto_hyperplane_and_box() {
        check(Norm::L2, projection_l2);
    }
}
