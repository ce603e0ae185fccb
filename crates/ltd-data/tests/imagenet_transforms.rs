//! The ImageNet transforms against torchvision + PIL (fixtures from `make_fixtures.py`): exact on
//! PIL's decoded pixels, within 2/255 on ours; RandomResizedCrop boxes from torchvision's own
//! draws, replayed.

mod imagenet_common;

use imagenet_common::{fixture_bytes, fixture_text, max_diff, ours, pil, IMAGES};
use ltd_data::imagenet::{
    center_crop_offset, mirror, resize_bilinear, resize_center_crop, resized_size, CropBox,
    CropDraws, ImageTransform, RandomResizedCrop, RgbImage,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// (resize, crop) pairs the fixture script evaluated (its EVAL_SIZES).
const EVAL_SIZES: [(usize, usize); 4] = [(24, 20), (32, 31), (60, 48), (20, 27)];

/// The fixture `dir/file`, or, if absent (written only where it differs), `fallback/file`.
fn fixture_or(dir: &str, fallback: &str, file: &str) -> Vec<u8> {
    let path = imagenet_common::fixtures().join(dir).join(file);
    match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(_) => fixture_bytes(&format!("{fallback}/{file}")),
    }
}

#[test]
fn resize_and_center_crop_equal_pil_arithmetic_on_pil_pixels() {
    for name in IMAGES {
        let source = pil(name);
        for (r, c) in EVAL_SIZES {
            let ours = resize_center_crop(&source, r, c);
            let file = format!("{name}_{r}_{c}.rgb");
            assert_eq!((ours.width(), ours.height()), (c, c));
            // Bit for bit PIL's own width-then-height resize.
            let pil_order = fixture_or("eval_h", "eval", &file);
            assert_eq!(
                max_diff(ours.pixels(), &pil_order),
                0,
                "{name}: Resize({r}) + CenterCrop({c})"
            );
            // torchvision with the Pillow that wrote the fixtures (its pass order may differ).
            let torchvision = fixture_bytes(&format!("eval/{file}"));
            assert!(
                max_diff(ours.pixels(), &torchvision) <= 1,
                "{name}: Resize({r}) + CenterCrop({c})"
            );
        }
    }
}

#[test]
fn eval_transform_is_within_2_of_torchvision_on_our_decoding() {
    for name in IMAGES {
        let source = ours(name);
        for (r, c) in EVAL_SIZES {
            let transform = ImageTransform::Eval { resize: r, crop: c };
            let out = transform.apply(&source, &mut ChaCha8Rng::seed_from_u64(0));
            let theirs = fixture_bytes(&format!("eval/{name}_{r}_{c}.rgb"));
            let diff = max_diff(out.pixels(), &theirs);
            // ImageNet's regime is downscaling, which averages decoder differences away; an
            // upscale (Resize(60) of a 45-pixel side) passes them on (see decoding test).
            let upscale = r > source.width().min(source.height());
            let bound = if upscale { 3 } else { 2 };
            assert!(
                diff <= bound,
                "{name}: Resize({r}) + CenterCrop({c}) off by {diff}/255"
            );
        }
    }
}

/// crops.txt: `name k top left height width size flip`.
fn crop_cases() -> Vec<(String, usize, CropBox, usize, bool)> {
    fixture_text("crops.txt")
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let n = |i: usize| f[i].parse::<usize>().unwrap();
            let crop = CropBox {
                top: n(2),
                left: n(3),
                height: n(4),
                width: n(5),
            };
            (f[0].to_string(), n(1), crop, n(6), f[7] == "1")
        })
        .collect()
}

fn crop_resize_flip(image: &RgbImage, crop: CropBox, size: usize, flip: bool) -> RgbImage {
    let mut out = resize_bilinear(image, crop, size, size).expect("box fits");
    if flip {
        mirror(&mut out);
    }
    out
}

#[test]
fn resized_crop_and_flip_equal_torchvision() {
    let cases = crop_cases();
    assert_eq!(cases.len(), 3 * IMAGES.len());
    for (name, k, crop, size, flip) in cases {
        let file = format!("{name}_{k}.rgb");
        let theirs = fixture_bytes(&format!("crop/{file}"));
        let exact = crop_resize_flip(&pil(&name), crop, size, flip);
        let pil_order = fixture_or("crop_h", "crop", &file);
        assert_eq!(
            max_diff(exact.pixels(), &pil_order),
            0,
            "{name} crop {k} on PIL pixels"
        );
        assert!(
            max_diff(exact.pixels(), &theirs) <= 1,
            "{name} crop {k} on PIL pixels"
        );
        let near = crop_resize_flip(&ours(&name), crop, size, flip);
        let diff = max_diff(near.pixels(), &theirs);
        assert!(
            diff <= 2,
            "{name} crop {k} on our decoding: off by {diff}/255"
        );
    }
}

