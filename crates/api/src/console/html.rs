//! The console's HTML: the page layout, small components, formatting helpers and the inline SVG
//! charts. Everything is built with maud, which escapes every interpolated value; the only
//! unescaped text is what these functions build from numbers (SVG coordinates).

use maud::{html, Markup, PreEscaped, DOCTYPE};
use strata_control::MinuteBucket;

use super::session::Session;

/// The section a page belongs to (highlighted in the navigation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// Functions.
    Functions,
    /// Runtimes.
    Runtimes,
    /// Jobs.
    Jobs,
    /// Nothing (login, errors).
    None,
}

/// A whole page. `session` adds the navigation and the logout button.
pub fn page(title: &str, nav: Nav, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Strata" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/console" { "Strata" }
                    @if nav != Nav::None || session.is_some() {
                        a.active[nav == Nav::Functions] href="/console/functions" { "Functions" }
                        a.active[nav == Nav::Runtimes] href="/console/runtimes" { "Runtimes" }
                        a.active[nav == Nav::Jobs] href="/console/jobs" { "Jobs" }
                    }
                    @if let Some(s) = session {
                        form method="post" action="/console/logout" {
                            (csrf_field(s))
                            button type="submit" id="logout" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The hidden CSRF field every state-changing form starts with.
pub fn csrf_field(s: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.csrf); }
}

/// An error banner.
pub fn error_banner(message: &str) -> Markup {
    html! { div.banner.error role="alert" { (message) } }
}

/// An information banner.
pub fn info_banner(message: &str) -> Markup {
    html! { div.banner.info role="status" { (message) } }
}

/// A byte count with binary units.
pub fn bytes(n: u64) -> String {
    strata_types::format_bytes(n)
}

/// Milliseconds as a short duration.
pub fn millis(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS.mmm` (UTC).
pub fn timestamp(ms: u64) -> String {
    let (days, rem) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// Days since 1970-01-01 to a (year, month, day) date (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// JSON text pretty-printed when it parses, as is otherwise.
pub fn pretty_json(body: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => serde_json::to_string_pretty(&v)
            .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned()),
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    }
}

// ---- charts ----

const W: f64 = 360.0;
const H: f64 = 130.0;
const LEFT: f64 = 34.0;
const BOTTOM: f64 = 16.0;
const TOP: f64 = 8.0;

/// A round upper bound for a chart's axis.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

fn minute_label(minute: u64) -> String {
    let t = timestamp(minute * 60_000);
    t[11..16].to_string()
}

fn frame(label: &str, max: f64, unit: &str, buckets: &[MinuteBucket], inner: Markup) -> Markup {
    let first = buckets.first().map(|b| minute_label(b.minute));
    let last = buckets.last().map(|b| minute_label(b.minute));
    let fmt = |v: f64| {
        if v >= 100.0 || v.fract() == 0.0 {
            format!("{v:.0}{unit}")
        } else {
            format!("{v:.1}{unit}")
        }
    };
    html! {
        svg.chart viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(label) xmlns="http://www.w3.org/2000/svg" {
            title { (label) }
            line.axis x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(H - BOTTOM) {}
            line.axis x1=(LEFT) y1=(H - BOTTOM) x2=(W - 4.0) y2=(H - BOTTOM) {}
            text x="2" y=(TOP + 8.0) { (fmt(max)) }
            text x="2" y=(H - BOTTOM) { (fmt(0.0)) }
            @if let (Some(f), Some(l)) = (first, last) {
                text x=(LEFT) y=(H - 3.0) { (f) }
                text x=(W - 30.0) y=(H - 3.0) { (l) }
            }
            (inner)
        }
    }
}

fn y_of(v: f64, max: f64) -> f64 {
    let span = H - BOTTOM - TOP;
    (H - BOTTOM - v / max * span).clamp(TOP, H - BOTTOM)
}

/// A count per minute, with its CSS class: what a chart draws over its main bars.
pub type Overlay<'a> = (&'a str, &'a dyn Fn(&MinuteBucket) -> u64);

/// A bar chart of one count per minute, with a second count drawn over it (errors over
/// invocations, say).
pub fn bar_chart(
    label: &str,
    buckets: &[MinuteBucket],
    value: impl Fn(&MinuteBucket) -> u64,
    overlay: Option<Overlay<'_>>,
    class: &str,
) -> Markup {
    let max = nice_max(buckets.iter().map(&value).max().unwrap_or(0) as f64);
    let n = buckets.len().max(1) as f64;
    let slot = (W - LEFT - 4.0) / n;
    let bar = (slot - 1.0).max(1.0);
    let inner = html! {
        @for (i, b) in buckets.iter().enumerate() {
            @let v = value(b);
            @if v > 0 {
                @let x = LEFT + 1.0 + i as f64 * slot;
                @let y = y_of(v as f64, max);
                rect class=(format!("bar {class}")) x=(fmt2(x)) y=(fmt2(y)) width=(fmt2(bar)) height=(fmt2(H - BOTTOM - y)) {
                    title { (minute_label(b.minute)) ": " (v) }
                }
                @if let Some((oclass, over)) = overlay {
                    @let o = over(b);
                    @if o > 0 {
                        @let oy = y_of(o as f64, max);
                        rect class=(format!("bar {oclass}")) x=(fmt2(x)) y=(fmt2(oy)) width=(fmt2(bar)) height=(fmt2(H - BOTTOM - oy)) {
                            title { (minute_label(b.minute)) ": " (o) " " (oclass) }
                        }
                    }
                }
            }
        }
    };
    frame(label, max, "", buckets, inner)
}

/// A line chart of mean and maximum latency per minute (minutes without invocations break the
/// lines).
pub fn latency_chart(label: &str, buckets: &[MinuteBucket]) -> Markup {
    let max = nice_max(buckets.iter().map(|b| b.max_ms).fold(0.0, f64::max));
    let n = buckets.len().max(1) as f64;
    let slot = (W - LEFT - 4.0) / n;
    let x_of = |i: usize| LEFT + slot * (i as f64 + 0.5);
    let runs = |f: &dyn Fn(&MinuteBucket) -> f64| -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = String::new();
        for (i, b) in buckets.iter().enumerate() {
            if b.invocations == 0 {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                continue;
            }
            cur.push_str(&format!("{:.2},{:.2} ", x_of(i), y_of(f(b), max)));
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    };
    let means = runs(&|b| b.mean_ms());
    let maxes = runs(&|b| b.max_ms);
    let inner = html! {
        @for p in &maxes { polyline.max points=(p.trim_end()) {} }
        @for p in &means { polyline.mean points=(p.trim_end()) {} }
        @for (i, b) in buckets.iter().enumerate() {
            @if b.invocations > 0 {
                circle.mean cx=(fmt2(x_of(i))) cy=(fmt2(y_of(b.mean_ms(), max))) r="1.8" {
                    title { (minute_label(b.minute)) ": mean " (millis(b.mean_ms())) ", max " (millis(b.max_ms)) }
                }
            }
        }
    };
    frame(label, max, " ms", buckets, inner)
}

fn fmt2(v: f64) -> PreEscaped<String> {
    PreEscaped(format!("{v:.2}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_dates() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00.000");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29 00:00:00.000");
        assert_eq!(timestamp(1_700_000_000_123), "2023-11-14 22:13:20.123");
    }

    #[test]
    fn axis_bounds_are_round() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(3.0), 5.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(120.0), 200.0);
        assert_eq!(nice_max(0.3), 0.5);
    }

    fn bucket(minute: u64, n: u64, errors: u64, ms: f64) -> MinuteBucket {
        MinuteBucket {
            minute,
            invocations: n,
            errors,
            cold_starts: 0,
            total_ms: ms * n as f64,
            max_ms: ms * 2.0,
        }
    }

    #[test]
    fn charts_draw_one_bar_per_busy_minute_and_break_lines_at_gaps() {
        let b = vec![
            bucket(10, 4, 1, 5.0),
            bucket(11, 0, 0, 0.0),
            bucket(12, 2, 0, 8.0),
        ];
        let svg = bar_chart(
            "Invocations",
            &b,
            |b| b.invocations,
            Some(("err", &|b: &MinuteBucket| b.errors)),
            "",
        )
        .into_string();
        assert_eq!(svg.matches("<rect class=\"bar \"").count(), 2, "{svg}");
        assert_eq!(svg.matches("<rect class=\"bar err\"").count(), 1, "{svg}");
        assert!(svg.contains("00:10: 4"), "{svg}");
        let svg = latency_chart("Latency", &b).into_string();
        assert_eq!(svg.matches("<polyline class=\"mean\"").count(), 2, "{svg}");
        assert_eq!(svg.matches("<circle").count(), 2, "{svg}");
        assert!(svg.contains("mean 5.00 ms"), "{svg}");
    }
}
