//! The Square attack (Andriushchenko et al. 2020) as AutoAttack's 'standard' version runs it
//! (reference `square.py`): a random search that only reads logits — no gradients — so gradient
//! masking cannot hide a weak model from it. Each iteration proposes a change inside one random
//! square window; an image keeps the proposal when its margin drops or it becomes misclassified.
//!
//! Randomness: the start (L∞ stripes, L2 tile signs) and the L2 window signs are per image,
//! from the image's own generator of the [`BatchRng`]. Like the reference, each iteration draws
//! the window's position (and the L∞ window's channel signs, the L2 pattern's orientation) once
//! for the whole batch; these come from the shared generator, which does not depend on the batch
//! (AutoAttack derives it from its seed and stage), so every batch sees the same windows and an
//! image's result does not depend on the images beside it.

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::rows::{index_tensor, where_rows, Progress};
use super::{check_generators, l2_norms, Attack, AttackModel, Inner, Norm, ThreatModel, Victim};
use crate::losses::{correct, margin};
use crate::random::{index_below, signs, BatchRng};
use crate::tensors::{read_bools, read_floats};
use crate::{LtdError, Result};

/// Iterations after which the reference halves p (AutoAttack builds Square with
/// `resc_schedule=False`, so these hold whatever the query budget).
const P_HALVINGS: [usize; 9] = [10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000];

/// Untargeted Square attack with the margin loss `z_y − max_{j≠y} z_j`. As in the reference,
/// each iteration's window is drawn once for the whole batch (from the [`BatchRng`]'s shared
/// generator, the same for every batch under AutoAttack); everything else is per image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Square {
    /// Threat model (L∞ or L2).
    pub threat: ThreatModel,
    /// Iterations per restart, one model query each after the initial one (reference: 5000).
    pub queries: usize,
    /// Initial fraction of the image a window covers (reference: 0.8).
    pub p_init: f64,
    /// Restarts, each on the points not yet broken (reference: 1).
    pub restarts: usize,
}

impl Square {
    /// AutoAttack's 'standard' configuration: 5000 queries, p_init = 0.8, 1 restart.
    pub fn new(threat: ThreatModel) -> Self {
        Self {
            threat,
            queries: 5000,
            p_init: 0.8,
            restarts: 1,
        }
    }

    /// The window fraction p at 0-indexed `iteration` (reference `p_selection`, not rescaled to
    /// the query budget): p_init, halved after iterations 10, 50, 200, 500, 1000, 2000, 4000,
    /// 6000 and 8000.
    pub fn p_selection(&self, iteration: usize) -> f64 {
        let halvings = P_HALVINGS.iter().filter(|&&t| iteration > t).count();
        self.p_init / f64::powi(2.0, halvings as i32)
    }

    /// The window side at 0-indexed `iteration` for images `[c, h, w]`: `round(√(p·h·w))`
    /// (Python's round, ties to even), at least 1 (L∞) or an odd number ≥ 3 (L2), at most
    /// `min(h, w)`.
    pub fn side(&self, iteration: usize, [c, h, w]: [usize; 3]) -> usize {
        let features = (c * h * w) as f64;
        // The reference computes p·(c·h·w)/c; same order, same rounding.
        let raw = (self.p_selection(iteration) * features / c as f64)
            .sqrt()
            .round_ties_even() as usize;
        let side = match self.threat.norm {
            Norm::Linf => raw.max(1),
            Norm::L2 => {
                let s = raw.max(3);
                s + (1 - s % 2)
            }
        };
        side.min(h.min(w))
    }

    fn validate(&self, [n, c, h, w]: [usize; 4]) -> Result<()> {
        self.threat.validate()?;
        if !(self.p_init > 0.0 && self.p_init <= 1.0) {
            return Err(LtdError::InvalidConfig(format!(
                "Square's p_init must lie in (0, 1], got {}",
                self.p_init
            )));
        }
        if n > 0 && (c == 0 || h == 0 || w == 0) {
            return Err(LtdError::InvalidInput(format!(
                "Square needs non-empty images, got [{n}, {c}, {h}, {w}]"
            )));
        }
        if self.threat.norm == Norm::L2 && n > 0 && h < 5 {
            // The L2 start tiles the image with squares of side ⌊h/5⌋.
            return Err(LtdError::InvalidInput(format!(
                "L2 Square needs images at least 5 pixels high, got {h}"
            )));
        }
        Ok(())
    }