/// Hands out the draws torchvision made, in order, checking each is asked for with the same
/// range (up to float32 rounding of torch's bounds) and, for integers, the same bound.
struct Replay {
    draws: Vec<String>,
    next: usize,
}

impl Replay {
    fn take(&mut self) -> &str {
        let draw = self
            .draws
            .get(self.next)
            .expect("more draws than torchvision made");
        self.next += 1;
        draw
    }
}

impl CropDraws for Replay {
    fn uniform(&mut self, low: f64, high: f64) -> f64 {
        let draw = self.take().to_string();
        let value: f64 = draw
            .strip_prefix("u:")
            .expect("a uniform draw")
            .parse()
            .unwrap();
        let slack = 1e-6 * (1.0 + low.abs().max(high.abs()));
        assert!(
            value >= low - slack && value <= high + slack,
            "draw {value} outside the range [{low}, {high}] asked for"
        );
        value
    }

    fn below(&mut self, n: usize) -> usize {
        let draw = self.take().to_string();
        let mut parts = draw.strip_prefix("i:").expect("an integer draw").split(':');
        let bound: usize = parts.next().unwrap().parse().unwrap();
        assert_eq!(bound, n, "integer draw below a different bound");
        parts.next().unwrap().parse().unwrap()
    }
}

#[test]
fn random_resized_crop_boxes_equal_torchvision_for_the_same_draws() {
    let text = fixture_text("rrc_boxes.txt");
    let (mut fallbacks, mut cases) = (0, 0);
    for line in text.lines() {
        let mut sections = line.split(" ; ");
        let head: Vec<f64> = sections
            .next()
            .unwrap()
            .split(' ')
            .map(|v| v.parse().unwrap())
            .collect();
        let draws: Vec<String> = sections
            .next()
            .unwrap()
            .split(' ')
            .map(String::from)
            .collect();
        let expected: Vec<usize> = sections
            .next()
            .unwrap()
            .split(' ')
            .map(|v| v.parse().unwrap())
            .collect();
        let crop = RandomResizedCrop {
            size: 224,
            scale: (head[2], head[3]),
            ratio: (head[4], head[5]),
        };
        let (width, height) = (head[0] as usize, head[1] as usize);
        fallbacks += usize::from(!draws.iter().any(|d| d.starts_with("i:")));
        let mut replay = Replay { draws, next: 0 };
        let got = crop.sample_box(width, height, &mut replay);
        assert_eq!(
            replay.next,
            replay.draws.len(),
            "{line}: fewer draws than torchvision"
        );
        let want = CropBox {
            top: expected[0],
            left: expected[1],
            height: expected[2],
            width: expected[3],
        };
        assert_eq!(got, want, "{line}");
        cases += 1;
    }
    assert_eq!(cases, 240);
    // The fixture covers both paths: ten failed tries (centre fallback) and an accepted try.
    assert!(
        fallbacks > 20 && fallbacks < cases - 20,
        "{fallbacks} fallbacks"
    );
}

#[test]
fn decoding_agrees_with_pil() {
    for name in IMAGES {
        let (a, b) = (ours(name), pil(name));
        let lossless = name.ends_with(".png") || name == "png_named.JPEG";
        if lossless {
            assert_eq!(a, b, "{name}: PNG decoding is exact");
            continue;
        }
        // JPEG decoders differ in IDCT and chroma-upsampling rounding. zune-jpeg also
        // upsamples a progressive image's last chroma row differently from libjpeg-turbo when
        // the height is not a multiple of the MCU (58 rows here): that row is checked apart.
        let row = a.width() * 3;
        let body = a.pixels().len() - if name == "progressive.jpg" { row } else { 0 };
        let diff = max_diff(&a.pixels()[..body], &b.pixels()[..body]);
        let mean = a
            .pixels()
            .iter()
            .zip(b.pixels())
            .map(|(x, y)| f64::from(x.abs_diff(*y)))
            .sum::<f64>()
            / a.pixels().len() as f64;
        eprintln!("{name}: max |ours − PIL| = {diff}/255, mean {mean:.3}");
        assert!(
            diff <= 3 && mean < 0.5,
            "{name}: {diff}/255 from PIL (mean {mean})"
        );
        let last = max_diff(&a.pixels()[body..], &b.pixels()[body..]);
        assert!(last <= 12, "{name}: last row {last}/255 from PIL");
    }
}

