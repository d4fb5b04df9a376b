//! The graphs of a score card, as inline SVG: black and greys only, with line styles (solid
//! value, dashed peer average, dotted target tiers) that a greyscale print tells apart.

use maud::{Markup, PreEscaped, html};

use crate::page::Unit;

/// How a line is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// The node's value: solid, thick, with a point per period.
    Value,
    /// The peer-group average: dashed.
    Peer,
    /// A target tier (1 threshold, 2 target, 3 stretch): thin, dotted, labelled at its end.
    Tier(u8),
}

impl Style {
    fn stroke(self) -> (&'static str, &'static str, &'static str) {
        // (colour, width, dash array)
        match self {
            Style::Value => ("#111", "2", "none"),
            Style::Peer => ("#444", "1.5", "7 4"),
            Style::Tier(1) => ("#777", "1", "1 3"),
            Style::Tier(2) => ("#777", "1", "4 2 1 2"),
            Style::Tier(_) => ("#777", "1", "8 3"),
        }
    }
}

/// One line: a value (or none) per x position.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub style: Style,
    pub points: Vec<Option<f64>>,
}

/// A line graph over periods.
#[derive(Debug, Clone)]
pub struct LineChart {
    pub title: String,
    pub unit: Unit,
    /// One label per x position (a period).
    pub x: Vec<String>,
    pub series: Vec<Series>,
    /// Where each value point links to (the report behind it).
    pub links: Vec<Option<String>>,
    /// What each value point's tooltip names it (its period in full, and where its link
    /// goes); missing: its x label.
    pub tips: Vec<String>,
    /// The position of the period the card is for.
    pub selected: Option<usize>,
}

const W: f64 = 480.0;
const H: f64 = 150.0;
const LEFT: f64 = 46.0;
const RIGHT: f64 = 64.0;
const TOP: f64 = 8.0;
const BOTTOM: f64 = 20.0;

/// The y range holding every value, padded, never empty.
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-9 {
        let pad = if hi.abs() > 1.0 { hi.abs() * 0.1 } else { 1.0 };
        return (lo - pad, hi + pad);
    }
    let pad = (hi - lo) * 0.12;
    (lo - pad, hi + pad)
}

fn num(v: f64) -> String {
    format!("{v:.1}")
}

struct Frame {
    n: usize,
    lo: f64,
    hi: f64,
}

impl Frame {
    fn x(&self, i: usize) -> f64 {
        let inner = W - LEFT - RIGHT;
        if self.n <= 1 {
            LEFT + inner / 2.0
        } else {
            LEFT + inner * i as f64 / (self.n - 1) as f64
        }
    }

    fn y(&self, v: f64) -> f64 {
        let inner = H - TOP - BOTTOM;
        TOP + inner * (1.0 - (v - self.lo) / (self.hi - self.lo))
    }

    /// Gridlines and their labels, and the x labels.
    fn axes(&self, unit: Unit, x: &[String], selected: Option<usize>) -> Markup {
        let ticks: Vec<f64> = (0..=3)
            .map(|k| self.lo + (self.hi - self.lo) * k as f64 / 3.0)
            .collect();
        // At most 7 x labels.
        let every = x.len().div_ceil(7).max(1);
        html! {
            @if let Some(s) = selected {
                rect x=(num(self.x(s) - 9.0)) y=(num(TOP)) width="18" height=(num(H - TOP - BOTTOM)) fill="#eee" {}
            }
            @for t in &ticks {
                line x1=(num(LEFT)) x2=(num(W - RIGHT)) y1=(num(self.y(*t))) y2=(num(self.y(*t))) stroke="#ddd" stroke-width="0.5" {}
                text x=(num(LEFT - 4.0)) y=(num(self.y(*t) + 3.0)) text-anchor="end" font-size="9" fill="#555" { (unit.tick(*t, self.hi - self.lo)) }
            }
            @for (i, label) in x.iter().enumerate() {
                @if i % every == 0 || Some(i) == selected {
                    text x=(num(self.x(i))) y=(num(H - 6.0)) text-anchor="middle" font-size="9" fill="#555"
                        font-weight=(if Some(i) == selected { "700" } else { "400" }) { (label) }
                }
            }
        }
    }
}

/// The polyline paths of `points`, broken where a value is missing.
fn path(frame: &Frame, points: &[Option<f64>]) -> String {
    let mut d = String::new();
    let mut pen_down = false;
    for (i, p) in points.iter().enumerate() {
        match p {
            Some(v) if v.is_finite() => {
                d.push_str(if pen_down { " L" } else { " M" });
                d.push_str(&format!("{} {}", num(frame.x(i)), num(frame.y(*v))));
                pen_down = true;
            }
            _ => pen_down = false,
        }
    }
    d
}