    /// One run on every image of `x`: the best point found per image (misclassified ones as soon
    /// as they are).
    fn single_run<B: AutodiffBackend, M: AttackModel<B>>(
        &self,
        victim: &Victim<B, M>,
        x: Tensor<Inner<B>, 4>,
        y: Tensor<Inner<B>, 1, Int>,
        rngs: &mut BatchRng,
    ) -> Result<Tensor<Inner<B>, 4>> {
        let [_, c, h, w] = x.dims();
        let start = match self.threat.norm {
            Norm::Linf => linf_start(x.clone(), self.threat.eps, rngs),
            Norm::L2 => l2_start(x.clone(), self.threat.eps, rngs),
        };
        let margins = read_floats(margin(victim.logits(start.clone()), y.clone()))?;
        let mut search = Search::new(x, y, start, margins);
        for iteration in 0..self.queries {
            if search.rows.is_empty() {
                break;
            }
            let s = self.side(iteration, [c, h, w]);
            let candidate = match self.threat.norm {
                Norm::Linf => linf_candidate(&search, self.threat.eps, s, rngs.shared()),
                Norm::L2 => l2_candidate(&search, self.threat.eps, s, rngs),
            };
            let margins = read_floats(margin(victim.logits(candidate.clone()), search.y.clone()))?;
            search.update(candidate, &margins);
        }
        Ok(search.finish())
    }
}

impl<B: AutodiffBackend, M: AttackModel<B>> Attack<B, M> for Square {
    fn name(&self) -> String {
        "square".into()
    }

    fn perturb_with(
        &self,
        model: &M,
        x: Tensor<Inner<B>, 4>,
        y: Tensor<Inner<B>, 1, Int>,
        rngs: &mut BatchRng,
    ) -> Result<Tensor<Inner<B>, 4>> {
        self.validate(x.dims())?;
        check_generators(rngs, x.dims()[0])?;
        let victim = Victim::<B, M>::new(model);
        let mut state = Progress::new(&victim, x, y)?;
        for _ in 0..self.restarts {
            state.attack_remaining(rngs, |x, y, rngs| {
                let found = self.single_run(&victim, x, y.clone(), rngs)?;
                // As the reference: broken means the final point's arg-max differs from y.
                let still = read_bools(correct(victim.logits(found.clone()), y))?;
                Ok((found, still.iter().map(|c| !c).collect()))
            })?;
        }
        Ok(state.adversarial)
    }
}

/// The search state: the best point of every image, and the images still attacked (margin > 0,
/// as the reference's `idx_to_fool`) with their clean images, labels, best points and margins.
/// Once an image's margin reaches ≤ 0 it never changes again, so the working set only shrinks.
struct Search<B: Backend> {
    best: Tensor<B, 4>,
    rows: Vec<usize>,
    x: Tensor<B, 4>,
    y: Tensor<B, 1, Int>,
    current: Tensor<B, 4>,
    margins: Vec<f32>,
}

impl<B: Backend> Search<B> {
    fn new(x: Tensor<B, 4>, y: Tensor<B, 1, Int>, start: Tensor<B, 4>, margins: Vec<f32>) -> Self {
        let mut search = Self {
            best: start.clone(),
            rows: (0..margins.len()).collect(),
            x,
            y,
            current: start,
            margins,
        };
        search.drop_finished();
        search
    }

