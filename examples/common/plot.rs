//! Line charts as SVG, written by hand (axes, ticks, a legend), so the examples plot without a
//! plotting dependency or system fonts: the viewer renders the text.

use std::fmt::Write;
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
const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

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

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
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

    /// The chart as an SVG document.
    pub fn svg(&self) -> String {
        let frame = self.frame();
        let mut out = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
             font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
            LEFT + PLOT_W / 2.0,
            escape(&self.title)
        );
        self.axes(&frame, &mut out);
        self.lines(&frame, &mut out);
        out.push_str("</svg>\n");
        out
    }

    /// Grid lines with tick labels, the frame and the axis labels.
    fn axes(&self, frame: &Frame, out: &mut String) {
        for t in frame.x_ticks() {
            let x = frame.px(t);
            let _ = writeln!(
                out,
                "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#e0e0e0\"/>",
                TOP + PLOT_H
            );
            let _ = writeln!(
                out,
                "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                TOP + PLOT_H + 16.0,
                label(t)
            );
        }
        for t in ticks(frame.y.0, frame.y.1) {
            let y = frame.py(t);
            let _ = writeln!(
                out,
                "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#e0e0e0\"/>",
                LEFT + PLOT_W
            );
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                LEFT - 6.0,
                y + 4.0,
                label(t)
            );
        }
        let _ = writeln!(out, "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{PLOT_W}\" height=\"{PLOT_H}\" fill=\"none\" stroke=\"black\"/>");
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            LEFT + PLOT_W / 2.0,
            HEIGHT - 14.0,
            escape(&self.x_label)
        );
        let _ = writeln!(
            out,
            "<text transform=\"translate(18 {:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
            TOP + PLOT_H / 2.0,
            escape(&self.y_label)
        );
    }

    /// Each series as a line with markers, and its legend entry.
    fn lines(&self, frame: &Frame, out: &mut String) {
        for (k, series) in self.series.iter().enumerate() {
            let colour = COLOURS[k % COLOURS.len()];
            let points: Vec<(f64, f64)> = series
                .points
                .iter()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .map(|&(x, y)| (frame.px(x), frame.py(y)))
                .collect();
            let path: Vec<String> = points
                .iter()
                .map(|(x, y)| format!("{x:.1},{y:.1}"))
                .collect();
            let _ = writeln!(
                out,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
                path.join(" ")
            );
            for (x, y) in points {
                let _ = writeln!(
                    out,
                    "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"{colour}\"/>"
                );
            }
            let (lx, ly) = (LEFT + PLOT_W + 12.0, TOP + 10.0 + 20.0 * k as f64);
            let _ = writeln!(out, "<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{colour}\" stroke-width=\"2\"/>", lx + 20.0);
            let _ = writeln!(
                out,
                "<text x=\"{}\" y=\"{:.1}\">{}</text>",
                lx + 26.0,
                ly + 4.0,
                escape(&series.name)
            );
        }
    }

    /// Writes the SVG to `path` atomically.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        ltd::core::fs::write_atomic(path, self.svg().as_bytes())?;
        Ok(())
    }
}
