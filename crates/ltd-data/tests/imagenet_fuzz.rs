//! Hostile image bytes: truncations at many offsets, flipped bytes, random data behind real
//! signatures. Decoding must return an error (or an image), never panic — checked with a panic
//! hook, so a panic caught inside the decoder wrapper still fails the test.

mod imagenet_common;

use std::sync::atomic::{AtomicUsize, Ordering};

use imagenet_common::{fixture_bytes, IMAGES};
use ltd_data::imagenet::{decode_image, DecodeLimits};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    std::panic::set_hook(Box::new(|_| {
        PANICS.fetch_add(1, Ordering::SeqCst);
    }));
}

#[test]
fn hostile_bytes_never_panic_and_truncated_jpegs_fail() {
    count_panics();
    let limits = DecodeLimits::default();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut decoded_truncations = Vec::new();
    for name in IMAGES {
        let bytes = fixture_bytes(&format!("images/{name}"));
        // Every truncation short of the last few bytes.
        let step = (bytes.len() / 150).max(1);
        for cut in (0..bytes.len().saturating_sub(4)).step_by(step) {
            if decode_image(&bytes[..cut], &limits).is_ok() {
                decoded_truncations.push((name, cut));
            }
        }
        // Random byte changes after the signature.
        for _ in 0..150 {
            let mut damaged = bytes.clone();
            for _ in 0..rng.random_range(1..8) {
                let at = rng.random_range(8..damaged.len());
                damaged[at] = rng.random();
            }
            let _ = decode_image(&damaged, &limits);
        }
    }
    // Random bytes behind each signature, and none at all.
    for prefix in [&[0xFF, 0xD8, 0xFF][..], b"\x89PNG\r\n\x1a\n", b""] {
        for len in [0, 1, 10, 100, 1000, 5000] {
            let mut bytes = prefix.to_vec();
            bytes.extend((0..len).map(|_| rng.random::<u8>()));
            let _ = decode_image(&bytes, &limits);
        }
    }
    // Back to the default hook, so the assertions below print their messages.
    drop(std::panic::take_hook());
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a decoder panicked");
    assert!(
        decoded_truncations.is_empty(),
        "truncated files decoded: {decoded_truncations:?}"
    );
}

#[test]
fn declared_sizes_beyond_the_limit_are_refused_before_decoding() {
    let bytes = fixture_bytes("images/rgb_odd.jpg");
    let tiny = DecodeLimits {
        max_pixels: 67 * 45 - 1,
        ..DecodeLimits::default()
    };
    let reason = decode_image(&bytes, &tiny).unwrap_err();
    assert!(reason.contains("67×45"), "{reason}");
    let png = fixture_bytes("images/png_named.JPEG");
    let reason = decode_image(
        &png,
        &DecodeLimits {
            max_pixels: 100,
            ..tiny
        },
    )
    .unwrap_err();
    assert!(reason.contains("39×29"), "{reason}");
}
