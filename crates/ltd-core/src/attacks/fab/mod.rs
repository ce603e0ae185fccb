//! FAB-T, the targeted Fast Adaptive Boundary attack (Croce & Hein 2020) as AutoAttack runs it:
//! linearise `f = z_t − z_y` at the current point, project both the current point and the clean
//! image onto that hyperplane ∩ [0, 1], step to a mix of the two biased towards the clean image,
//! and keep the smallest adversarial perturbation found. It searches for the *minimal*
//! perturbation, so ε only decides success at the end.
//!
//! Follows the reference (`fab_base.py`, `fab_projections.py`, `fab_pt.py` of
//! `fra31/auto-attack`). The gradient of each step runs on the backend; the projections are
//! per-image sorts and binary searches, done on the host.

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::rows::Progress;
use super::{check_generators, Attack, AttackModel, Inner, Norm, ThreatModel, Victim};
use crate::losses::correct;
use crate::random::BatchRng;
use crate::tensors::{read_bools, read_floats};
use crate::{LtdError, Result};

mod projection;

use projection::{dot, norm_of, project_rows};

/// FAB-T: towards each of the highest-scoring other classes in turn, on the images no earlier
/// target has broken.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FabTargeted {
    /// Threat model: the norm FAB minimises, and ε for success and the random starts.
    pub threat: ThreatModel,
    /// Iterations per target and restart (reference: 100).
    pub iterations: usize,
    /// Restarts per target; the first starts at the clean image, later ones at a random point
    /// at distance ε/2 (AutoAttack 'standard': 1).
    pub restarts: usize,
    /// Targets: the 2nd … (n+1)-th highest clean logits (reference: 9; fewer with fewer classes).
    pub target_classes: usize,
    /// Largest weight α of the clean image's projection in a step (reference: 0.1).
    pub alpha_max: f64,
    /// Overshoot η of each projection step, so steps land past the boundary (reference: 1.05).
    pub eta: f64,
    /// Backward step β towards the clean image after each adversarial point (reference: 0.9).
    pub beta: f64,
}

impl FabTargeted {
    /// The AutoAttack 'standard' configuration: 100 iterations, 1 restart, 9 targets,
    /// α_max = 0.1, η = 1.05, β = 0.9.
    pub fn new(threat: ThreatModel) -> Self {
        Self {
            threat,
            iterations: 100,
            restarts: 1,
            target_classes: 9,
            alpha_max: 0.1,
            eta: 1.05,
            beta: 0.9,
        }
    }

    fn validate(&self) -> Result<()> {
        self.threat.validate()?;
        let bad =
            |what: &str, value: f64| LtdError::InvalidConfig(format!("FAB-T: {what}, got {value}"));
        if !(0.0..=1.0).contains(&self.alpha_max) {
            return Err(bad("α_max must lie in [0, 1]", self.alpha_max));
        }
        if !(self.eta.is_finite() && self.eta > 0.0) {
            return Err(bad("η must be finite and > 0", self.eta));
        }
        if !(0.0..=1.0).contains(&self.beta) {
            return Err(bad("β must lie in [0, 1]", self.beta));
        }
        Ok(())
    }
}

impl<B: AutodiffBackend, M: AttackModel<B>> Attack<B, M> for FabTargeted {
    fn name(&self) -> String {
        "fab-t".into()
    }

