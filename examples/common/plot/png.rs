//! A laid-out chart as a PNG of twice the SVG's size. Lines and markers are rasterised with
//! antialiasing (each pixel covered by the distance from its centre to the shape); text uses the
//! misc-fixed bitmap fonts `embedded-graphics` carries (ISO 8859-7: Latin and Greek, so τ, ε and
//! λ print), so no system font is needed.

use std::convert::Infallible;
use std::io::Cursor;

use embedded_graphics::mono_font::iso_8859_7::{FONT_9X18, FONT_9X18_BOLD};
use embedded_graphics::mono_font::{MonoFont, MonoTextStyle};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;
use embedded_graphics::text::{Alignment, Baseline, Text, TextStyleBuilder};

use super::{Anchor, Rgb, Shape, BLACK, HEIGHT, LEFT, PLOT_H, PLOT_W, TOP, WIDTH};

/// Image pixels per chart unit.
const SCALE: f64 = 2.0;

/// The shapes, in order, as PNG bytes.
pub fn render(shapes: &[Shape]) -> anyhow::Result<Vec<u8>> {
    let mut canvas = Canvas::new((WIDTH * SCALE) as u32, (HEIGHT * SCALE) as u32);
    for shape in shapes {
        draw(shape, &mut canvas);
    }
    let image = image::RgbImage::from_raw(canvas.width, canvas.height, canvas.pixels.concat())
        .expect("three bytes per pixel");
    let mut png = Vec::new();
    image.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)?;
    Ok(png)
}

fn draw(shape: &Shape, canvas: &mut Canvas) {
    match shape {
        Shape::Line {
            from,
            to,
            colour,
            width,
        } => canvas.segment(*from, *to, *width, *colour),
        Shape::Polyline {
            points,
            colour,
            width,
        } => {
            for pair in points.windows(2) {
                canvas.segment(pair[0], pair[1], *width, *colour);
            }
        }
        Shape::Dot {
            centre,
            radius,
            colour,
        } => canvas.segment(*centre, *centre, 2.0 * radius, *colour),
        Shape::Frame => {
            let (right, bottom) = (LEFT + PLOT_W, TOP + PLOT_H);
            let corners = [(LEFT, TOP), (right, TOP), (right, bottom), (LEFT, bottom)];
            for k in 0..4 {
                canvas.segment(corners[k], corners[(k + 1) % 4], 1.0, BLACK);
            }
        }
        Shape::Text(label) => {
            let font: &MonoFont = if label.title {
                &FONT_9X18_BOLD
            } else {
                &FONT_9X18
            };
            let alignment = match label.anchor {
                Anchor::Start => Alignment::Left,
                Anchor::Middle => Alignment::Center,
                Anchor::End => Alignment::Right,
            };
            let layout = TextStyleBuilder::new()
                .alignment(alignment)
                .baseline(Baseline::Alphabetic)
                .build();
            let style = MonoTextStyle::new(font, Rgb888::BLACK);
            let (x, y) = label.at;
            let origin = ((x * SCALE).round() as i32, (y * SCALE).round() as i32);
            let mut glyphs = Glyphs {
                canvas,
                origin,
                upright: label.upright,
            };
            // Drawing on a Canvas cannot fail.
            let _ = Text::with_text_style(&printable(&label.text), Point::zero(), style, layout)
                .draw(&mut glyphs);
        }
    }
}

/// `text` with the few characters ISO 8859-7 lacks spelled in ASCII.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '≥' => ">=".into(),
            '≤' => "<=".into(),
            '…' => "...".into(),
            '−' | '–' => "-".into(),
            '×' => "x".into(),
            other => other.to_string(),
        })
        .collect()
}

/// RGB pixels, white to start with.
struct Canvas {
    width: u32,
    height: u32,
    pixels: Vec<[u8; 3]>,
}

impl Canvas {
    fn new(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            pixels: vec![[255; 3]; (width * height) as usize],
        }
    }

    /// Paints `colour` over pixel (x, y) with opacity `coverage` (0–1); outside is ignored.
    fn blend(&mut self, x: i32, y: i32, colour: Rgb, coverage: f64) {
        if (0..self.width as i32).contains(&x) && (0..self.height as i32).contains(&y) {
            let pixel = &mut self.pixels[(y as u32 * self.width + x as u32) as usize];
            for (p, c) in pixel.iter_mut().zip(colour) {
                *p = (f64::from(*p) + (f64::from(c) - f64::from(*p)) * coverage).round() as u8;
            }
        }
    }

    /// A line of `width` from `a` to `b` with round ends (a disc when they coincide), in chart
    /// units: each pixel is covered by how far its centre lies inside the stroke.
    fn segment(&mut self, a: (f64, f64), b: (f64, f64), width: f64, colour: Rgb) {
        let [a, b] = [a, b].map(|(x, y)| (x * SCALE, y * SCALE));
        let half = width * SCALE / 2.0;
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let length2 = dx * dx + dy * dy;
        let x_span =
            (a.0.min(b.0) - half - 1.0).floor() as i32..=(a.0.max(b.0) + half + 1.0).ceil() as i32;
        for y in
            (a.1.min(b.1) - half - 1.0).floor() as i32..=(a.1.max(b.1) + half + 1.0).ceil() as i32
        {
            for x in x_span.clone() {
                let (px, py) = (f64::from(x) + 0.5, f64::from(y) + 0.5);
                let t = if length2 > 0.0 {
                    (((px - a.0) * dx + (py - a.1) * dy) / length2).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                let distance = (px - a.0 - t * dx).hypot(py - a.1 - t * dy);
                let coverage = (half + 0.5 - distance).clamp(0.0, 1.0);
                if coverage > 0.0 {
                    self.blend(x, y, colour, coverage);
                }
            }
        }
    }
}

/// Text drawn at the origin, placed at pixel `origin` of the canvas, turned a quarter left
/// when `upright`.
struct Glyphs<'a> {
    canvas: &'a mut Canvas,
    origin: (i32, i32),
    upright: bool,
}

impl Dimensions for Glyphs<'_> {
    /// Unbounded: the canvas clips.
    fn bounding_box(&self) -> Rectangle {
        Rectangle::new(Point::new(-1 << 15, -1 << 15), Size::new(1 << 16, 1 << 16))
    }
}

impl DrawTarget for Glyphs<'_> {
    type Color = Rgb888;
    type Error = Infallible;

    fn draw_iter<I: IntoIterator<Item = Pixel<Rgb888>>>(
        &mut self,
        pixels: I,
    ) -> Result<(), Infallible> {
        for Pixel(p, c) in pixels {
            // The pixel's top-left corner after the turn.
            let (x, y) = if self.upright {
                (p.y, -p.x - 1)
            } else {
                (p.x, p.y)
            };
            let (x, y) = (self.origin.0 + x, self.origin.1 + y);
            self.canvas.blend(x, y, [c.r(), c.g(), c.b()], 1.0);
        }
        Ok(())
    }
}