/// The labels of lines, at their last points, moved apart so none overlaps another.
fn end_labels<'a>(frame: &Frame, series: impl Iterator<Item = &'a Series>, dx: f64) -> Markup {
    const GAP: f64 = 8.5;
    let mut labels: Vec<(f64, f64, &str)> = series
        .filter_map(|s| {
            let (i, v) = s
                .points
                .iter()
                .enumerate()
                .rev()
                .find_map(|(i, p)| p.filter(|v| v.is_finite()).map(|v| (i, v)))?;
            Some((frame.x(i) + dx, frame.y(v) + 3.0, s.label.as_str()))
        })
        .collect();
    labels.sort_by(|a, b| a.1.total_cmp(&b.1));
    for k in 1..labels.len() {
        if labels[k].1 - labels[k - 1].1 < GAP {
            labels[k].1 = labels[k - 1].1 + GAP;
        }
    }
    html! {
        @for (x, y, label) in &labels {
            text x=(num(*x)) y=(num(*y)) font-size="8" fill="#555" { (label) }
        }
    }
}

/// A line graph.
pub fn line_chart(c: &LineChart) -> Markup {
    let (lo, hi) = range(
        c.series
            .iter()
            .flat_map(|s| s.points.iter().flatten().copied()),
    );
    let frame = Frame {
        n: c.x.len(),
        lo,
        hi,
    };
    html! {
        svg.chart xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(c.title) {
            title { (c.title) }
            (frame.axes(c.unit, &c.x, c.selected))
            @for s in c.series.iter().filter(|s| s.style != Style::Value) {
                @let (colour, width, dash) = s.style.stroke();
                path d=(path(&frame, &s.points)) fill="none" stroke=(colour) stroke-width=(width) stroke-dasharray=(dash) {}
            }
            (end_labels(&frame, c.series.iter().filter(|s| s.style != Style::Value), 5.0))
            @for s in c.series.iter().filter(|s| s.style == Style::Value) {
                @let (colour, width, dash) = s.style.stroke();
                path d=(path(&frame, &s.points)) fill="none" stroke=(colour) stroke-width=(width) stroke-dasharray=(dash) {}
                @for (i, p) in s.points.iter().enumerate() {
                    @if let Some(v) = p {
                        @let tip = html! {
                            title { (c.tips.get(i).or(c.x.get(i)).map(String::as_str).unwrap_or("")) ": " (c.unit.format(Some(*v))) }
                        };
                        @let r = if Some(i) == c.selected { "4" } else { "3" };
                        @match c.links.get(i).cloned().flatten() {
                            // The tooltip on the link: it names the value and where it goes.
                            Some(href) => a href=(href) {
                                (tip)
                                circle cx=(num(frame.x(i))) cy=(num(frame.y(*v))) r=(r) fill="#111" {}
                            },
                            None => circle cx=(num(frame.x(i))) cy=(num(frame.y(*v))) r=(r) fill="#111" { (tip) },
                        }
                    }
                }
            }
        }
    }
}

/// The customer-satisfaction graph: per quarter, a bar of the four rating shares stacked
/// (very satisfied at the bottom, darkest), so the top of the satisfied share is the
/// satisfaction percentage that the target tiers (dotted) and the peer average (dashed)
/// compare with.
#[derive(Debug, Clone)]
pub struct ShareChart {
    pub title: String,
    pub x: Vec<String>,
    /// Per quarter: very satisfied, satisfied, dissatisfied, very dissatisfied (percent).
    pub shares: Vec<[Option<f64>; 4]>,
    /// Lines over the bars: the peer average and target tiers.
    pub lines: Vec<Series>,
    pub links: Vec<Option<String>>,
    pub selected: Option<usize>,
}

const SHARE_FILLS: [&str; 4] = ["#222", "#888", "#ccc", "#fff"];
pub const SHARE_LABELS: [&str; 4] = [
    "very satisfied",
    "satisfied",
    "dissatisfied",
    "very dissatisfied",
];

