//! Auto-PGD (Croce & Hein 2020) with the reference's schedule: momentum 0.75, step 2ε halved at
//! checkpoints when progress stalls, restarts from the best point; APGD-CE, APGD-DLR and the
//! targeted APGD-T of AutoAttack.

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use super::rows::{per_image, where_rows, Progress};
use super::{
    check_generators, l2_norms, step_direction, Attack, AttackModel, Inner, Norm, ThreatModel,
    Victim,
};
use crate::losses::{cross_entropy, dlr, dlr_targeted};
use crate::random::BatchRng;
use crate::tensors::{read_bools, read_floats};
use crate::{LtdError, Result};

/// The loss APGD ascends (untargeted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApgdLoss {
    /// Cross-entropy (`apgd-ce`).
    CrossEntropy,
    /// Difference of logits ratio (`apgd-dlr`); needs ≥ 3 classes.
    Dlr,
}

/// Untargeted APGD.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Apgd {
    /// Threat model.
    pub threat: ThreatModel,
    /// Iterations per restart (reference: 100).
    pub iterations: usize,
    /// Restarts, each on the points not yet broken (AutoAttack 'standard': 1).
    pub restarts: usize,
    /// Oscillation threshold ρ (reference: 0.75).
    pub rho: f64,
    /// Loss.
    pub loss: ApgdLoss,
}

impl Apgd {
    /// The reference defaults: 100 iterations, 1 restart, ρ = 0.75.
    pub fn new(threat: ThreatModel, loss: ApgdLoss) -> Self {
        Self {
            threat,
            iterations: 100,
            restarts: 1,
            rho: 0.75,
            loss,
        }
    }
}

/// APGD-T: targeted DLR towards each of the highest-scoring other classes in turn.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApgdTargeted {
    /// Threat model.
    pub threat: ThreatModel,
    /// Iterations per target and restart (reference: 100).
    pub iterations: usize,
    /// Restarts per target (AutoAttack 'standard': 1).
    pub restarts: usize,
    /// Oscillation threshold ρ.
    pub rho: f64,
    /// Targets: the 2nd … (n+1)-th highest clean logits (reference: 9; fewer with fewer classes).
    pub target_classes: usize,
}

impl ApgdTargeted {
    /// The AutoAttack 'standard' configuration.
    pub fn new(threat: ThreatModel) -> Self {
        Self {
            threat,
            iterations: 100,
            restarts: 1,
            rho: 0.75,
            target_classes: 9,
        }
    }
}

/// The 0-indexed iterations at which APGD checks its step size, for `n` iterations:
/// first after ⌊0.22n⌋ steps, then every k steps with k shrinking by ⌊0.03n⌋ down to ⌊0.06n⌋.
pub fn apgd_checkpoints(n: usize) -> Vec<usize> {
    let schedule = Schedule::new(n);
    let mut k = schedule.first;
    let mut checks = Vec::new();
    let mut next = k;
    while next <= n {
        checks.push(next - 1);
        k = (k.saturating_sub(schedule.decrease)).max(schedule.min);
        next += k;
    }
    checks
}

/// Check-interval parameters of the reference.
struct Schedule {
    first: usize,
    decrease: usize,
    min: usize,
}

impl Schedule {
    fn new(n: usize) -> Self {
        let frac = |f: f64| ((f * n as f64) as usize).max(1);
        Self {
            first: frac(0.22),
            decrease: frac(0.03),
            min: frac(0.06),
        }
    }
}

/// What a single run ascends.
enum Objective<B: Backend> {
    CrossEntropy,
    Dlr,
    Targeted(Tensor<B, 1, Int>),
}

impl<B: AutodiffBackend, M: AttackModel<B>> Attack<B, M> for Apgd {
    fn name(&self) -> String {
        match self.loss {
            ApgdLoss::CrossEntropy => "apgd-ce".into(),
            ApgdLoss::Dlr => "apgd-dlr".into(),
        }
    }

