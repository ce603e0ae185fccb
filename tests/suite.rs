//! The integration tests, one module per file, linked as one binary: every file alone
//! re-instantiated the same generic training and attack code for the same backend, minutes of
//! compilation each. `cargo test --test suite attack_fab::` runs one file's tests.
//! `tests/backends.rs` stays a binary of its own (it needs a second backend).

mod common;

mod attack_fab;
mod attack_square;
mod attacks;
mod autoattack;
mod batch_independence;
mod checkpoint;
mod data_parallel;
mod errors;
mod gradients;
mod hostile_weights;
mod imagenet_training;
mod models;
mod plots;
mod robustbench_models;
mod science;
mod training;
mod weights;
