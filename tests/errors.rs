//! What the example programs print for bad input is the library's error text after `error: `;
//! each must be one line naming the file, so a user sees at once what to fix.

use crate::common;

use std::path::Path;

use common::*;
use ltd::core::models::Arch;
use ltd::core::train::Checkpoint;
use ltd::data::{load_cifar_auto, write_cifar10_folder, Split, SyntheticConfig};

fn device() -> burn::tensor::Device<AD> {
    Default::default()
}

fn assert_one_line(error: impl std::fmt::Display, path: &Path) {
    assert_error_line(error, path, "");
}

#[test]
fn a_bad_data_dir_is_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    assert_one_line(
        load_cifar_auto(&missing, Split::Test).unwrap_err(),
        &missing,
    );
    assert_one_line(
        load_cifar_auto(dir.path(), Split::Test).unwrap_err(),
        dir.path(),
    );

    let data = SyntheticConfig {
        train: 10,
        test: 10,
        ..Default::default()
    }
    .generate()
    .unwrap();
    let cifar = dir.path().join("cifar");
    write_cifar10_folder(&cifar, &data.train, &data.test).unwrap();
    let test_file = cifar.join("test_batch.bin");
    let bytes = std::fs::read(&test_file).unwrap();
    std::fs::write(&test_file, &bytes[..bytes.len() - 100]).unwrap();
    assert_one_line(
        load_cifar_auto(&cifar, Split::Test).unwrap_err(),
        &test_file,
    );
}

#[test]
fn a_corrupt_checkpoint_is_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = || Arch::WRN_10_1.init::<AD>(10, None, &device()).unwrap();
    for name in ["model.mpk", "model.safetensors", "model.pt"] {
        let path = dir.path().join(name);
        std::fs::write(&path, b"not a checkpoint").unwrap();
        let error = if name.ends_with(".mpk") {
            ltd::core::weights::load(model(), &path, &device()).unwrap_err()
        } else {
            ltd::core::weights::import(model(), &path).unwrap_err()
        };
        assert_one_line(error, &path);
    }

    let folder = dir.path().join("ckpt");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("checkpoint.json"), b"{ truncated").unwrap();
    let sgd = ltd::core::train::SgdSettings::default().init::<AD, _>();
    let error = Checkpoint::new(&folder)
        .load(model(), sgd, &serde_json::json!({}), &device())
        .map(|_| ())
        .unwrap_err();
    assert_one_line(error, &folder);
}