    fn perturb_with(
        &self,
        model: &M,
        x: Tensor<Inner<B>, 4>,
        y: Tensor<Inner<B>, 1, Int>,
        rngs: &mut BatchRng,
    ) -> Result<Tensor<Inner<B>, 4>> {
        self.threat.validate()?;
        check_generators(rngs, x.dims()[0])?;
        let victim = Victim::<B, M>::new(model);
        if self.loss == ApgdLoss::Dlr && victim.num_classes() < 3 {
            return Err(LtdError::InvalidInput(format!(
                "the DLR loss needs at least 3 classes; the model has {}",
                victim.num_classes()
            )));
        }
        let mut state = Progress::new(&victim, x, y)?;
        for _ in 0..self.restarts {
            let objective = match self.loss {
                ApgdLoss::CrossEntropy => Objective::CrossEntropy,
                ApgdLoss::Dlr => Objective::Dlr,
            };
            state.attack_remaining(rngs, |x, y, rngs| {
                single_run(
                    &victim,
                    &self.threat,
                    self.iterations,
                    self.rho,
                    x,
                    y,
                    objective,
                    rngs,
                )
            })?;
        }
        Ok(state.adversarial)
    }
}

impl<B: AutodiffBackend, M: AttackModel<B>> Attack<B, M> for ApgdTargeted {
    fn name(&self) -> String {
        "apgd-t".into()
    }

    fn perturb_with(
        &self,
        model: &M,
        x: Tensor<Inner<B>, 4>,
        y: Tensor<Inner<B>, 1, Int>,
        rngs: &mut BatchRng,
    ) -> Result<Tensor<Inner<B>, 4>> {
        self.threat.validate()?;
        check_generators(rngs, x.dims()[0])?;
        let victim = Victim::<B, M>::new(model);
        let classes = victim.num_classes();
        if classes < 4 {
            return Err(LtdError::InvalidInput(format!(
                "the targeted DLR loss needs at least 4 classes; the model has {classes}"
            )));
        }
        let mut state = Progress::new(&victim, x, y)?;
        for rank in 1..=self.target_classes.min(classes - 1) {
            for _ in 0..self.restarts {
                state.attack_remaining(rngs, |x, y, rngs| {
                    // The target is the (rank+1)-th highest clean logit of each remaining image.
                    let order = victim.logits(x.clone()).argsort_descending(1);
                    let targets = order.narrow(1, rank, 1).squeeze_dim::<1>(1);
                    let objective = Objective::Targeted(Tensor::from_inner(targets));
                    single_run(
                        &victim,
                        &self.threat,
                        self.iterations,
                        self.rho,
                        x,
                        y,
                        objective,
                        rngs,
                    )
                })?;
            }
        }
        Ok(state.adversarial)
    }
}

/// One APGD run from a random start on every image of `x`: the last misclassified iterate of
/// each image (or its best-loss point when none was) and which images were misclassified.
#[allow(clippy::too_many_arguments)]
fn single_run<B: AutodiffBackend, M: AttackModel<B>>(
    victim: &Victim<B, M>,
    threat: &ThreatModel,
    iterations: usize,
    rho: f64,
    x: Tensor<Inner<B>, 4>,
    y: Tensor<Inner<B>, 1, Int>,
    objective: Objective<B>,
    rngs: &mut BatchRng,
) -> Result<(Tensor<Inner<B>, 4>, Vec<bool>)> {
    let labels = Tensor::<B, 1, Int>::from_inner(y.clone());
    let evaluate = |x_adv: Tensor<Inner<B>, 4>| {
        let labels = labels.clone();
        victim.loss_and_grad(x_adv, |logits| match &objective {
            Objective::CrossEntropy => cross_entropy(logits, labels),
            Objective::Dlr => dlr(logits, labels),
            Objective::Targeted(targets) => dlr_targeted(logits, labels, targets.clone()),
        })
    };

    let x_adv = random_start(threat, &x, rngs);
    let (logits, loss, grad) = evaluate(x_adv.clone());
    let mut run = Run::new(threat, iterations, x_adv, logits, loss, grad, &y)?;
    for i in 0..iterations {
        run.step(threat, &x, i);
        let (logits, loss, grad) = evaluate(run.x_adv.clone());
        run.record(i, logits, loss, grad, &y)?;
        run.since_check += 1;
        if run.since_check == run.k {
            run.checkpoint(i, iterations, rho);
        }
    }
    let fooled = run.correct.iter().map(|c| !c).collect();
    Ok((run.x_best_adv, fooled))
}

