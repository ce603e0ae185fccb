//! The checks, each a pure function of the per-image measurements: a status and its evidence.

use super::measure::PerImage;
use super::{Check, MaskingConfig, MaskingReport, Status};

/// Half the spacing of f32 just below 1: a top-class probability closer to 1 than this rounds
/// to exactly 1, and the cross-entropy's gradient (p − one-hot) to exactly 0.
const F32_ROUNDS_TO_ONE: f64 = 1.0 / (1u64 << 25) as f64;

/// Mean absolute input gradient per pixel below which it is lost in f32 rounding.
const VANISHING_PER_PIXEL: f64 = 1e-10;

fn share(images: &[PerImage], robust: impl Fn(&PerImage) -> bool) -> f64 {
    images.iter().filter(|i| robust(i)).count() as f64 / images.len().max(1) as f64
}

fn pct(f: f64) -> String {
    format!("{:.1}%", 100.0 * f)
}

fn check(name: &str, flag: bool, evidence: String) -> Check {
    Check {
        name: name.into(),
        status: if flag { Status::Flag } else { Status::Pass },
        evidence,
    }
}

/// Every check on `images`; `distance` is the largest normalised L2 distance between repeated
/// forwards of the first batch, `first_logits` that batch's logits.
pub(super) fn report(
    config: MaskingConfig,
    images: &[PerImage],
    distance: f64,
    first_logits: &[f32],
) -> MaskingReport {
    let white_box = share(images, |i| i.white_box);
    let eps_sweep: Vec<(f64, f64)> = config
        .eps_multiples
        .iter()
        .enumerate()
        .map(|(k, m)| (config.threat.eps * m, share(images, |i| i.sweep[k])))
        .collect();
    let checks = vec![
        deterministic(distance),
        logits_not_probabilities(first_logits, images.len()),
        gradients_nonzero(images),
        softmax_not_saturated(&config, images),
        iterative_beats_single_step(images),
        more_steps_do_not_help(&config, images),
        large_eps_breaks_everything(&config, &eps_sweep),
        black_box_finds_nothing_new(&config, images, white_box),
        transfer_not_stronger(&config, images, white_box),
    ];
    MaskingReport {
        images: images.len(),
        clean_accuracy: share(images, |i| i.correct),
        white_box_accuracy: white_box,
        eps_sweep,
        checks,
        config,
    }
}

/// The reference's randomised-defence flag: repeated forwards must agree (normalised L2 ≤ 1e-4).
fn deterministic(distance: f64) -> Check {
    check(
        "the model is deterministic",
        !(distance <= 1e-4),
        format!("3 forwards of the first batch differ by at most {distance:.1e} (normalised L2)"),
    )
}