pub fn share_chart(c: &ShareChart) -> Markup {
    let frame = Frame {
        n: c.x.len(),
        lo: 0.0,
        hi: 100.0,
    };
    let inner = W - LEFT - RIGHT;
    let bar = (inner / c.x.len().max(1) as f64 * 0.5).min(30.0);
    html! {
        svg.chart xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(c.title) {
            title { (c.title) }
            (frame.axes(Unit::Percent, &c.x, None))
            @for (i, shares) in c.shares.iter().enumerate() {
                @let x0 = frame.x(i) - bar / 2.0;
                @let bars = html! {
                    @for (k, share) in shares.iter().enumerate() {
                        @if let Some(v) = share {
                            @let below: f64 = shares[..k].iter().flatten().sum();
                            rect x=(num(x0)) width=(num(bar)) y=(num(frame.y(below + v))) height=(num(frame.y(below) - frame.y(below + v)))
                                fill=(SHARE_FILLS[k]) stroke="#111" stroke-width=(if Some(i) == c.selected { "1.5" } else { "0.5" }) {
                                title { (c.x[i]) ", " (SHARE_LABELS[k]) ": " (Unit::Percent.format(Some(*v))) }
                            }
                        }
                    }
                };
                @match c.links.get(i).cloned().flatten() {
                    Some(href) => a href=(href) { (bars) },
                    None => (bars),
                }
            }
            @for s in &c.lines {
                @let (colour, width, dash) = s.style.stroke();
                @for (i, p) in s.points.iter().enumerate() {
                    @if let Some(v) = p {
                        line x1=(num(frame.x(i) - bar / 2.0 - 6.0)) x2=(num(frame.x(i) + bar / 2.0 + 6.0)) y1=(num(frame.y(*v))) y2=(num(frame.y(*v)))
                            stroke=(colour) stroke-width=(width) stroke-dasharray=(dash) {}
                    }
                }
            }
            (end_labels(&frame, c.lines.iter(), bar / 2.0 + 8.0))
        }
    }
}

/// The legend of the line styles (and the share fills), once per card.
pub fn legend(with_peers: bool) -> Markup {
    let sample = |style: Style| {
        let (colour, width, dash) = style.stroke();
        PreEscaped(format!(
            "<svg width=\"28\" height=\"8\" viewBox=\"0 0 28 8\"><line x1=\"0\" y1=\"4\" x2=\"28\" y2=\"4\" stroke=\"{colour}\" stroke-width=\"{width}\" stroke-dasharray=\"{dash}\"/></svg>"
        ))
    };
    let fill = |k: usize| {
        PreEscaped(format!(
            "<svg width=\"10\" height=\"10\" viewBox=\"0 0 10 10\"><rect x=\"0.5\" y=\"0.5\" width=\"9\" height=\"9\" fill=\"{}\" stroke=\"#111\" stroke-width=\"0.5\"/></svg>",
            SHARE_FILLS[k]
        ))
    };
    html! {
        div.legend {
            span { (sample(Style::Value)) " value" }
            @if with_peers {
                span { (sample(Style::Peer)) " peer-group average" }
                span { (sample(Style::Tier(1))) " threshold" }
                span { (sample(Style::Tier(2))) " target" }
                span { (sample(Style::Tier(3))) " stretch" }
            }
            @for k in 0..4 { span { (fill(k)) " " (SHARE_LABELS[k]) } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_hold_every_value_and_are_never_empty() {
        let (lo, hi) = range([2.0, 4.0].into_iter());
        assert!(lo < 2.0 && hi > 4.0);
        let (lo, hi) = range([5.0].into_iter());
        assert!(lo < 5.0 && hi > 5.0);
        assert_eq!(range(std::iter::empty()), (0.0, 1.0));
        let (lo, hi) = range([f64::NAN, 1.0].into_iter());
        assert!(lo < 1.0 && hi > 1.0);
    }

    #[test]
    fn paths_break_at_missing_values() {
        let frame = Frame {
            n: 4,
            lo: 0.0,
            hi: 10.0,
        };
        let d = path(&frame, &[Some(1.0), None, Some(2.0), Some(3.0)]);
        assert_eq!(d.matches('M').count(), 2);
        assert_eq!(d.matches('L').count(), 1);
    }

    #[test]
    fn a_chart_links_its_points_and_escapes_labels() {
        let c = LineChart {
            title: "<on time>".into(),
            unit: Unit::Percent,
            x: vec!["01-07".into(), "01-21".into()],
            series: vec![Series {
                label: "value".into(),
                style: Style::Value,
                points: vec![Some(50.0), Some(60.0)],
            }],
            links: vec![None, Some("/report/rankings?a=1&b=2".into())],
            tips: vec![
                "pay period 2024-01-07".into(),
                "pay period 2024-01-21".into(),
            ],
            selected: Some(1),
        };
        let svg = line_chart(&c).into_string();
        assert!(svg.contains("&lt;on time&gt;"));
        assert!(svg.contains(
            "<a href=\"/report/rankings?a=1&amp;b=2\"><title>pay period 2024-01-21: 60.0%</title><circle"
        ));
        assert!(svg.contains("r=\"3\" fill=\"#111\"><title>pay period 2024-01-07: 50.0%</title>"));
        assert_eq!(svg.matches("<circle").count(), 2);
    }
}