/// The start of a run: `x + ε·t/‖t‖` with t uniform in [−1, 1] (L∞) or standard normal (L2),
/// each image's t from its own generator, clipped to [0, 1].
fn random_start<B: Backend>(
    threat: &ThreatModel,
    x: &Tensor<B, 4>,
    rngs: &mut BatchRng,
) -> Tensor<B, 4> {
    let device = x.device();
    let t = match threat.norm {
        Norm::Linf => rngs.uniform_rows::<B, 4>(x.dims(), -1.0, 1.0, &device),
        Norm::L2 => rngs.normal_rows::<B, 4>(x.dims(), &device),
    };
    let t_norm = match threat.norm {
        Norm::Linf => t
            .clone()
            .abs()
            .flatten::<2>(1, 3)
            .max_dim(1)
            .squeeze_dim::<1>(1),
        Norm::L2 => l2_norms(t.clone()),
    };
    x.clone()
        .add(t.mul_scalar(threat.eps).div(t_norm.reshape([-1, 1, 1, 1])))
        .clamp(0.0, 1.0)
}

/// What an APGD run carries from one iteration to the next: the iterates, the best points and
/// the step-size schedule's bookkeeping, per image.
struct Run<B: Backend> {
    x_adv: Tensor<B, 4>,
    x_adv_old: Tensor<B, 4>,
    /// The highest-loss point so far, where a halving of the step restarts.
    x_best: Tensor<B, 4>,
    /// The last misclassified iterate (the start while there is none).
    x_best_adv: Tensor<B, 4>,
    grad: Tensor<B, 4>,
    grad_best: Tensor<B, 4>,
    /// Still classified correctly at every iterate so far.
    correct: Vec<bool>,
    loss_best: Vec<f32>,
    step: Vec<f32>,
    schedule: Schedule,
    /// Iterations between the last checkpoint and the next.
    k: usize,
    since_check: usize,
    loss_best_last_check: Vec<f32>,
    reduced_last_check: Vec<bool>,
    /// The loss of every iteration, by iteration.
    loss_steps: Vec<Vec<f32>>,
}

impl<B: Backend> Run<B> {
    /// The state at the start `x_adv`, given the model's logits, loss and gradient there.
    fn new(
        threat: &ThreatModel,
        iterations: usize,
        x_adv: Tensor<B, 4>,
        logits: Tensor<B, 2>,
        loss: Tensor<B, 1>,
        grad: Tensor<B, 4>,
        y: &Tensor<B, 1, Int>,
    ) -> Result<Self> {
        let n = x_adv.dims()[0];
        let correct = read_bools(crate::losses::correct(logits, y.clone()))?;
        let loss_best = read_floats(loss)?;
        let schedule = Schedule::new(iterations);
        Ok(Self {
            x_adv_old: x_adv.clone(),
            x_best: x_adv.clone(),
            x_best_adv: x_adv.clone(),
            x_adv,
            grad_best: grad.clone(),
            grad,
            correct,
            step: vec![2.0 * threat.eps as f32; n],
            k: schedule.first,
            schedule,
            since_check: 0,
            loss_best_last_check: loss_best.clone(),
            loss_best,
            reduced_last_check: vec![true; n],
            // The reference reads the row before the first iteration as the last row of a
            // zeroed history: keep that quirk so step-size decisions match.
            loss_steps: vec![vec![0.0f32; n]; iterations.max(1)],
        })
    }