/// The reference's flag for a model that outputs probabilities instead of logits.
fn logits_not_probabilities(logits: &[f32], images: usize) -> Check {
    let classes = logits.len() / images.max(1);
    let in_unit = logits.iter().all(|v| (-1e-5..1.0 + 1e-5).contains(v));
    let sums_to_one = logits
        .chunks(classes.max(1))
        .all(|row| (row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    let probabilities = in_unit && sums_to_one && !logits.is_empty();
    check(
        "the outputs are logits, not probabilities",
        probabilities,
        if probabilities {
            "every output row is in [0, 1] and sums to 1: attacks need the logits".into()
        } else {
            "the outputs are not a probability distribution".into()
        },
    )
}

/// Input gradients of the cross-entropy must not vanish on the clean points: the reference flags
/// any exactly zero gradient; a mean magnitude below 1e-10 per pixel (f32 rounding noise against
/// healthy values around 1e-3) is flagged when a tenth of the images have it.
fn gradients_nonzero(images: &[PerImage]) -> Check {
    let zero = images.iter().filter(|i| !(i.gradient_l1 > 0.0)).count();
    let vanishing = images
        .iter()
        .filter(|i| !(i.gradient_l1 / i.pixels as f64 >= VANISHING_PER_PIXEL))
        .count();
    let mut norms: Vec<f64> = images.iter().map(|i| i.gradient_l1).collect();
    norms.sort_by(f64::total_cmp);
    let median = norms.get(norms.len() / 2).copied().unwrap_or(0.0);
    check(
        "input gradients do not vanish",
        zero > 0 || vanishing * 10 >= images.len().max(1),
        format!(
            "{zero} of {} images have an exactly zero (or non-finite) cross-entropy gradient, \
             {vanishing} one below 1e-10 per pixel; median L1 norm {median:.2e}",
            images.len()
        ),
    )
}

/// Defensive distillation's signature: softmax outputs so close to one-hot that f32 rounds them
/// to it.
fn softmax_not_saturated(config: &MaskingConfig, images: &[PerImage]) -> Check {
    let saturated = share(images, |i| i.top_gap < F32_ROUNDS_TO_ONE);
    let mut gaps: Vec<f64> = images.iter().map(|i| i.top_gap).collect();
    gaps.sort_by(f64::total_cmp);
    let median = gaps.get(gaps.len() / 2).copied().unwrap_or(0.0);
    check(
        "the softmax is not saturated",
        saturated > config.max_saturated_share,
        format!(
            "{} of the images have a top-class probability that rounds to 1 in f32 (limit {}); \
             median 1 − p_max = {median:.1e}",
            pct(saturated),
            pct(config.max_saturated_share)
        ),
    )
}

/// Iterative attacks must be at least as strong as a single step.
fn iterative_beats_single_step(images: &[PerImage]) -> Check {
    let (fgsm, pgd) = (share(images, |i| i.fgsm), share(images, |i| i.pgd));
    check(
        "iterative attacks beat single-step ones",
        pgd > fgsm,
        format!("FGSM leaves {}, PGD {}", pct(fgsm), pct(pgd)),
    )
}

/// More steps and restarts should change little once the attack has converged.
fn more_steps_do_not_help(config: &MaskingConfig, images: &[PerImage]) -> Check {
    let (pgd, long) = (share(images, |i| i.pgd), share(images, |i| i.long));
    check(
        "more steps and restarts do not help much",
        pgd - long > config.max_gain_of_more_steps,
        format!(
            "PGD-{} leaves {}, with {} restarts of PGD-{} {} (limit {} points)",
            config.steps,
            pct(pgd),
            config.restarts,
            config.long_steps,
            pct(long),
            100.0 * config.max_gain_of_more_steps
        ),
    )
}

/// Accuracy must fall as ε grows, to about 0 at an ε that allows any image.
fn large_eps_breaks_everything(config: &MaskingConfig, sweep: &[(f64, f64)]) -> Check {
    let (largest, last) = sweep.last().copied().unwrap_or((0.0, 0.0));
    let rises = sweep
        .windows(2)
        .any(|w| w[1].1 > w[0].1 + config.max_gain_of_more_steps);
    let curve: Vec<String> = sweep
        .iter()
        .map(|(e, a)| format!("{e:.3}: {}", pct(*a)))
        .collect();
    check(
        "accuracy falls to 0 as ε grows",
        last > config.max_accuracy_at_largest_eps || rises,
        format!(
            "PGD accuracy by ε — {}{}",
            curve.join(", "),
            if rises { "; it rises with ε" } else { "" }
        ),
    )
    .with_limit(largest, config.max_accuracy_at_largest_eps)
}

/// The black-box Square attack must find nothing the white-box attacks missed.
fn black_box_finds_nothing_new(config: &MaskingConfig, images: &[PerImage], white: f64) -> Check {
    let square = share(images, |i| i.square);
    check(
        "black-box Square finds nothing the white-box attacks missed",
        white - square > config.max_square_gain,
        format!(
            "white-box attacks leave {}, then Square ({} queries) {}",
            pct(white),
            config.square_queries,
            pct(square)
        ),
    )
}

/// Adversarial examples crafted on another model must not beat the white-box ones.
fn transfer_not_stronger(config: &MaskingConfig, images: &[PerImage], white: f64) -> Check {
    if images.iter().any(|i| i.transfer.is_none()) {
        return Check {
            name: "a transfer attack is not stronger than the white-box ones".into(),
            status: Status::NotRun,
            evidence: "no surrogate model given".into(),
        };
    }
    let transfer = share(images, |i| i.transfer == Some(true));
    check(
        "a transfer attack is not stronger than the white-box ones",
        white - transfer > config.max_transfer_gain,
        format!(
            "PGD-{} crafted on the surrogate leaves {}, the white-box attacks {}",
            config.steps,
            pct(transfer),
            pct(white)
        ),
    )
}

impl Check {
    /// Appends the ε at which the sweep's accuracy limit applies.
    fn with_limit(mut self, eps: f64, limit: f64) -> Self {
        self.evidence
            .push_str(&format!(" (limit {} at ε = {eps:.3})", pct(limit)));
        self
    }
}
