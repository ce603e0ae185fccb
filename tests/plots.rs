//! The examples' charts: the PNG beside each SVG puts data where the axes say and prints Greek
//! labels without a system font.

#[allow(dead_code)]
#[path = "../examples/common/plot/mod.rs"]
mod plot;

use plot::{Chart, Series};

/// A chart whose data spans exactly the axes: (0, 0) is the plot's lower-left corner,
/// (1, 1) its upper-right.
fn corners() -> Chart {
    Chart {
        title: "τ, ε and λ".into(),
        x_label: "ε".into(),
        y_label: "accuracy".into(),
        log_x: false,
        y_range: Some((0.0, 1.0)),
        series: vec![
            Series {
                name: "rising".into(),
                points: vec![(0.0, 0.0), (1.0, 1.0)],
            },
            Series {
                name: "flat <&>".into(),
                points: vec![(0.0, 0.5), (1.0, 0.5)],
            },
        ],
    }
}

fn colour_at(image: &image::RgbImage, x: u32, y: u32) -> [u8; 3] {
    image.get_pixel(x, y).0
}

#[test]
fn the_png_puts_points_where_the_svg_does() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chart.svg");
    corners().save(&path).unwrap();

    let svg = std::fs::read_to_string(&path).unwrap();
    assert_eq!(svg.matches("<polyline").count(), 2);
    assert!(svg.contains("flat &lt;&amp;&gt;"), "legend text is escaped");
    // The plot area is x 70..470, y 40..345 in chart units; (0, 0) is its lower-left corner.
    assert!(svg.contains("<circle cx=\"70.0\" cy=\"345.0\""), "{svg}");

    let png = image::open(path.with_extension("png")).unwrap().to_rgb8();
    assert_eq!(png.dimensions(), (1280, 800), "twice the SVG's size");
    let blue = [0x1f, 0x77, 0xb4];
    let red = [0xd6, 0x27, 0x28];
    // Marker centres, at twice the chart units: the first series' ends, the second's middle.
    assert_eq!(colour_at(&png, 140, 690), blue, "(0, 0)");
    assert_eq!(colour_at(&png, 940, 80), blue, "(1, 1)");
    assert_eq!(
        colour_at(&png, 140, (2.0 * (40.0 + 305.0 / 2.0)) as u32),
        red
    );
    // A quarter along the rising line, and nothing of it far off the line.
    assert_eq!(colour_at(&png, 340, 537), blue);
    assert_eq!(colour_at(&png, 340, 450), [255; 3]);
    // Text was drawn: dark pixels in the title's band, and along the turned y label.
    let dark = |x0: u32, x1: u32, y0: u32, y1: u32| {
        (y0..y1)
            .flat_map(|y| (x0..x1).map(move |x| (x, y)))
            .filter(|&(x, y)| colour_at(&png, x, y) == [0; 3])
            .count()
    };
    assert!(dark(400, 700, 20, 50) > 50, "the title");
    assert!(dark(20, 45, 300, 500) > 50, "the y label, upright");
    assert_eq!(
        dark(20, 45, 40, 200),
        0,
        "a short upright label stays near the middle"
    );
}