    /// Keeps a candidate wherever its margin is lower or ≤ 0 (the reference's acceptance rule).
    fn update(&mut self, candidate: Tensor<B, 4>, margins: &[f32]) {
        let accept: Vec<bool> = margins
            .iter()
            .zip(&self.margins)
            .map(|(&new, &best)| new < best || new <= 0.0)
            .collect();
        self.current = where_rows(&accept, candidate, self.current.clone());
        for ((best, &new), &a) in self.margins.iter_mut().zip(margins).zip(&accept) {
            if a {
                *best = new;
            }
        }
        self.drop_finished();
    }

    /// Writes the working rows back to `best` and leaves only images with margin > 0.
    fn drop_finished(&mut self) {
        let keep: Vec<usize> = (0..self.rows.len())
            .filter(|&i| self.margins[i] > 0.0)
            .collect();
        if keep.len() == self.rows.len() {
            return;
        }
        self.flush();
        let device = self.x.device();
        let index = index_tensor::<B>(&keep, &device);
        self.x = self.x.clone().select(0, index.clone());
        self.y = self.y.clone().select(0, index.clone());
        self.current = self.current.clone().select(0, index);
        self.rows = keep.iter().map(|&i| self.rows[i]).collect();
        self.margins = keep.iter().map(|&i| self.margins[i]).collect();
    }

    /// Copies the working set's best points into `best`.
    fn flush(&mut self) {
        if self.rows.is_empty() {
            return;
        }
        let n = self.best.dims()[0];
        let mut source: Vec<usize> = (0..n).collect();
        for (pos, &row) in self.rows.iter().enumerate() {
            source[row] = n + pos;
        }
        let stacked = Tensor::cat(vec![self.best.clone(), self.current.clone()], 0);
        self.best = stacked.select(0, index_tensor::<B>(&source, &self.best.device()));
    }

    fn finish(mut self) -> Tensor<B, 4> {
        self.flush();
        self.best
    }
}

/// L∞ start: `x + ε·s` with one random sign per (image, channel, column) — vertical stripes,
/// each image's from its own generator — clipped to [0, 1].
fn linf_start<B: Backend>(x: Tensor<B, 4>, eps: f64, rngs: &mut BatchRng) -> Tensor<B, 4> {
    let [n, c, _, w] = x.dims();
    let stripes = rngs.signs_rows::<B, 4>([n, c, 1, w], &x.device());
    x.add(stripes.mul_scalar(eps)).clamp(0.0, 1.0)
}

/// L∞ proposal: one window (position and per-channel signs shared by the whole batch, as in the
/// reference, drawn from the `shared` generator) moved by ±2ε, then clipped to the ε-ball and
/// [0, 1] — so the window lands on a vertex of the ball.
fn linf_candidate<B: Backend>(
    search: &Search<B>,
    eps: f64,
    s: usize,
    rng: &mut ChaCha8Rng,
) -> Tensor<B, 4> {
    let [_, c, h, w] = search.x.dims();
    let device = search.x.device();
    let vh = index_below(rng, h - s);
    let vw = index_below(rng, w - s);
    let channel_signs = signs::<B, 4>(rng, [1, c, 1, 1], &device);
    let delta = window_mask::<B>(h, w, s, &[(vh, vw)], &device)
        .mul(channel_signs)
        .mul_scalar(2.0 * eps);
    let x = &search.x;
    search
        .current
        .clone()
        .add(delta)
        .max_pair(x.clone().sub_scalar(eps))
        .min_pair(x.clone().add_scalar(eps))
        .clamp(0.0, 1.0)
}

