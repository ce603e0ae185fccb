//! Shared by the ImageNet tests: the committed fixtures (written by
//! `fixtures/imagenet/make_fixtures.py` with torchvision and PIL) and the miniature tree.

#![allow(dead_code)] // each test binary uses its own part

use std::fs;
use std::path::{Path, PathBuf};

use ltd_data::imagenet::{read_image, DecodeLimits, RgbImage};

/// The fixture images, in the order the fixture script lists them.
pub const IMAGES: [&str; 8] = [
    "rgb_odd.jpg",
    "rgb_444.jpg",
    "gray.jpg",
    "cmyk.jpg",
    "progressive.jpg",
    "png_named.JPEG",
    "palette.png",
    "rgba.png",
];

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/imagenet")
}

pub fn fixture_bytes(relative: &str) -> Vec<u8> {
    let path = fixtures().join(relative);
    fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn fixture_text(relative: &str) -> String {
    String::from_utf8(fixture_bytes(relative)).expect("fixture text is UTF-8")
}

/// Our decoding of fixture image `name`.
pub fn ours(name: &str) -> RgbImage {
    read_image(
        &fixtures().join("images").join(name),
        &DecodeLimits::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// PIL's `convert('RGB')` of fixture image `name` (same size as ours, or the test fails).
pub fn pil(name: &str) -> RgbImage {
    let ours = ours(name);
    RgbImage::new(
        ours.width(),
        ours.height(),
        fixture_bytes(&format!("decoded/{name}.rgb")),
    )
    .unwrap_or_else(|e| panic!("{name}: PIL's size differs from ours: {e}"))
}

/// Largest absolute difference between two equally long byte images.
pub fn max_diff(a: &[u8], b: &[u8]) -> u8 {
    assert_eq!(a.len(), b.len(), "images of different sizes");
    a.iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

/// Builds `tree.txt`'s miniature ImageNet under `root`; returns the relative paths in file order.
pub fn build_tree(root: &Path) -> Vec<String> {
    let mut paths = Vec::new();
    for line in fixture_text("tree.txt").lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (relative, content) = line.split_once(' ').expect("path and content");
        let bytes = match content.trim() {
            "empty" => Vec::new(),
            other => match other.strip_prefix("truncated:") {
                Some(name) => {
                    let full = fixture_bytes(&format!("images/{name}"));
                    full[..full.len() * 6 / 10].to_vec()
                }
                None => fixture_bytes(&format!("images/{other}")),
            },
        };
        let path = root.join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, bytes).unwrap();
        paths.push(relative.to_string());
    }
    paths
}
