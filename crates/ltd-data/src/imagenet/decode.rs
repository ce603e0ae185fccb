//! JPEG and PNG files to 8-bit RGB, as PIL's `Image.open(f).convert('RGB')` gives them.
//!
//! The format is recognised by content, not by name: ImageNet holds a PNG named `.JPEG`.
//! Grayscale is replicated to three channels. CMYK JPEGs are read with Adobe's inverted
//! convention, as PIL assumes for every CMYK JPEG, and converted with PIL's formula
//! `R = (255 − C)(255 − K)/255` on the un-inverted values, which is `c·k/255` (rounded) on the
//! stored ones. YCCK goes to CMYK first, as libjpeg does. Alpha is dropped, not composited.

use std::fs::File;
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::errors::DecodeErrors;
use zune_jpeg::JpegDecoder;

use crate::error::{one_line, DataError};

/// An 8-bit RGB image, rows top to bottom, pixels interleaved (HWC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl RgbImage {
    /// Checks that `pixels` holds `width × height` RGB triples.
    pub fn new(width: usize, height: usize, pixels: Vec<u8>) -> Result<Self, DataError> {
        let expected = width.checked_mul(height).and_then(|n| n.checked_mul(3));
        if expected != Some(pixels.len()) {
            return Err(DataError::InvalidDataset(format!(
                "{} bytes is not a {width}×{height} RGB image",
                pixels.len()
            )));
        }
        Ok(Self {
            width,
            height,
            pixels,
        })
    }

    /// Columns.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Rows.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The pixels, HWC.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// The pixels, HWC, to change in place.
    pub fn pixels_mut(&mut self) -> &mut [u8] {
        &mut self.pixels
    }

    /// The pixels, HWC, by value.
    pub fn into_pixels(self) -> Vec<u8> {
        self.pixels
    }

    /// Sizes come from decoders or our own arithmetic: no check needed.
    pub(crate) fn from_parts(width: usize, height: usize, pixels: Vec<u8>) -> Self {
        debug_assert_eq!(pixels.len(), width * height * 3);
        Self {
            width,
            height,
            pixels,
        }
    }
}

/// Bounds on what one file may cost, so a hostile header cannot claim gigabytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest file read, in bytes.
    pub max_file_bytes: u64,
    /// Largest image decoded, in pixels (width × height).
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    /// 64 MiB files, 64 megapixels (ImageNet's largest images have about 12 megapixels).
    fn default() -> Self {
        Self {
            max_file_bytes: 64 << 20,
            max_pixels: 64_000_000,
        }
    }
}

/// Image container formats recognised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    /// JPEG (starts `FF D8 FF`).
    Jpeg,
    /// PNG (starts with the 8-byte PNG signature).
    Png,
}

/// The format of a file's first bytes, if it is one we decode.
pub fn sniff_format(bytes: &[u8]) -> Option<ImageFormat> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(ImageFormat::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(ImageFormat::Png)
    } else {
        None
    }
}

/// Reads and decodes one image file; every failure names the file.
pub fn read_image(path: &Path, limits: &DecodeLimits) -> Result<RgbImage, DataError> {
    let bytes = read_bounded(path, limits.max_file_bytes)?;
    decode_image(&bytes, limits).map_err(|reason| DataError::Decode {
        path: path.to_path_buf(),
        reason,
    })
}