/// L2 start: a grid of ⌊h/5⌋-sided tiles from offset ⌊(h − 5⌊h/5⌋)/2⌋, each an `eta` pattern
/// (its orientation shared by the batch, as in the reference) with one random sign per (image,
/// channel), the sum rescaled to norm ε and clipped to [0, 1]. Tiles crossing the border are
/// cropped (the reference fails on such sizes, e.g. h = 12).
fn l2_start<B: Backend>(x: Tensor<B, 4>, eps: f64, rngs: &mut BatchRng) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let device = x.device();
    let s = h / 5;
    let offset = (h - 5 * s) / 2;
    let mut delta = Tensor::<B, 4>::zeros([n, c, h, w], &device);
    for th in 0..h / s {
        for tw in 0..w / s {
            let (vh, vw) = (offset + th * s, offset + tw * s);
            let pattern = eta(s, rngs.shared());
            let mut placed = vec![0.0f32; h * w];
            for r in 0..s.min(h.saturating_sub(vh)) {
                for q in 0..s.min(w.saturating_sub(vw)) {
                    placed[(vh + r) * w + vw + q] = pattern[r * s + q];
                }
            }
            let placed = Tensor::<B, 4>::from_data(TensorData::new(placed, [1, 1, h, w]), &device);
            delta = delta.add(placed.mul(rngs.signs_rows::<B, 4>([n, c, 1, 1], &device)));
        }
    }
    x.add(unit_l2(delta).mul_scalar(eps)).clamp(0.0, 1.0)
}

/// L2 proposal (the reference's window swap): mass is taken from two windows W₁, W₂ (positions
/// and pattern shared by the batch); W₂ is zeroed and W₁ becomes a fresh `eta` pattern (random
/// sign per image and channel, from the image's generator) plus W₁'s old content normalised,
/// scaled per channel to `√(max(ε² − ‖δ‖², 0)/c + ‖δ on W₁ ∪ W₂‖²)`; the whole perturbation is
/// then rescaled to norm ε and clipped to [0, 1].
fn l2_candidate<B: Backend>(
    search: &Search<B>,
    eps: f64,
    s: usize,
    rngs: &mut BatchRng,
) -> Tensor<B, 4> {
    let [m, c, h, w] = search.x.dims();
    let device = search.x.device();
    let rng = rngs.shared();
    let vh = index_below(rng, h - s);
    let vw = index_below(rng, w - s);
    let vh2 = index_below(rng, h - s);
    let vw2 = index_below(rng, w - s);
    let window1 = [0..m, 0..c, vh..vh + s, vw..vw + s];
    let window2 = [0..m, 0..c, vh2..vh2 + s, vw2..vw2 + s];
    let channel_norms = |t: Tensor<B, 4>| t.square().sum_dims(&[2, 3]).sqrt();

    let delta = search.current.clone().sub(search.x.clone());
    let old = delta.clone().slice(window1.clone());
    let old_norms = channel_norms(old.clone());
    let image_norms = l2_norms(delta.clone()).reshape([m, 1, 1, 1]);
    let union = window_mask::<B>(h, w, s, &[(vh, vw), (vh2, vw2)], &device);
    let window_norms = channel_norms(delta.clone().mul(union));

    let pattern = Tensor::<B, 4>::from_data(TensorData::new(eta(s, rng), [1, 1, s, s]), &device);
    let signs = rngs.with_rows(&search.rows, |rows| {
        rows.signs_rows::<B, 4>([m, c, 1, 1], &device)
    });
    let fresh = pattern.mul(signs).add(old.div(old_norms.add_scalar(1e-12)));
    let budget = image_norms
        .square()
        .neg()
        .add_scalar(eps * eps)
        .clamp_min(0.0)
        .div_scalar(c as f64)
        .add(window_norms.square())
        .sqrt();
    let fresh = fresh
        .clone()
        .div(channel_norms(fresh).add_scalar(1e-12))
        .mul(budget);
    let delta = delta
        .slice_assign(window2, Tensor::zeros([m, c, s, s], &device))
        .slice_assign(window1, fresh);
    search
        .x
        .clone()
        .add(unit_l2(delta).mul_scalar(eps))
        .clamp(0.0, 1.0)
}

/// `t / (‖t‖₂ + 1e-12)` per image.
fn unit_l2<B: Backend>(t: Tensor<B, 4>) -> Tensor<B, 4> {
    let norms = l2_norms(t.clone()).add_scalar(1e-12).reshape([-1, 1, 1, 1]);
    t.div(norms)
}

