// The README is the crate's front page, so its code is compiled and checked by `cargo test`.
#![doc = include_str!("../README.md")]

pub mod backend;

pub use ltd_core as core;
pub use ltd_data as data;
