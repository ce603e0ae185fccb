//! What the gradient-masking checks look at, measured image by image: the robustness each
//! attack leaves, the input gradient on the clean point, and how saturated the softmax is.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor};

use super::MaskingConfig;
use crate::attacks::{Attack, AttackModel, Fgsm, Inner, Pgd, PgdLoss, Square, ThreatModel, Victim};
use crate::losses::{correct, cross_entropy};
use crate::random::derived;
use crate::tensors::{read_bools, read_floats};
use crate::Result;

/// Random streams of the attacks, so each image's draws depend only on (seed, attack, batch).
mod stream {
    pub const PGD: u64 = 1;
    pub const LONG: u64 = 2;
    pub const SWEEP: u64 = 3;
    pub const SQUARE: u64 = 4;
    pub const TRANSFER: u64 = 5;
}

/// One image's measurements. "Robust" means still correctly classified after the attack (a
/// misclassified clean image is robust to nothing).
#[derive(Debug, Clone, Default)]
pub(super) struct PerImage {
    pub correct: bool,
    pub fgsm: bool,
    pub pgd: bool,
    /// Robust to PGD and to every long restart.
    pub long: bool,
    /// Robust at each ε of the sweep.
    pub sweep: Vec<bool>,
    /// Robust to every white-box attack at ε (FGSM, PGD, the long runs, the sweep at ε).
    pub white_box: bool,
    /// Robust to every white-box attack at ε and then to Square.
    pub square: bool,
    pub transfer: Option<bool>,
    /// L1 norm of the input gradient of the cross-entropy at the clean point.
    pub gradient_l1: f64,
    /// Values per image (C·H·W), to read the norm per pixel.
    pub pixels: usize,
    /// 1 − the top softmax probability, computed in f64 from the logits.
    pub top_gap: f64,
}

/// Whether each image of `x_adv` is still classified as `y`, for images correct on `clean`.
fn still_correct<B: AutodiffBackend, M: AttackModel<B>>(
    victim: &Victim<B, M>,
    x_adv: Tensor<Inner<B>, 4>,
    y: Tensor<Inner<B>, 1, Int>,
    clean: &[bool],
) -> Result<Vec<bool>> {
    let now = read_bools(correct(victim.logits(x_adv), y))?;
    Ok(now.iter().zip(clean).map(|(a, b)| *a && *b).collect())
}

fn and(a: &[bool], b: &[bool]) -> Vec<bool> {
    a.iter().zip(b).map(|(x, y)| *x && *y).collect()
}

/// Measures one batch (`index` numbers it for the random streams).
pub(super) fn batch<B, M, S>(
    config: &MaskingConfig,
    model: &M,
    surrogate: Option<&S>,
    x: Tensor<Inner<B>, 4>,
    y: Tensor<Inner<B>, 1, Int>,
    index: u64,
) -> Result<Vec<PerImage>>
where
    B: AutodiffBackend,
    M: AttackModel<B>,
    S: AttackModel<B>,
{
    let victim = Victim::<B, M>::new(model);
    let rng = |stream: u64, k: u64| derived(config.seed, stream * 1_000 + k, index);
    let threat = config.threat;
    let labels = Tensor::<B, 1, Int>::from_inner(y.clone());
    let (logits, _, grad) = victim.loss_and_grad(x.clone(), |logits| cross_entropy(logits, labels));
    let clean = read_bools(correct(logits.clone(), y.clone()))?;
    let attack = |a: &dyn Attack<B, M>, stream: u64, k: u64| -> Result<Vec<bool>> {
        let x_adv = a.perturb(model, x.clone(), y.clone(), &mut rng(stream, k))?;
        still_correct(&victim, x_adv, y.clone(), &clean)
    };

    let found = white_box::<B, M>(config, &clean, &attack)?;
    let WhiteBox {
        fgsm,
        pgd,
        long,
        sweep,
        all: white_box,
    } = found;
    let square = square_on(
        config,
        model,
        &victim,
        &x,
        &y,
        &white_box,
        rng(stream::SQUARE, 0),
    )?;
    let transfer = match surrogate {
        Some(s) => {
            let x_adv = config.pgd(threat, config.steps).perturb(
                s,
                x.clone(),
                y.clone(),
                &mut rng(stream::TRANSFER, 0),
            )?;
            Some(still_correct(&victim, x_adv, y.clone(), &clean)?)
        }
        None => None,
    };
    let [_, c, h, w] = x.dims();
    let pixels = c * h * w;
    let gradient_l1 = read_floats(grad.abs().flatten::<2>(1, 3).sum_dim(1))?;
    let top_gap = top_gaps(logits)?;
    Ok((0..clean.len())
        .map(|i| PerImage {
            correct: clean[i],
            fgsm: fgsm[i],
            pgd: pgd[i],
            long: long[i],
            sweep: sweep.iter().map(|s| s[i]).collect(),
            white_box: white_box[i],
            square: square[i],
            transfer: transfer.as_ref().map(|t| t[i]),
            gradient_l1: gradient_l1[i] as f64,
            pixels,
            top_gap: top_gap[i],
        })
        .collect())
}

/// What the white-box attacks at ε leave robust, per image.
struct WhiteBox {
    fgsm: Vec<bool>,
    pgd: Vec<bool>,
    /// PGD and every long restart.
    long: Vec<bool>,
    /// At each ε of the sweep.
    sweep: Vec<Vec<bool>>,
    /// Every attack at ε: FGSM, PGD on cross-entropy and on the margin, the long runs, the sweep
    /// at ε itself.
    all: Vec<bool>,
}

