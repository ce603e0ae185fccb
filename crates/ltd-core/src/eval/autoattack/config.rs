//! What an AutoAttack evaluation runs: the attacks by name, the settings, and shards.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::attacks::{
    Apgd, ApgdLoss, ApgdTargeted, Attack, AttackModel, FabTargeted, Fgsm, Pgd, Square, ThreatModel,
};
use crate::{LtdError, Result};

/// The attacks AutoAttack can run by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AttackName {
    /// APGD on cross-entropy.
    ApgdCe,
    /// APGD on targeted DLR, 9 targets.
    ApgdT,
    /// Targeted FAB, 9 targets.
    FabT,
    /// Square, 5000 queries.
    Square,
    /// APGD on DLR (the 'rand'/'plus' versions' extra attack).
    ApgdDlr,
    /// FGSM.
    Fgsm,
    /// PGD-20 with step ε/4.
    Pgd20,
}

impl AttackName {
    const ALL: [(AttackName, &'static str); 7] = [
        (AttackName::ApgdCe, "apgd-ce"),
        (AttackName::ApgdT, "apgd-t"),
        (AttackName::FabT, "fab-t"),
        (AttackName::Square, "square"),
        (AttackName::ApgdDlr, "apgd-dlr"),
        (AttackName::Fgsm, "fgsm"),
        (AttackName::Pgd20, "pgd-20"),
    ];

    /// The attack with the reference's parameters for `threat`.
    pub fn build<B: AutodiffBackend, M: AttackModel<B>>(
        self,
        threat: ThreatModel,
    ) -> Box<dyn Attack<B, M>> {
        match self {
            AttackName::ApgdCe => Box::new(Apgd::new(threat, ApgdLoss::CrossEntropy)),
            AttackName::ApgdT => Box::new(ApgdTargeted::new(threat)),
            AttackName::FabT => Box::new(FabTargeted::new(threat)),
            AttackName::Square => Box::new(Square::new(threat)),
            AttackName::ApgdDlr => Box::new(Apgd::new(threat, ApgdLoss::Dlr)),
            AttackName::Fgsm => Box::new(Fgsm::new(threat)),
            AttackName::Pgd20 => Box::new(Pgd::new(threat, 20, threat.eps / 4.0)),
        }
    }
}

impl fmt::Display for AttackName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = Self::ALL
            .iter()
            .find(|(n, _)| n == self)
            .map(|(_, s)| *s)
            .unwrap_or("?");
        f.write_str(name)
    }
}

impl FromStr for AttackName {
    type Err = LtdError;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        Self::ALL
            .iter()
            .find(|(_, name)| *name == s)
            .map(|(n, _)| *n)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|(_, s)| *s).collect();
                LtdError::InvalidConfig(format!(
                    "unknown attack `{s}` (known: {})",
                    known.join(", ")
                ))
            })
    }
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoAttackConfig {
    /// Threat model.
    pub threat: ThreatModel,
    /// Attacks in order.
    pub attacks: Vec<AttackName>,
    /// Images per batch (reference: 250).
    pub batch_size: usize,
    /// Seed of every attack's randomness.
    pub seed: u64,
}

impl AutoAttackConfig {
    /// The 'standard' version: APGD-CE, APGD-T, FAB-T, Square; batch 250, seed 0.
    pub fn standard(threat: ThreatModel) -> Self {
        Self {
            threat,
            attacks: vec![
                AttackName::ApgdCe,
                AttackName::ApgdT,
                AttackName::FabT,
                AttackName::Square,
            ],
            batch_size: 250,
            seed: 0,
        }
    }

    /// These attacks, in this order, instead.
    pub fn with_attacks(mut self, attacks: Vec<AttackName>) -> Self {
        self.attacks = attacks;
        self
    }

    /// Images per batch: memory against speed. The result does not depend on it: each image
    /// draws its randomness from its own generator (see [the module](crate::eval::autoattack)).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Seed of the attacks' randomness.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Checks the settings: a valid threat model, ε > 0, at least one image per batch.
    pub fn validate(&self) -> Result<()> {
        self.threat.validate()?;
        if self.threat.eps <= 0.0 {
            return Err(LtdError::InvalidConfig(
                "ε must be > 0 for a robustness evaluation (ε = 0 measures clean accuracy only)"
                    .into(),
            ));
        }
        if self.batch_size == 0 {
            return Err(LtdError::InvalidConfig(
                "the batch size must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// One slice of the evaluation: shard `index` (1-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// 1-based shard number.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl FromStr for Shard {
    type Err = LtdError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || LtdError::InvalidConfig(format!("shard `{s}` must read K/N with 1 ≤ K ≤ N"));
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) = (
            k.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if index == 0 || index > count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl Shard {
    /// The images of this shard among `n` images: whole batches of the clean pass, split as
    /// evenly as possible. (Any split gives the same merged result; this one keeps the clean
    /// pass's batches full.)
    pub fn range(&self, n: usize, batch_size: usize) -> Range<usize> {
        let blocks = n.div_ceil(batch_size.max(1));
        let start = (self.index - 1) * blocks / self.count;
        let end = self.index * blocks / self.count;
        (start * batch_size).min(n)..(end * batch_size).min(n)
    }
}