/// Decodes JPEG or PNG bytes to RGB. The error is the reason, for a message naming the file.
/// Never panics: a panic inside a decoder is caught and reported as a failure.
pub fn decode_image(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, String> {
    if bytes.is_empty() {
        return Err("the file is empty (0 bytes)".into());
    }
    let decoded = catch_unwind(AssertUnwindSafe(|| match sniff_format(bytes) {
        Some(ImageFormat::Jpeg) => decode_jpeg(bytes, limits),
        Some(ImageFormat::Png) => decode_png(bytes, limits),
        None => Err(format!(
            "not a JPEG or PNG (starts with {})",
            hex_prefix(bytes)
        )),
    }));
    decoded.unwrap_or_else(|_| Err("the decoder panicked on this file".into()))
}

fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, DataError> {
    let read_error = |error| DataError::Read {
        path: path.to_path_buf(),
        error,
    };
    let file = File::open(path).map_err(read_error)?;
    let meta = file.metadata().map_err(read_error)?;
    if !meta.is_file() {
        return Err(DataError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    if meta.len() > max {
        return Err(DataError::Decode {
            path: path.to_path_buf(),
            reason: format!("{} bytes is more than the limit of {max}", meta.len()),
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // `take` bounds the read even if the file grows meanwhile.
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > max {
        return Err(DataError::Decode {
            path: path.to_path_buf(),
            reason: format!("grew past the limit of {max} bytes while being read"),
        });
    }
    Ok(bytes)
}

fn hex_prefix(bytes: &[u8]) -> String {
    let shown: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02X}")).collect();
    shown.join(" ")
}

fn check_pixels(width: usize, height: usize, limits: &DecodeLimits) -> Result<(), String> {
    let pixels = width as u64 * height as u64;
    if width == 0 || height == 0 {
        return Err(format!("the image is {width}×{height}: no pixels"));
    }
    if pixels > limits.max_pixels {
        return Err(format!(
            "{width}×{height} is more than the limit of {} pixels",
            limits.max_pixels
        ));
    }
    Ok(())
}

/// Strict first: it rejects truncated data, which PIL refuses too ("image file is truncated").
/// Damage libjpeg only warns about (stray bytes before a marker) fails strict decoding, so
/// anything else is retried leniently, as libjpeg would decode it.
fn decode_jpeg(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, String> {
    if !reaches_end_marker(bytes) {
        return Err("truncated JPEG (the data ends before the end-of-image marker)".into());
    }
    match decode_jpeg_with(bytes, limits, true) {
        Ok(image) => Ok(image),
        Err(Failure::Fatal(reason)) => Err(reason),
        Err(Failure::Jpeg(error)) if is_truncation(&error) => {
            Err(format!("truncated JPEG ({})", one_line(&error.to_string())))
        }
        Err(Failure::Jpeg(strict)) => {
            decode_jpeg_with(bytes, limits, false).map_err(|lenient| match lenient {
                Failure::Fatal(reason) => reason,
                Failure::Jpeg(_) => format!("corrupt JPEG ({})", one_line(&strict.to_string())),
            })
        }
    }
}

/// Walks the JPEG's marker segments and entropy-coded data and reports whether an
/// end-of-image marker (`FF D9`) follows them. Zune-jpeg pads missing data and may return an
/// image for a cut file; libjpeg under PIL reports it as truncated, and so do we. Inside scan
/// data `FF` is always followed by `00` or a restart marker, and segments are skipped by their
/// length, so an `FF D9` inside an embedded thumbnail is not mistaken for the end.
fn reaches_end_marker(bytes: &[u8]) -> bool {
    let mut i = 2; // after SOI
    while i + 1 < bytes.len() {
        if bytes[i] != 0xFF {
            return false;
        }
        let marker = bytes[i + 1];
        i += 2;
        match marker {
            0xD9 => return true,
            // Fill bytes, and markers without a length (TEM, RST0–7).
            0xFF => i -= 1,
            0x01 | 0xD0..=0xD7 => {}
            _ => {
                let Some(len) = bytes.get(i..i + 2) else {
                    return false;
                };
                i += usize::from(u16::from_be_bytes([len[0], len[1]]));
                if marker == 0xDA {
                    i = skip_entropy_data(bytes, i);
                }
            }
        }
    }
    false
}

/// The index of the first marker after entropy-coded data starting at `i` (or the length).
fn skip_entropy_data(bytes: &[u8], mut i: usize) -> usize {
    while i + 1 < bytes.len() {
        if bytes[i] == 0xFF && bytes[i + 1] != 0x00 && !(0xD0..=0xD7).contains(&bytes[i + 1]) {
            return i;
        }
        i += 1;
    }
    bytes.len()
}

enum Failure {
    /// Our own checks: no point retrying.
    Fatal(String),
    /// The decoder's complaint.
    Jpeg(DecodeErrors),
}

fn is_truncation(error: &DecodeErrors) -> bool {
    match error {
        DecodeErrors::ExhaustedData | DecodeErrors::IoErrors(_) => true,
        DecodeErrors::FormatStatic(text) => text.contains("Premature end"),
        DecodeErrors::Format(text) => text.contains("Premature end") || text.contains("EOF"),
        _ => false,
    }
}

fn decode_jpeg_with(
    bytes: &[u8],
    limits: &DecodeLimits,
    strict: bool,
) -> Result<RgbImage, Failure> {
    let options = DecoderOptions::default()
        .set_strict_mode(strict)
        .jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder.decode_headers().map_err(Failure::Jpeg)?;
    let (width, height) = decoder
        .dimensions()
        .ok_or_else(|| Failure::Fatal("JPEG headers decoded without dimensions".into()))?;
    check_pixels(width, height, limits).map_err(Failure::Fatal)?;
    if decoder.output_colorspace() != Some(ColorSpace::RGB) {
        return Err(Failure::Fatal(format!(
            "unsupported JPEG colour space {:?}",
            decoder.input_colorspace()
        )));
    }
    let mut pixels = vec![0u8; width * height * 3];
    decoder.decode_into(&mut pixels).map_err(Failure::Jpeg)?;
    Ok(RgbImage::from_parts(width, height, pixels))
}

fn decode_png(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, String> {
    use image::ImageDecoder;
    let corrupt = |e: image::ImageError| format!("corrupt PNG ({})", one_line(&e.to_string()));
    let mut image_limits = image::Limits::default();
    // Decoded bytes: up to 16-bit RGBA per pixel before our conversion to 8-bit RGB.
    image_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8));
    let decoder =
        image::codecs::png::PngDecoder::with_limits(std::io::Cursor::new(bytes), image_limits)
            .map_err(corrupt)?;
    let (width, height) = decoder.dimensions();
    check_pixels(width as usize, height as usize, limits)?;
    let image = image::DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    let rgb = to_rgb8(image);
    Ok(RgbImage::from_parts(
        width as usize,
        height as usize,
        rgb.into_raw(),
    ))
}

/// 16-bit samples keep their high byte, as PIL reads 16-bit RGB PNGs; alpha is dropped.
fn to_rgb8(image: image::DynamicImage) -> image::RgbImage {
    use image::DynamicImage as D;
    match image {
        D::ImageRgb16(_) | D::ImageRgba16(_) | D::ImageLuma16(_) | D::ImageLumaA16(_) => {
            let wide = image.into_rgb16();
            let (w, h) = wide.dimensions();
            let narrow = wide
                .into_raw()
                .into_iter()
                .map(|v| (v >> 8) as u8)
                .collect();
            image::RgbImage::from_raw(w, h, narrow).expect("same dimensions, a third the channels")
        }
        other => other.into_rgb8(),
    }
}