    /// Iteration `i`'s move: a gradient step projected onto the threat model, mixed with the
    /// previous move (momentum 0.75 after the first iteration) and projected again.
    fn step(&mut self, threat: &ThreatModel, x: &Tensor<B, 4>, i: usize) {
        let device = x.device();
        let momentum_delta = self.x_adv.clone().sub(self.x_adv_old.clone());
        self.x_adv_old = self.x_adv.clone();
        let a = if i > 0 { 0.75 } else { 1.0 };
        let eta = per_image::<B>(&self.step, &device);
        let z = threat.project(
            self.x_adv
                .clone()
                .add(step_direction(threat.norm, self.grad.clone()).mul(eta)),
            x.clone(),
        );
        let mixed = self
            .x_adv
            .clone()
            .add(z.sub(self.x_adv.clone()).mul_scalar(a))
            .add(momentum_delta.mul_scalar(1.0 - a));
        self.x_adv = threat.project(mixed, x.clone());
    }

    /// Takes in the logits, loss and gradient at the new iterate: which images it fools, and
    /// which it raises to their highest loss so far.
    fn record(
        &mut self,
        i: usize,
        logits: Tensor<B, 2>,
        loss: Tensor<B, 1>,
        grad: Tensor<B, 4>,
        y: &Tensor<B, 1, Int>,
    ) -> Result<()> {
        self.grad = grad;
        let predicted_correct = read_bools(crate::losses::correct(logits, y.clone()))?;
        let misclassified_now: Vec<bool> = predicted_correct.iter().map(|c| !c).collect();
        for (c, p) in self.correct.iter_mut().zip(&predicted_correct) {
            *c = *c && *p;
        }
        self.x_best_adv = where_rows(
            &misclassified_now,
            self.x_adv.clone(),
            self.x_best_adv.clone(),
        );

        let loss = read_floats(loss)?;
        let improved: Vec<bool> = loss
            .iter()
            .zip(&self.loss_best)
            .map(|(l, b)| l > b)
            .collect();
        self.x_best = where_rows(&improved, self.x_adv.clone(), self.x_best.clone());
        self.grad_best = where_rows(&improved, self.grad.clone(), self.grad_best.clone());
        for j in 0..loss.len() {
            if improved[j] {
                self.loss_best[j] = loss[j];
            }
        }
        self.loss_steps[i] = loss;
        Ok(())
    }

    /// The checkpoint after iteration `i`: halve the step of the images whose loss oscillated
    /// (rose in at most ρ of the last k steps) or stalled since the last checkpoint, and move
    /// them back to their best point.
    fn checkpoint(&mut self, i: usize, iterations: usize, rho: f64) {
        let k = self.k;
        let halve: Vec<bool> = (0..self.step.len())
            .map(|j| {
                let increases = (0..k)
                    .filter(|&c| {
                        let prev =
                            (i as isize - c as isize - 1).rem_euclid(iterations as isize) as usize;
                        self.loss_steps[i - c][j] > self.loss_steps[prev][j]
                    })
                    .count();
                let oscillating = increases as f64 <= k as f64 * rho;
                let stalled = !self.reduced_last_check[j]
                    && self.loss_best_last_check[j] >= self.loss_best[j];
                oscillating || stalled
            })
            .collect();
        for (step, &halve) in self.step.iter_mut().zip(&halve) {
            if halve {
                *step /= 2.0;
            }
        }
        self.x_adv = where_rows(&halve, self.x_best.clone(), self.x_adv.clone());
        self.grad = where_rows(&halve, self.grad_best.clone(), self.grad.clone());
        self.reduced_last_check = halve;
        self.loss_best_last_check = self.loss_best.clone();
        self.k = k
            .saturating_sub(self.schedule.decrease)
            .max(self.schedule.min);
        self.since_check = 0;
    }
}
