//! Server-rendered SVG line charts: vitals over a session, an ECG strip. Pure: points in,
//! an `<svg>` string out, no JavaScript.
//!
//! A chart maps time (µs) to x and values to y, draws each series as one path (broken where
//! the data has a gap), shades bands (e.g. the infusion), and draws vertical markers (e.g.
//! advisories) with a `<title>` tooltip. Series longer than the chart is wide are reduced to
//! the minimum and maximum of each pixel column ([`downsample`]), so a 56-minute 1 Hz series
//! or a 250 Hz ECG strip costs a few thousand path points, and spikes stay visible.

use std::fmt::Write as _;

use crate::text::Esc;

/// Most points drawn per series: two per pixel column of the widest chart Vigil draws.
/// Keeps a page's SVG at a few hundred kilobytes whatever the input.
pub const MAX_POINTS_PER_SERIES: usize = 4_000;

/// One line.
#[derive(Debug, Clone)]
pub struct Series<'a> {
    /// Legend text (escaped when drawn).
    pub label: &'a str,
    /// A CSS colour for the line, e.g. `#c0392b` (trusted: callers pass constants).
    pub color: &'static str,
    /// `(t_us, value)` in time order.
    pub points: Vec<(i64, f64)>,
    /// A step in time longer than this breaks the line (no line across missing data), µs.
    pub max_gap_us: i64,
}

/// A vertical line at an instant.
#[derive(Debug, Clone)]
pub struct Marker {
    /// When, µs.
    pub t_us: i64,
    /// Tooltip and short label (escaped when drawn).
    pub label: String,
    /// A CSS colour (trusted).
    pub color: &'static str,
}

/// A shaded time span.
#[derive(Debug, Clone)]
pub struct Band {
    /// Start, µs.
    pub from_us: i64,
    /// End, µs.
    pub to_us: i64,
    /// Tooltip (escaped when drawn).
    pub label: String,
    /// A CSS colour (trusted); drawn translucent.
    pub color: &'static str,
}

/// How the x axis is labelled: time since `origin_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeAxis {
    /// Whole minutes, `10 min`.
    Minutes,
    /// Seconds, `2.5 s`.
    Seconds,
}

/// A chart to draw.
#[derive(Debug, Clone)]
pub struct LineChart<'a> {
    /// Accessible title (escaped).
    pub title: &'a str,
    /// Unit shown on the y axis (escaped).
    pub unit: &'a str,
    /// Size in CSS pixels.
    pub width: u32,
    /// Size in CSS pixels.
    pub height: u32,
    /// The time span shown, µs; `from < to`.
    pub x_range: (i64, i64),
    /// Zero of the x-axis labels, µs.
    pub origin_us: i64,
    /// Label style.
    pub axis: TimeAxis,
    /// The value span; `None` fits the data with a margin.
    pub y_range: Option<(f64, f64)>,
    /// Lines.
    pub series: Vec<Series<'a>>,
    /// Vertical markers.
    pub markers: Vec<Marker>,
    /// Shaded spans.
    pub bands: Vec<Band>,
}

const MARGIN_LEFT: f64 = 48.0;
const MARGIN_RIGHT: f64 = 12.0;
const MARGIN_TOP: f64 = 22.0;
const MARGIN_BOTTOM: f64 = 24.0;

/// Reduces `points` (time-ordered) to at most two per bucket of `[from, to)` split into
/// `buckets`: the minimum and the maximum, in time order. Points outside the range are dropped.
pub fn downsample(points: &[(i64, f64)], from: i64, to: i64, buckets: usize) -> Vec<(i64, f64)> {
    let inside = points.iter().filter(|(t, _)| *t >= from && *t < to);
    if buckets == 0 || to <= from {
        return Vec::new();
    }
    if points.len() <= buckets.saturating_mul(2) {
        return inside.copied().collect();
    }
    let span = (to - from) as f64;
    let mut out = Vec::with_capacity(buckets * 2);
    // The bucket being filled: its index, its lowest and its highest point.
    type Bucket = (usize, (i64, f64), (i64, f64));
    let mut current: Option<Bucket> = None;
    let flush = |out: &mut Vec<(i64, f64)>, (_, lo, hi): Bucket| {
        if lo.0 == hi.0 {
            out.push(lo);
        } else if lo.0 < hi.0 {
            out.extend([lo, hi]);
        } else {
            out.extend([hi, lo]);
        }
    };
    for &(t, v) in inside {
        let bucket = (((t - from) as f64 / span) * buckets as f64) as usize;
        match &mut current {
            Some((b, lo, hi)) if *b == bucket => {
                if v < lo.1 {
                    *lo = (t, v);
                }
                if v > hi.1 {
                    *hi = (t, v);
                }
            }
            _ => {
                if let Some(c) = current.take() {
                    flush(&mut out, c);
                }
                current = Some((bucket, (t, v), (t, v)));
            }
        }
    }
    if let Some(c) = current {
        flush(&mut out, c);
    }
    out
}