/// A `[1, 1, h, w]` mask of ones on the union of `s`-sided windows at the given corners.
fn window_mask<B: Backend>(
    h: usize,
    w: usize,
    s: usize,
    corners: &[(usize, usize)],
    device: &B::Device,
) -> Tensor<B, 4> {
    let mut mask = vec![0.0f32; h * w];
    for &(vh, vw) in corners {
        for r in vh..(vh + s).min(h) {
            for q in vw..(vw + s).min(w) {
                mask[r * w + q] = 1.0;
            }
        }
    }
    Tensor::from_data(TensorData::new(mask, [1, 1, h, w]), device)
}

/// The reference's L2 square pattern `eta(s)`, row-major `s × s`: the top ⌊s/2⌋ rows a positive
/// and the rest a negative `rectangles` block, unit L2 norm, transposed with probability ½.
fn eta(s: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let top = s / 2;
    let mut pattern = rectangles(top, s);
    pattern.extend(rectangles(s - top, s).iter().map(|v| -v));
    let norm = pattern.iter().map(|v| v * v).sum::<f64>().sqrt();
    let pattern: Vec<f64> = pattern.iter().map(|v| v / norm).collect();
    let transpose = rng.random_bool(0.5);
    (0..s * s)
        .map(|i| {
            let (r, q) = (i / s, i % s);
            let v = if transpose {
                pattern[q * s + r]
            } else {
                pattern[i]
            };
            v as f32
        })
        .collect()
}

/// The reference's `eta_rectangles(rows, cols)`: concentric rectangles around the centre
/// (⌊rows/2⌋, ⌊cols/2⌋), ring k adding 1/(k+1)² to its whole interior, unit L2 norm.
fn rectangles(rows: usize, cols: usize) -> Vec<f64> {
    let mut block = vec![0.0f64; rows * cols];
    let (centre_r, centre_c) = (rows / 2 + 1, cols / 2 + 1);
    // Ring k spans [centre − 1 − k, centre + k) in each direction, clipped to the block.
    for k in 0..centre_r.max(centre_c) {
        let r_lo = (centre_r - 1).saturating_sub(k);
        let r_hi = (centre_r + k).min(rows);
        let c_lo = (centre_c - 1).saturating_sub(k);
        let c_hi = (centre_c + k).min(cols);
        let weight = 1.0 / ((k + 1) * (k + 1)) as f64;
        for r in r_lo..r_hi {
            for q in c_lo..c_hi {
                block[r * cols + q] += weight;
            }
        }
    }
    let norm = block.iter().map(|v| v * v).sum::<f64>().sqrt();
    if norm > 0.0 {
        for v in &mut block {
            *v /= norm;
        }
    }
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rectangles_match_the_reference_pattern() {
        // eta_rectangles(3, 3) before normalisation: ring 0 the centre (1), ring 1 the whole
        // 3 × 3 block (+1/4).
        let block = rectangles(3, 3);
        let scale = block[0] / 0.25;
        let expected = [0.25, 0.25, 0.25, 0.25, 1.25, 0.25, 0.25, 0.25, 0.25];
        for (b, e) in block.iter().zip(expected) {
            assert!((b / scale - e).abs() < 1e-12, "{block:?}");
        }
        // eta_rectangles(1, 3): ring 0 column 1, ring 1 all three columns.
        let row = rectangles(1, 3);
        assert!((row[1] / row[0] - 5.0).abs() < 1e-12 && (row[0] - row[2]).abs() < 1e-12);
        assert!(rectangles(0, 3).is_empty());
    }

    #[test]
    fn eta_has_unit_norm_and_opposite_halves() {
        use rand::SeedableRng;
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for s in [1usize, 3, 5, 6] {
            for _ in 0..4 {
                let p = eta(s, &mut rng);
                let norm: f32 = p.iter().map(|v| v * v).sum::<f32>().sqrt();
                assert!((norm - 1.0).abs() < 1e-5);
                // The pattern sums to zero only when both halves have equal size.
                let total: f32 = p.iter().sum();
                if s % 2 == 0 {
                    assert!(total.abs() < 1e-5);
                }
                assert!(p.iter().any(|&v| v < 0.0));
            }
        }
    }
}