    fn perturb_with(
        &self,
        model: &M,
        x: Tensor<Inner<B>, 4>,
        y: Tensor<Inner<B>, 1, Int>,
        rngs: &mut BatchRng,
    ) -> Result<Tensor<Inner<B>, 4>> {
        self.validate()?;
        check_generators(rngs, x.dims()[0])?;
        let victim = Victim::<B, M>::new(model);
        let classes = victim.num_classes();
        if classes < 2 {
            return Err(LtdError::InvalidInput(format!(
                "FAB-T needs at least 2 classes; the model has {classes}"
            )));
        }
        let eps = self.threat.eps as f32;
        let mut state = Progress::new(&victim, x, y)?;
        for rank in 1..=self.target_classes.min(classes - 1) {
            for restart in 0..self.restarts {
                state.attack_remaining(rngs, |x, y, rngs| {
                    // The target is the (rank+1)-th highest clean logit of each remaining image;
                    // the reference re-reads the clean prediction here and attacks only the
                    // images it still classifies correctly.
                    let clean = victim.logits(x.clone());
                    let targets = clean
                        .clone()
                        .argsort_descending(1)
                        .narrow(1, rank, 1)
                        .squeeze_dim::<1>(1);
                    let attackable = read_bools(correct(clean, y.clone()))?;
                    let found = self.single_run(
                        &victim,
                        x.clone(),
                        &y,
                        targets,
                        &attackable,
                        restart > 0,
                        rngs,
                    )?;
                    // Broken iff misclassified within ε; the rest come back clean.
                    let still_correct = read_bools(correct(victim.logits(found.clone()), y))?;
                    let distances = read_floats(self.threat.distances(found.clone(), x))?;
                    let fooled = still_correct
                        .iter()
                        .zip(&distances)
                        .map(|(&c, &d)| !c && d <= eps)
                        .collect();
                    Ok((found, fooled))
                })?;
            }
        }
        Ok(state.adversarial)
    }
}

impl FabTargeted {
    /// One FAB run towards `targets` on every image of `x`: the smallest adversarial point found
    /// for each attackable image (any distance), the clean image for the others.
    #[allow(clippy::too_many_arguments)]
    fn single_run<B: AutodiffBackend, M: AttackModel<B>>(
        &self,
        victim: &Victim<B, M>,
        x: Tensor<Inner<B>, 4>,
        y: &Tensor<Inner<B>, 1, Int>,
        targets: Tensor<Inner<B>, 1, Int>,
        attackable: &[bool],
        random_start: bool,
        rngs: &mut BatchRng,
    ) -> Result<Tensor<Inner<B>, 4>> {
        let dims = x.dims();
        let device = x.device();
        let n = dims[0];
        let dim = dims[1] * dims[2] * dims[3];
        let upload = |v: &[f32]| -> Tensor<Inner<B>, 4> {
            Tensor::from_data(TensorData::new(v.to_vec(), dims), &device)
        };

        let x0 = read_floats(x.clone())?;
        let mut x1 = if random_start {
            self.random_start(x, &x0, rngs)?
        } else {
            x0.clone()
        };
        let mut adv = x0.clone();
        // Smallest adversarial norm so far; 1e10 = none yet.
        let mut best = vec![1e10f32; n];
        let labels = Tensor::<B, 1, Int>::from_inner(y.clone()).unsqueeze_dim::<2>(1);
        let targets = Tensor::<B, 1, Int>::from_inner(targets).unsqueeze_dim::<2>(1);

        for _ in 0..self.iterations {
            // f = z_t − z_y and its gradient at x1 (the reference's targeted linearisation).
            let (_, f, grad) = victim.loss_and_grad(upload(&x1), |logits| {
                let z_t = logits.clone().gather(1, targets.clone());
                let z_y = logits.gather(1, labels.clone());
                z_t.sub(z_y).squeeze_dim::<1>(1)
            });
            let f = read_floats(f)?;
            let w = read_floats(grad)?;
            self.step(&mut x1, &x0, &f, &w, dim);
            let still_correct = read_bools(correct(victim.logits(upload(&x1)), y.clone()))?;
            self.keep_smallest(&mut x1, &x0, &still_correct, &mut adv, &mut best, dim);
        }

        for i in (0..n).filter(|&i| !attackable[i]) {
            let rows = i * dim..(i + 1) * dim;
            adv[rows.clone()].copy_from_slice(&x0[rows]);
        }
        Ok(upload(&adv))
    }