/// A "nice" step (1, 2 or 5 × 10ⁿ) giving about `target` intervals over `span`.
fn nice_step(span: f64, target: f64) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / target;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm < 1.5 {
        1.0
    } else if norm < 3.5 {
        2.0
    } else if norm < 7.5 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn fit_y(series: &[Series<'_>], x_range: (i64, i64)) -> (f64, f64) {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for s in series {
        for &(t, v) in &s.points {
            if t >= x_range.0 && t < x_range.1 && v.is_finite() {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1.0);
    (lo - pad, hi + pad)
}

/// Draws the chart as an `<svg>` element.
/// [`line_chart`] as markup for a maud page: trusted, since every label in it is escaped here.
pub fn chart(c: &LineChart<'_>) -> maud::Markup {
    maud::PreEscaped(line_chart(c))
}

/// The `<svg>` of a chart.
pub fn line_chart(c: &LineChart<'_>) -> String {
    let (x0, x1) = (c.x_range.0, c.x_range.1.max(c.x_range.0 + 1));
    let (y0, y1) = c.y_range.unwrap_or_else(|| fit_y(&c.series, (x0, x1)));
    let y1 = if y1 > y0 { y1 } else { y0 + 1.0 };
    let (w, h) = (f64::from(c.width), f64::from(c.height));
    let plot_w = (w - MARGIN_LEFT - MARGIN_RIGHT).max(1.0);
    let plot_h = (h - MARGIN_TOP - MARGIN_BOTTOM).max(1.0);
    let sx = |t: i64| MARGIN_LEFT + (t - x0) as f64 / (x1 - x0) as f64 * plot_w;
    let sy = |v: f64| MARGIN_TOP + (1.0 - (v - y0) / (y1 - y0)) * plot_h;
    let mut svg = String::with_capacity(16 * 1024);
    let _ = write!(
        svg,
        r#"<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" viewBox="0 0 {} {}" role="img" aria-label="{}"><title>{}</title>"#,
        c.width,
        c.height,
        c.width,
        c.height,
        Esc(c.title),
        Esc(c.title)
    );
    let _ = write!(
        svg,
        r##"<rect x="{MARGIN_LEFT}" y="{MARGIN_TOP}" width="{plot_w:.1}" height="{plot_h:.1}" fill="#fff" stroke="#d0d5dd"/>"##
    );
    for b in &c.bands {
        let (a, z) = (sx(b.from_us.max(x0)), sx(b.to_us.min(x1)));
        if z > a {
            let _ = write!(
                svg,
                r#"<rect class="band" x="{a:.1}" y="{MARGIN_TOP}" width="{:.1}" height="{plot_h:.1}" fill="{}" fill-opacity="0.12"><title>{}</title></rect>"#,
                z - a,
                b.color,
                Esc(&b.label)
            );
        }
    }
    // Horizontal grid and y labels.
    let step = nice_step(y1 - y0, 4.0);
    let mut v = (y0 / step).ceil() * step;
    while v <= y1 {
        let y = sy(v);
        let _ = write!(
            svg,
            r##"<line x1="{MARGIN_LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#eef0f3"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end" fill="#555">{}</text>"##,
            MARGIN_LEFT + plot_w,
            MARGIN_LEFT - 4.0,
            y + 4.0,
            trim_number(v)
        );
        v += step;
    }
    // Vertical grid and x labels, relative to the origin.
    let unit_us = match c.axis {
        TimeAxis::Minutes => 60_000_000.0,
        TimeAxis::Seconds => 1_000_000.0,
    };
    let span_units = (x1 - x0) as f64 / unit_us;
    let xstep = nice_step(span_units, 6.0);
    let first = ((x0 - c.origin_us) as f64 / unit_us / xstep).ceil() * xstep;
    let mut u = first;
    while c.origin_us as f64 + u * unit_us < x1 as f64 {
        let t = c.origin_us + (u * unit_us) as i64;
        let x = sx(t);
        let label = match c.axis {
            TimeAxis::Minutes => format!("{} min", trim_number(u)),
            TimeAxis::Seconds => format!("{} s", trim_number(u)),
        };
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{MARGIN_TOP}" y2="{:.1}" stroke="#eef0f3"/><text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle" fill="#555">{label}</text>"##,
            MARGIN_TOP + plot_h,
            h - 6.0
        );
        u += xstep;
    }
    let _ = write!(
        svg,
        r##"<text x="4" y="14" font-size="11" fill="#555">{}</text>"##,
        Esc(c.unit)
    );
    // Series.
    let buckets = (plot_w as usize).clamp(1, MAX_POINTS_PER_SERIES / 2);
    let mut legend_x = MARGIN_LEFT + 40.0;
    for s in &c.series {
        let pts = downsample(&s.points, x0, x1, buckets);
        let mut d = String::with_capacity(pts.len() * 14);
        let mut prev: Option<i64> = None;
        for &(t, v) in &pts {
            if !v.is_finite() {
                prev = None;
                continue;
            }
            let cmd = match prev {
                Some(p) if t - p <= s.max_gap_us => 'L',
                _ => 'M',
            };
            let _ = write!(d, "{cmd}{:.1} {:.1}", sx(t), sy(v.clamp(y0, y1)));
            prev = Some(t);
        }
        if !d.is_empty() {
            let _ = write!(
                svg,
                r#"<path class="series" d="{d}" fill="none" stroke="{}" stroke-width="1.4" stroke-linejoin="round"><title>{}</title></path>"#,
                s.color,
                Esc(s.label)
            );
        }
        let _ = write!(
            svg,
            r##"<rect x="{legend_x:.1}" y="6" width="10" height="10" fill="{}"/><text x="{:.1}" y="15" font-size="11" fill="#333">{}</text>"##,
            s.color,
            legend_x + 14.0,
            Esc(s.label)
        );
        legend_x += 24.0 + 7.0 * s.label.chars().count() as f64;
    }
    for m in &c.markers {
        if m.t_us < x0 || m.t_us >= x1 {
            continue;
        }
        let x = sx(m.t_us);
        let _ = write!(
            svg,
            r#"<g class="marker"><line x1="{x:.1}" x2="{x:.1}" y1="{MARGIN_TOP}" y2="{:.1}" stroke="{}" stroke-width="2" stroke-dasharray="4 3"/><path d="M{:.1} {MARGIN_TOP}l5 -8h-10z" fill="{}"/><title>{}</title></g>"#,
            MARGIN_TOP + plot_h,
            m.color,
            x,
            m.color,
            Esc(&m.label)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A tick value without trailing zeros: `10`, `2.5`, `0.25`.
fn trim_number(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(points: Vec<(i64, f64)>) -> LineChart<'static> {
        LineChart {
            title: "Heart <rate>",
            unit: "/min",
            width: 600,
            height: 200,
            x_range: (0, 60_000_000),
            origin_us: 0,
            axis: TimeAxis::Seconds,
            y_range: None,
            series: vec![Series {
                label: "HR",
                color: "#c0392b",
                points,
                max_gap_us: 5_000_000,
            }],
            markers: vec![Marker {
                t_us: 30_000_000,
                label: "bp_high <high>".into(),
                color: "#d92d20",
            }],
            bands: vec![],
        }
    }

    #[test]
    fn draws_lines_markers_and_escapes_text() {
        let pts: Vec<_> = (0..60).map(|s| (s * 1_000_000, 70.0 + s as f64)).collect();
        let svg = line_chart(&chart(pts));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("Heart &lt;rate&gt;"));
        assert!(svg.contains("bp_high &lt;high&gt;"));
        assert_eq!(svg.matches("<path class=\"series\"").count(), 1);
        assert_eq!(svg.matches("class=\"marker\"").count(), 1);
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn a_gap_breaks_the_line() {
        let mut pts: Vec<_> = (0..10).map(|s| (s * 1_000_000, 70.0)).collect();
        pts.extend((40..50).map(|s| (s * 1_000_000, 80.0)));
        let svg = line_chart(&chart(pts));
        let d = svg.split("d=\"").nth(1).unwrap().split('"').next().unwrap();
        assert_eq!(d.matches('M').count(), 2, "{d}");
    }

    #[test]
    fn empty_and_degenerate_inputs_draw_without_panicking() {
        let svg = line_chart(&chart(vec![]));
        assert!(!svg.contains("series\" d"));
        let mut c = chart(vec![(0, 5.0), (1, 5.0)]);
        c.x_range = (10, 10);
        c.y_range = Some((3.0, 3.0));
        assert!(line_chart(&c).ends_with("</svg>"));
    }

    #[test]
    fn downsampling_keeps_extremes_in_time_order() {
        let pts: Vec<_> = (0..10_000)
            .map(|i| (i, if i == 5_003 { 1_000.0 } else { (i % 7) as f64 }))
            .collect();
        let out = downsample(&pts, 0, 10_000, 100);
        assert!(out.len() <= 200);
        assert!(out.iter().any(|&(t, v)| t == 5_003 && v == 1_000.0));
        assert!(out.windows(2).all(|w| w[0].0 <= w[1].0));
        assert!(out.iter().all(|&(_, v)| v >= 0.0));
    }

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(60.0, 6.0), 10.0);
        assert_eq!(nice_step(10.0, 4.0), 2.0);
        assert_eq!(nice_step(0.0, 4.0), 1.0);
        assert_eq!(trim_number(2.50), "2.5");
        assert_eq!(trim_number(10.0), "10");
    }
}
