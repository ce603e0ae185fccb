//! Line charts (axes, ticks, a legend) as SVG and PNG. A chart is laid out once as a list of
//! [`Shape`]s; `svg` writes them as text for the viewer to render, `png` rasterises them with
//! the fixed-size fonts `embedded-graphics` carries, so no system font is needed.

mod png;
mod svg;

use std::path::Path;

/// One line of a chart.
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// (x, y) points, drawn in order.
    pub points: Vec<(f64, f64)>,
}

/// A chart of one or more series against shared axes.
pub struct Chart {
    /// Title above the plot.
    pub title: String,
    /// Label of the x axis.
    pub x_label: String,
    /// Label of the y axis.
    pub y_label: String,
    /// Logarithmic x axis (for ε or τ spanning decades).
    pub log_x: bool,
    /// The y range; `None` fits the data.
    pub y_range: Option<(f64, f64)>,
    /// The lines.
    pub series: Vec<Series>,
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 55.0;
const COLOURS: [Rgb; 6] = [
    [0x1f, 0x77, 0xb4],
    [0xd6, 0x27, 0x28],
    [0x2c, 0xa0, 0x2c],
    [0xff, 0x7f, 0x0e],
    [0x94, 0x67, 0xbd],
    [0x8c, 0x56, 0x4b],
];
const BLACK: Rgb = [0, 0, 0];
const GRID: Rgb = [0xe0, 0xe0, 0xe0];

/// About five round tick values covering [lo, hi].
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(raw);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

fn label(v: f64) -> String {
    if v != 0.0 && (v.abs() < 0.01 || v.abs() >= 1e4) {
        format!("{v:.0e}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A colour as red, green, blue.
type Rgb = [u8; 3];

/// Where a text's anchor point sits along it (SVG's `text-anchor`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Anchor {
    Start,
    Middle,
    End,
}

/// One element of a laid-out chart, in canvas units (`WIDTH` × `HEIGHT`, y down).
enum Shape {
    /// A straight line.
    Line {
        from: (f64, f64),
        to: (f64, f64),
        colour: Rgb,
        width: f64,
    },
    /// Connected line segments.
    Polyline {
        points: Vec<(f64, f64)>,
        colour: Rgb,
        width: f64,
    },
    /// A filled disc (a data marker).
    Dot {
        centre: (f64, f64),
        radius: f64,
        colour: Rgb,
    },
    /// The outline of the plotting area.
    Frame,
    /// A label.
    Text(Label),
}

/// Text whose baseline passes through `at`; `upright` turns it a quarter left (the y label).
struct Label {
    at: (f64, f64),
    text: String,
    anchor: Anchor,
    title: bool,
    upright: bool,
}

/// Where data coordinates land on the canvas.
struct Frame {
    log_x: bool,
    x: (f64, f64),
    y: (f64, f64),
}

const PLOT_W: f64 = WIDTH - LEFT - RIGHT;
const PLOT_H: f64 = HEIGHT - TOP - BOTTOM;

impl Frame {
    fn fx(&self, x: f64) -> f64 {
        if self.log_x {
            x.max(1e-12).log10()
        } else {
            x
        }
    }

    fn px(&self, x: f64) -> f64 {
        LEFT + (self.fx(x) - self.x.0) / (self.x.1 - self.x.0) * PLOT_W
    }

    fn py(&self, y: f64) -> f64 {
        TOP + (1.0 - (y - self.y.0) / (self.y.1 - self.y.0)) * PLOT_H
    }

    /// Tick values along x: round numbers; on a log axis 1, 2 and 5 times the powers of ten in
    /// range (powers of ten alone when that would crowd the axis).
    fn x_ticks(&self) -> Vec<f64> {
        let (x0, x1) = self.x;
        if !self.log_x {
            return ticks(x0, x1);
        }
        let in_range = |t: &f64| (x0 - 1e-9..=x1 + 1e-9).contains(&t.log10());
        let decades = x0.floor() as i32..=x1.ceil() as i32;
        let with = |mantissas: &[f64]| -> Vec<f64> {
            decades
                .clone()
                .flat_map(|k| mantissas.iter().map(move |m| m * 10f64.powi(k)))
                .filter(in_range)
                .collect()
        };
        let fine = with(&[1.0, 2.0, 5.0]);
        if fine.len() <= 8 {
            fine
        } else {
            with(&[1.0])
        }
    }
}

impl Chart {
    /// The data's extent (x possibly in log10); fitted y ranges start at 0 (accuracies and
    /// losses are read against it).
    fn frame(&self) -> Frame {
        let mut frame = Frame {
            log_x: self.log_x,
            x: (f64::INFINITY, f64::NEG_INFINITY),
            y: (0.0, f64::NEG_INFINITY),
        };
        for &(x, y) in self.series.iter().flat_map(|s| s.points.iter()) {
            if x.is_finite() && y.is_finite() {
                let fx = frame.fx(x);
                frame.x = (frame.x.0.min(fx), frame.x.1.max(fx));
                frame.y = (frame.y.0.min(y), frame.y.1.max(y));
            }
        }
        if let Some(range) = self.y_range {
            frame.y = range;
        }
        if !frame.x.0.is_finite() {
            (frame.x, frame.y) = ((0.0, 1.0), (0.0, 1.0));
        }
        for (lo, hi) in [&mut frame.x, &mut frame.y].map(|r| (&mut r.0, &mut r.1)) {
            if *hi - *lo < 1e-12 {
                (*lo, *hi) = (*lo - 0.5, *hi + 0.5);
            }
        }
        frame
    }

    /// The chart laid out: title, axes, then the lines with their legend.
    fn shapes(&self) -> Vec<Shape> {
        let frame = self.frame();
        let title = caption((LEFT + PLOT_W / 2.0, 22.0), &self.title, Anchor::Middle);
        let mut shapes = vec![Shape::Text(Label {
            title: true,
            ..title
        })];
        self.axes(&frame, &mut shapes);
        self.lines(&frame, &mut shapes);
        shapes
    }

    /// Grid lines with tick labels, the frame and the axis labels.
    fn axes(&self, frame: &Frame, shapes: &mut Vec<Shape>) {
        let grid = |from, to| Shape::Line {
            from,
            to,
            colour: GRID,
            width: 1.0,
        };
        for t in frame.x_ticks() {
            let x = frame.px(t);
            shapes.push(grid((x, TOP), (x, TOP + PLOT_H)));
            shapes.push(text((x, TOP + PLOT_H + 16.0), &label(t), Anchor::Middle));
        }
        for t in ticks(frame.y.0, frame.y.1) {
            let y = frame.py(t);
            shapes.push(grid((LEFT, y), (LEFT + PLOT_W, y)));
            shapes.push(text((LEFT - 6.0, y + 4.0), &label(t), Anchor::End));
        }
        shapes.push(Shape::Frame);
        let x_label = (LEFT + PLOT_W / 2.0, HEIGHT - 14.0);
        shapes.push(text(x_label, &self.x_label, Anchor::Middle));
        let y_label = caption((18.0, TOP + PLOT_H / 2.0), &self.y_label, Anchor::Middle);
        shapes.push(Shape::Text(Label {
            upright: true,
            ..y_label
        }));
    }

    /// Each series as a line with markers, and its legend entry.
    fn lines(&self, frame: &Frame, shapes: &mut Vec<Shape>) {
        for (k, series) in self.series.iter().enumerate() {
            let colour = COLOURS[k % COLOURS.len()];
            let points: Vec<(f64, f64)> = series
                .points
                .iter()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .map(|&(x, y)| (frame.px(x), frame.py(y)))
                .collect();
            let dots: Vec<Shape> = points
                .iter()
                .map(|&centre| Shape::Dot {
                    centre,
                    radius: 3.0,
                    colour,
                })
                .collect();
            shapes.push(Shape::Polyline {
                points,
                colour,
                width: 2.0,
            });
            shapes.extend(dots);
            let (lx, ly) = (LEFT + PLOT_W + 12.0, TOP + 10.0 + 20.0 * k as f64);
            shapes.push(Shape::Line {
                from: (lx, ly),
                to: (lx + 20.0, ly),
                colour,
                width: 2.0,
            });
            shapes.push(text((lx + 26.0, ly + 4.0), &series.name, Anchor::Start));
        }
    }

    /// The chart as an SVG document.
    pub fn svg(&self) -> String {
        svg::render(&self.shapes())
    }

    /// Writes the chart to `path` (SVG) and beside it as PNG (same name, `.png`), atomically.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let shapes = self.shapes();
        ltd::core::fs::write_atomic(path, svg::render(&shapes).as_bytes())?;
        ltd::core::fs::write_atomic(&path.with_extension("png"), &png::render(&shapes)?)?;
        Ok(())
    }
}

/// Plain text (not a title, not turned).
fn caption(at: (f64, f64), text: &str, anchor: Anchor) -> Label {
    Label {
        at,
        text: text.to_string(),
        anchor,
        title: false,
        upright: false,
    }
}

/// Plain text as a shape.
fn text(at: (f64, f64), text: &str, anchor: Anchor) -> Shape {
    Shape::Text(caption(at, text, anchor))
}