    /// One FAB step of every image, on the host: project the current points `x1` and the clean
    /// images `x0` onto the linearised boundary `f + ⟨w, z − x1⟩ = 0` ∩ [0, 1], and move `x1`
    /// to the η-overshot mix of the two, weighted by α towards the clean image's projection.
    fn step(&self, x1: &mut [f32], x0: &[f32], f: &[f32], w: &[f32], dim: usize) {
        let n = f.len();
        let (eta, alpha_max) = (self.eta as f32, self.alpha_max as f32);
        // The linearisation f(x1) + ⟨w, z − x1⟩ = 0 is the hyperplane ⟨w, z⟩ = b.
        let b: Vec<f32> = (0..n)
            .map(|i| {
                let rows = i * dim..(i + 1) * dim;
                dot(&w[rows.clone()], &x1[rows]) - f[i]
            })
            .collect();
        // Project x1 (rows 0..n) and x0 (rows n..2n) onto the same hyperplanes ∩ box.
        let points = [&*x1, x0].concat();
        let planes = [w, w].concat();
        let offsets = [b.as_slice(), b.as_slice()].concat();
        let d = project_rows(self.threat.norm, &points, &planes, &offsets, dim);
        let (d1, d2) = d.split_at(n * dim);
        for i in 0..n {
            let rows = i * dim..(i + 1) * dim;
            let a1 = norm_of(self.threat.norm, &d1[rows.clone()]).max(1e-8);
            let a2 = norm_of(self.threat.norm, &d2[rows.clone()]).max(1e-8);
            let alpha = (a1 / (a1 + a2)).max(0.0).min(alpha_max);
            for k in rows {
                let towards_x1 = (x1[k] + eta * d1[k]) * (1.0 - alpha);
                let towards_x0 = (x0[k] + d2[k] * eta) * alpha;
                x1[k] = (towards_x1 + towards_x0).clamp(0.0, 1.0);
            }
        }
    }

    /// For each image the step made adversarial (`still_correct` false): keep `x1` in `adv` if
    /// its perturbation is the smallest so far (`best`), then pull `x1` back by β towards the
    /// clean image, to look for a smaller one.
    fn keep_smallest(
        &self,
        x1: &mut [f32],
        x0: &[f32],
        still_correct: &[bool],
        adv: &mut [f32],
        best: &mut [f32],
        dim: usize,
    ) {
        let beta = self.beta as f32;
        for i in (0..still_correct.len()).filter(|&i| !still_correct[i]) {
            let rows = i * dim..(i + 1) * dim;
            let delta: Vec<f32> = rows.clone().map(|k| x1[k] - x0[k]).collect();
            let size = norm_of(self.threat.norm, &delta);
            if size < best[i] {
                adv[rows.clone()].copy_from_slice(&x1[rows.clone()]);
                best[i] = size;
            }
            for (k, delta) in rows.zip(delta) {
                x1[k] = x0[k] + delta * beta;
            }
        }
    }

    /// The reference's random start: `x + (ε/2)·t/‖t‖`, t uniform in [−1, 1] (L∞) or standard
    /// normal (L2), each image's from its own generator, clipped to [0, 1].
    fn random_start<Bk: Backend>(
        &self,
        x: Tensor<Bk, 4>,
        x0: &[f32],
        rngs: &mut BatchRng,
    ) -> Result<Vec<f32>> {
        let dims = x.dims();
        let device = x.device();
        let dim = dims[1] * dims[2] * dims[3];
        let t = read_floats(match self.threat.norm {
            Norm::Linf => rngs.uniform_rows::<Bk, 4>(dims, -1.0, 1.0, &device),
            Norm::L2 => rngs.normal_rows::<Bk, 4>(dims, &device),
        })?;
        let eps = self.threat.eps as f32;
        let mut x1 = vec![0.0; x0.len()];
        for i in 0..dims[0] {
            let rows = i * dim..(i + 1) * dim;
            let size = norm_of(self.threat.norm, &t[rows.clone()]);
            for k in rows {
                x1[k] = (x0[k] + eps * t[k] / size * 0.5).clamp(0.0, 1.0);
            }
        }
        Ok(x1)
    }
}
