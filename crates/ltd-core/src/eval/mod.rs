//! Evaluation: clean accuracy now; robust accuracy, AutoAttack reports and gradient-masking
//! checks build on it.

mod accuracy;

pub use accuracy::{accuracy, Accuracy};
pub mod autoattack;
pub mod masking;
pub mod outputs;

pub use autoattack::{
    weights_digest, AttackName, AutoAttackConfig, AutoAttackReport, Identity, Shard, StageReport,
};