/// Runs the white-box attacks through `attack(attack, stream, k)`, which returns which images
/// stay robust.
fn white_box<B: AutodiffBackend, M: AttackModel<B>>(
    config: &MaskingConfig,
    clean: &[bool],
    attack: &dyn Fn(&dyn Attack<B, M>, u64, u64) -> Result<Vec<bool>>,
) -> Result<WhiteBox> {
    let threat = config.threat;
    let fgsm = attack(&Fgsm::new(threat), 0, 0)?;
    let pgd = attack(&config.pgd(threat, config.steps), stream::PGD, 0)?;
    // The margin loss keeps its gradient where a saturated softmax zeroes cross-entropy's.
    let margin_pgd = Pgd {
        loss: PgdLoss::Margin,
        ..config.pgd(threat, config.steps)
    };
    let margin = attack(&margin_pgd, stream::PGD, 1)?;
    let mut long = pgd.clone();
    for k in 0..config.restarts as u64 {
        let robust = attack(&config.pgd(threat, config.long_steps), stream::LONG, k)?;
        long = and(&long, &robust);
    }
    let mut sweep = Vec::with_capacity(config.eps_multiples.len());
    for (k, m) in config.eps_multiples.iter().enumerate() {
        let scaled = ThreatModel {
            eps: threat.eps * m,
            ..threat
        };
        let pgd = config.pgd(scaled, config.steps);
        sweep.push(attack(&pgd, stream::SWEEP, k as u64)?);
    }
    let nominal = config.nominal_index();
    let all = (0..clean.len())
        .map(|i| fgsm[i] && pgd[i] && margin[i] && long[i] && nominal.is_none_or(|k| sweep[k][i]))
        .collect();
    Ok(WhiteBox {
        fgsm,
        pgd,
        long,
        sweep,
        all,
    })
}

/// Square on the images every white-box attack left robust; the others stay as they are.
fn square_on<B: AutodiffBackend, M: AttackModel<B>>(
    config: &MaskingConfig,
    model: &M,
    victim: &Victim<B, M>,
    x: &Tensor<Inner<B>, 4>,
    y: &Tensor<Inner<B>, 1, Int>,
    white_box: &[bool],
    mut rng: rand_chacha::ChaCha8Rng,
) -> Result<Vec<bool>> {
    let rows: Vec<i64> = (0..white_box.len())
        .filter(|&i| white_box[i])
        .map(|i| i as i64)
        .collect();
    if rows.is_empty() || config.square_queries == 0 {
        return Ok(white_box.to_vec());
    }
    let device = x.device();
    let index = Tensor::<Inner<B>, 1, Int>::from_ints(rows.as_slice(), &device);
    let (xs, ys) = (
        x.clone().select(0, index.clone()),
        y.clone().select(0, index),
    );
    let square = Square {
        queries: config.square_queries,
        ..Square::new(config.threat)
    };
    let x_adv = square.perturb(model, xs, ys.clone(), &mut rng)?;
    let survived = read_bools(correct(victim.logits(x_adv), ys))?;
    let mut robust = white_box.to_vec();
    for (&row, alive) in rows.iter().zip(survived) {
        robust[row as usize] = alive;
    }
    Ok(robust)
}

/// `1 − max softmax` per image, in f64: whether f32's softmax rounds the top class to exactly 1
/// (and the cross-entropy's gradient to 0) is read from it.
fn top_gaps<Bk: burn::tensor::backend::Backend>(logits: Tensor<Bk, 2>) -> Result<Vec<f64>> {
    let classes = logits.dims()[1];
    let values = read_floats(logits)?;
    Ok(values
        .chunks(classes)
        .map(|z| {
            let top = z.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let others: f64 = z.iter().map(|&v| ((v as f64) - top).exp()).sum::<f64>() - 1.0;
            others / (1.0 + others)
        })
        .collect())
}

/// The logits of the model on `x` twice more, and whether they agree with `first` to the
/// reference's tolerance (normalised L2 distance ≤ 1e-4), with the largest distance seen.
pub(super) fn repeatable<B: AutodiffBackend, M: AttackModel<B>>(
    model: &M,
    x: Tensor<Inner<B>, 4>,
) -> Result<(f64, Vec<f32>)> {
    let victim = Victim::<B, M>::new(model);
    let runs: Vec<Vec<f32>> = (0..3)
        .map(|_| read_floats(victim.logits(x.clone())))
        .collect::<Result<_>>()?;
    let classes = runs[0].len() / x.dims()[0].max(1);
    let normalised = |v: &[f32]| -> Vec<Vec<f64>> {
        v.chunks(classes.max(1))
            .map(|row| {
                let n = row.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt() + 1e-10;
                row.iter().map(|a| *a as f64 / n).collect()
            })
            .collect()
    };
    let first = normalised(&runs[0]);
    let mut worst = 0.0f64;
    for run in &runs[1..] {
        for (a, b) in first.iter().zip(normalised(run)) {
            let d = a
                .iter()
                .zip(&b)
                .map(|(p, q)| (p - q).powi(2))
                .sum::<f64>()
                .sqrt();
            worst = worst.max(if d.is_nan() { f64::INFINITY } else { d });
        }
    }
    Ok((worst, runs.into_iter().next().unwrap_or_default()))
}
