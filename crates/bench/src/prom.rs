//! Reading figures out of the server's `/metrics` text (the Prometheus text format): the value of
//! a series picked by its name and some of its labels.

/// The sum of every series named `name` whose labels include all of `labels`; `None` when no
/// series matches (a counter that was never incremented is absent).
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((series, v)) = parse_line(line) else {
            continue;
        };
        if series.name != name {
            continue;
        }
        let all = labels
            .iter()
            .all(|(k, want)| series.labels.iter().any(|(lk, lv)| lk == k && lv == want));
        if all {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// A counter's value, 0 when the series does not exist yet.
pub fn counter(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    value(text, name, labels).map_or(0, |v| v.max(0.0).round() as u64)
}

/// `strata_instances{state=STATE}`: instances in one state (`generic`, `starting`, `idle`,
/// `busy`, `draining`), 0 when absent.
pub fn instances(text: &str, state: &str) -> u64 {
    counter(text, "strata_instances", &[("state", state)])
}

/// `strata_cold_starts_total{function=F,kind=KIND}` (`pool_hit` or `pool_miss`), 0 when absent.
pub fn cold_starts(text: &str, function: &str, kind: &str) -> u64 {
    counter(
        text,
        "strata_cold_starts_total",
        &[("function", function), ("kind", kind)],
    )
}

struct Series {
    name: String,
    labels: Vec<(String, String)>,
}

/// `name{k="v",...} value` or `name value`; a trailing timestamp is ignored.
fn parse_line(line: &str) -> Option<(Series, f64)> {
    let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices();
        let mut key = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => break i + 1,
                ',' | ' ' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            '"' => break,
                            other => value.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                other => key.push(other),
            }
        };
        rest = &body[end..];
    }
    let v = rest.split_whitespace().next()?;
    let v = match v {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => v.parse().ok()?,
    };
    Some((Series { name, labels }, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP strata_cold_starts_total Invocations that needed a new or specialized instance.
# TYPE strata_cold_starts_total counter
strata_cold_starts_total{function=\"a\",kind=\"pool_hit\"} 3
strata_cold_starts_total{function=\"a\",kind=\"pool_miss\"} 1
strata_cold_starts_total{function=\"b,\\\"x\",kind=\"pool_hit\"} 2
strata_invocation_duration_seconds_bucket{function=\"a\",le=\"+Inf\"} 4
# TYPE strata_instances gauge
strata_instances{state=\"generic\"} 4
strata_instances{state=\"starting\"} 0
strata_up 1
";

    #[test]
    fn picks_series_by_name_and_labels() {
        assert_eq!(cold_starts(TEXT, "a", "pool_hit"), 3);
        assert_eq!(cold_starts(TEXT, "a", "pool_miss"), 1);
        assert_eq!(cold_starts(TEXT, "b,\"x", "pool_hit"), 2, "escaped label");
        assert_eq!(cold_starts(TEXT, "c", "pool_hit"), 0, "absent counter");
        assert_eq!(instances(TEXT, "generic"), 4);
        assert_eq!(instances(TEXT, "starting"), 0);
        assert_eq!(instances(TEXT, "busy"), 0);
        assert_eq!(value(TEXT, "strata_up", &[]), Some(1.0));
        // A subset of labels sums the matching series.
        assert_eq!(
            value(TEXT, "strata_cold_starts_total", &[("kind", "pool_hit")]),
            Some(5.0)
        );
        assert_eq!(
            value(
                TEXT,
                "strata_invocation_duration_seconds_bucket",
                &[("le", "+Inf")]
            ),
            Some(4.0)
        );
        assert_eq!(value(TEXT, "strata_cold", &[]), None, "names match whole");
    }

    #[test]
    fn bad_lines_are_skipped() {
        assert_eq!(value("x{a=\"1\" 2\nx{a=\"1\"} 3\n", "x", &[]), Some(3.0));
        assert_eq!(value("x nope\n", "x", &[]), None);
    }
}
