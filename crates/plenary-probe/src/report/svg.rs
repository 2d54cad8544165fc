//! Small inline SVG line charts, drawn by hand so the HTML report needs no script, no
//! stylesheet and no network to open.

use std::fmt::Write as _;

const W: f64 = 640.0;
const H: f64 = 280.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 46.0;

pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub points: Vec<(f64, f64)>,
}

pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// A vertical marker (the knee) with its label.
    pub marker_x: Option<(f64, String)>,
    /// A horizontal dashed line (a threshold) with its label.
    pub limit_y: Option<(f64, String)>,
    /// x positions to shade as invalid (the probe, not the server, was the limit).
    pub invalid_x: Vec<f64>,
}

/// Escapes text for HTML and SVG.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A "nice" tick spacing (1, 2 or 5 times a power of ten) giving about `n` ticks.
pub fn nice_step(range: f64, n: f64) -> f64 {
    if !range.is_finite() || range <= 0.0 {
        return 1.0;
    }
    let raw = range / n;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn label(v: f64, step: f64) -> String {
    if step >= 1.0 {
        format!("{v:.0}")
    } else {
        let digits = (-step.log10().floor()) as usize;
        format!("{v:.digits$}")
    }
}

/// (min, max) over values, widened when empty or flat so the axis has a span.
fn domain(values: impl Iterator<Item = f64>, from_zero: bool) -> (f64, f64) {
    let (mut lo, mut hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if from_zero {
        lo = lo.min(0.0);
    }
    if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
        let pad = if hi == 0.0 { 1.0 } else { hi.abs() * 0.5 };
        (lo, hi) = (lo - if from_zero { 0.0 } else { pad }, hi + pad);
    }
    (lo, hi)
}

pub fn render(c: &Chart) -> String {
    let xs = c.series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let (x0, x1) = domain(xs.chain(c.marker_x.as_ref().map(|m| m.0)), false);
    let ys = c.series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (y0, mut y1) = domain(ys.chain(c.limit_y.as_ref().map(|l| l.0)), true);
    y1 += (y1 - y0) * 0.08;
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| TOP + ph - (y - y0) / (y1 - y0) * ph;

    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{t}" font-family="sans-serif" font-size="11">"#,
        t = esc(&c.title)
    );
    let _ = write!(
        s,
        r##"<text x="{LEFT}" y="18" font-size="14" font-weight="bold">{}</text>"##,
        esc(&c.title)
    );
    // Grid and tick labels.
    let ystep = nice_step(y1 - y0, 5.0);
    let mut y = (y0 / ystep).ceil() * ystep;
    for _ in 0..20 {
        if y > y1 {
            break;
        }
        let py = sy(y);
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            py + 4.0,
            label(y, ystep)
        );
        y += ystep;
    }
    let xstep = nice_step(x1 - x0, 6.0);
    let mut x = (x0 / xstep).ceil() * xstep;
    for _ in 0..20 {
        if x > x1 {
            break;
        }
        let px = sx(x);
        let _ = write!(
            s,
            r##"<line x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{:.1}" stroke="#999"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + ph,
            TOP + ph + 4.0,
            TOP + ph + 16.0,
            label(x, xstep)
        );
        x += xstep;
    }
    let _ = write!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#666"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"##,
        LEFT + pw / 2.0,
        H - 8.0,
        esc(&c.x_label),
        TOP + ph / 2.0,
        esc(&c.y_label)
    );
    for &bx in c.invalid_x.iter().filter(|x| x.is_finite()) {
        let half = pw / 40.0;
        let px = sx(bx).clamp(LEFT + half, LEFT + pw - half);
        let _ = write!(
            s,
            r##"<rect x="{:.1}" y="{TOP}" width="{:.1}" height="{ph}" fill="#c00" fill-opacity="0.12"/><text x="{px:.1}" y="{:.1}" text-anchor="middle" fill="#c00">invalid</text>"##,
            px - half,
            2.0 * half,
            TOP + 24.0
        );
    }
    if let Some((ly, text)) = &c.limit_y {
        let py = sy(*ly);
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#c00" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#c00">{}</text>"##,
            W - RIGHT,
            W - RIGHT - 4.0,
            py - 4.0,
            esc(text)
        );
    }
    if let Some((mx, text)) = &c.marker_x {
        let px = sx(*mx);
        let _ = write!(
            s,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#080" stroke-width="2"/><text x="{:.1}" y="{:.1}" fill="#080">{}</text>"##,
            TOP + ph,
            px + 4.0,
            TOP + 12.0,
            esc(text)
        );
    }
    for (i, series) in c.series.iter().enumerate() {
        let pts: Vec<String> = series
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"#,
            pts.join(" "),
            series.color
        );
        for p in &pts {
            let (px, py) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = write!(
                s,
                r#"<circle cx="{px}" cy="{py}" r="3" fill="{}"/>"#,
                series.color
            );
        }
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" fill="{}">{}</text>"#,
            LEFT + 8.0 + 150.0 * i as f64,
            TOP + ph - 8.0,
            series.color,
            esc(&series.name)
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(100.0, 5.0), 20.0);
        assert_eq!(nice_step(7.0, 5.0), 2.0);
        assert_eq!(nice_step(0.3, 5.0), 0.1);
        assert_eq!(nice_step(0.0, 5.0), 1.0);
        assert_eq!(nice_step(f64::NAN, 5.0), 1.0);
        assert_eq!(label(0.25, 0.05), "0.25");
        assert_eq!(label(40.0, 20.0), "40");
    }

    #[test]
    fn renders_points_markers_and_escapes_text() {
        let svg = render(&Chart {
            title: "Loss <%>".into(),
            x_label: "allocations".into(),
            y_label: "loss %".into(),
            series: vec![Series {
                name: "loss".into(),
                color: "#06c",
                points: vec![(50.0, 0.0), (100.0, 0.4), (150.0, 2.5)],
            }],
            marker_x: Some((100.0, "knee 100".into())),
            limit_y: Some((1.0, "1%".into())),
            invalid_x: vec![150.0],
        });
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(svg.contains("Loss &lt;%&gt;"));
        assert!(svg.contains("knee 100"));
        assert!(svg.contains("stroke-dasharray"));
        assert!(svg.contains(">invalid<"));
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn single_point_and_empty_charts_still_have_axes() {
        for points in [vec![(5.0, 0.0)], vec![]] {
            let svg = render(&Chart {
                title: "t".into(),
                x_label: "x".into(),
                y_label: "y".into(),
                series: vec![Series {
                    name: "s".into(),
                    color: "#000",
                    points,
                }],
                marker_x: None,
                limit_y: None,
                invalid_x: vec![],
            });
            assert!(svg.contains("<rect"));
            assert!(!svg.contains("NaN") && !svg.contains("inf"));
        }
    }
}