#[test]
fn resize_geometry_follows_torchvision() {
    // Shorter side to 256, longer truncated: 256·500/375 = 341.33.
    assert_eq!(resized_size(500, 375, 256), (341, 256));
    assert_eq!(resized_size(375, 500, 256), (256, 341));
    assert_eq!(resized_size(300, 300, 256), (256, 256));
    // int(256·767/512) = int(383.5) = 383.
    assert_eq!(resized_size(767, 512, 256), (383, 256));
    // Offsets round half to even: (257−224)/2 = 16.5 → 16, (259−224)/2 = 17.5 → 18.
    assert_eq!(center_crop_offset(257, 224), 16);
    assert_eq!(center_crop_offset(259, 224), 18);
    assert_eq!(center_crop_offset(256, 224), 16);
    // Crop larger than the image: (27 − 20) // 2 = 3 columns of zeros before.
    assert_eq!(center_crop_offset(20, 27), -3);
}

#[test]
fn mirror_reverses_columns_and_is_its_own_inverse() {
    let pixels: Vec<u8> = (0..2 * 3 * 3).map(|v| v as u8).collect();
    let original = RgbImage::new(3, 2, pixels).unwrap();
    let mut flipped = original.clone();
    mirror(&mut flipped);
    assert_eq!(&flipped.pixels()[..9], &[6, 7, 8, 3, 4, 5, 0, 1, 2]);
    mirror(&mut flipped);
    assert_eq!(flipped, original);
}

#[test]
fn train_transform_is_a_function_of_its_draws() {
    let image = ours("rgb_odd.jpg");
    let transform = ImageTransform::Train {
        crop: RandomResizedCrop::new(32),
        flip: true,
    };
    let run = |seed| transform.apply(&image, &mut ChaCha8Rng::seed_from_u64(seed));
    assert_eq!(run(3), run(3));
    assert_eq!(run(3).width(), 32);
    let distinct: std::collections::HashSet<Vec<u8>> =
        (0..8).map(|s| run(s).into_pixels()).collect();
    assert!(
        distinct.len() > 4,
        "different seeds should give different crops"
    );
    // The same draws without the flip give the mirror image when the coin says flip.
    let plain = ImageTransform::Train {
        crop: RandomResizedCrop::new(32),
        flip: false,
    };
    let mut flips = 0;
    for seed in 0..16 {
        let with = run(seed);
        let mut without = plain.apply(&image, &mut ChaCha8Rng::seed_from_u64(seed));
        if with != without {
            mirror(&mut without);
            assert_eq!(with, without, "seed {seed}: differs by more than a flip");
            flips += 1;
        }
    }
    assert!((2..=14).contains(&flips), "{flips} flips in 16");
}

#[test]
fn a_side_left_at_its_size_keeps_its_rows_and_columns() {
    // Regression: with no vertical resize, the window's rows were taken with the identity's
    // zero-weight neighbours, one row too many (a panic in debug, shifted pixels in release).
    let (w, h) = (40, 36);
    let pixels: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
    let image = RgbImage::new(w, h, pixels.clone()).unwrap();
    let plain_crop = |left: usize, top: usize, size: usize| -> Vec<u8> {
        (top..top + size)
            .flat_map(|y| pixels[(y * w + left) * 3..(y * w + left + size) * 3].to_vec())
            .collect()
    };
    // Shorter side already 36: Resize(36) is the identity, CenterCrop(32) at (4, 2).
    let out = resize_center_crop(&image, 36, 32);
    assert_eq!((out.width(), out.height()), (32, 32));
    assert_eq!(out.pixels(), plain_crop(4, 2, 32));
    // Height kept, width resized (a RandomResizedCrop box as tall as the output).
    let crop = CropBox {
        top: 3,
        left: 5,
        height: 32,
        width: 20,
    };
    let out = resize_bilinear(&image, crop, 32, 32).unwrap();
    assert_eq!((out.width(), out.height()), (32, 32));
    let both = resize_bilinear(&image, crop, 32, 33).unwrap();
    assert_eq!(both.height(), 33);
}
