//! A laid-out chart as an SVG document; the viewer renders the text in its own sans-serif.

use std::fmt::Write;

use super::{Anchor, Rgb, Shape, HEIGHT, LEFT, PLOT_H, PLOT_W, TOP, WIDTH};

/// The shapes, in order, as an SVG document.
pub fn render(shapes: &[Shape]) -> String {
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for shape in shapes {
        element(shape, &mut out);
    }
    out.push_str("</svg>\n");
    out
}

fn element(shape: &Shape, out: &mut String) {
    let _ = match shape {
        Shape::Line {
            from,
            to,
            colour,
            width,
        } => writeln!(
            out,
            "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{}\"{}/>",
            from.0,
            from.1,
            to.0,
            to.1,
            hex(*colour),
            stroke_width(*width)
        ),
        Shape::Polyline {
            points,
            colour,
            width,
        } => {
            let path: Vec<String> = points.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            writeln!(
                out,
                "<polyline fill=\"none\" stroke=\"{}\"{} points=\"{}\"/>",
                hex(*colour),
                stroke_width(*width),
                path.join(" ")
            )
        }
        Shape::Dot {
            centre,
            radius,
            colour,
        } => writeln!(
            out,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"{radius}\" fill=\"{}\"/>",
            centre.0,
            centre.1,
            hex(*colour)
        ),
        Shape::Frame => writeln!(
            out,
            "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{PLOT_W}\" height=\"{PLOT_H}\" fill=\"none\" stroke=\"black\"/>"
        ),
        Shape::Text(label) => {
            let anchor = match label.anchor {
                Anchor::Start => "start",
                Anchor::Middle => "middle",
                Anchor::End => "end",
            };
            let size = if label.title { " font-size=\"15\"" } else { "" };
            let (x, y) = label.at;
            let place = if label.upright {
                format!("transform=\"translate({x:.1} {y:.1}) rotate(-90)\"")
            } else {
                format!("x=\"{x:.1}\" y=\"{y:.1}\"")
            };
            writeln!(
                out,
                "<text {place} text-anchor=\"{anchor}\"{size}>{}</text>",
                escape(&label.text)
            )
        }
    };
}

fn hex([r, g, b]: Rgb) -> String {
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// SVG's default stroke is 1 unit wide.
fn stroke_width(width: f64) -> String {
    if width == 1.0 {
        String::new()
    } else {
        format!(" stroke-width=\"{width}\"")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
