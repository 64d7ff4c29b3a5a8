//! A strict parser of the OpenMetrics text format (the exposition format
//! Prometheus scrapes, <https://prometheus.io/docs/specs/om/open_metrics_spec/>),
//! for tests that read `GET /metrics`. It refuses what a scraper would:
//! a sample outside its family or of a name its type does not have, bad
//! names, labels or values, a family or series given twice, histogram
//! buckets that are not cumulative, and text that does not end in `# EOF`.

use std::collections::BTreeMap;

/// One sample line: its name, labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A metric family: its `# TYPE`, `# HELP` and samples in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Family {
    pub kind: String,
    pub help: Option<String>,
    pub unit: Option<String>,
    pub samples: Vec<Sample>,
}

/// A whole exposition, by family name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Exposition {
    pub families: BTreeMap<String, Family>,
}

const TYPES: [&str; 8] = [
    "counter",
    "gauge",
    "histogram",
    "gaugehistogram",
    "stateset",
    "info",
    "summary",
    "unknown",
];

impl Exposition {
    /// Parses `text`.
    ///
    /// # Errors
    /// The first line that breaks the format, with its number and why.
    pub fn parse(text: &str) -> Result<Self, String> {
        let body = text
            .strip_suffix("# EOF\n")
            .or_else(|| text.strip_suffix("# EOF"))
            .ok_or("the exposition does not end with `# EOF`")?;
        let mut out = Self::default();
        let mut current: Option<String> = None;
        let mut seen = std::collections::HashSet::new();
        for (i, line) in body.lines().enumerate() {
            let at = |why: String| format!("line {}: {why}: {line:?}", i + 1);
            if line.is_empty() {
                return Err(at("an empty line".into()));
            }
            if let Some(meta) = line.strip_prefix("# ") {
                let (word, rest) = meta
                    .split_once(' ')
                    .ok_or_else(|| at("a bare comment".into()))?;
                let (name, value) = rest.split_once(' ').unwrap_or((rest, ""));
                check_name(name).map_err(at)?;
                if current.as_deref() != Some(name) {
                    if out.families.contains_key(name) {
                        return Err(at(format!("family {name} given twice")));
                    }
                    out.families.insert(name.to_string(), Family::default());
                    current = Some(name.to_string());
                }
                let family = out.families.get_mut(name).expect("inserted above");
                match word {
                    "TYPE" if family.kind.is_empty() && TYPES.contains(&value) => {
                        family.kind = value.to_string();
                    }
                    "HELP" if family.help.is_none() => {
                        family.help = Some(unescape(value).map_err(at)?)
                    }
                    "UNIT" if family.unit.is_none() => family.unit = Some(value.to_string()),
                    _ => return Err(at(format!("an unknown or repeated `# {word}`"))),
                }
                continue;
            }
            let sample = parse_sample(line).map_err(at)?;
            let family_name = current
                .as_deref()
                .ok_or_else(|| at("a sample before any `# TYPE`".into()))?;
            let family = out.families.get_mut(family_name).expect("current exists");
            if family.kind.is_empty() {
                return Err(at(format!("family {family_name} has no `# TYPE`")));
            }
            let suffix = sample
                .name
                .strip_prefix(family_name)
                .ok_or_else(|| at(format!("a sample outside family {family_name}")))?;
            let allowed: &[&str] = match family.kind.as_str() {
                "counter" => &["_total", "_created"],
                "histogram" | "gaugehistogram" => {
                    &["_bucket", "_count", "_sum", "_created", "_gcount", "_gsum"]
                }
                "summary" => &["", "_count", "_sum", "_created"],
                "info" => &["_info"],
                _ => &[""],
            };
            if !allowed.contains(&suffix) {
                return Err(at(format!(
                    "a {} has no sample {}",
                    family.kind, sample.name
                )));
            }
            if suffix == "_bucket" && !sample.labels.contains_key("le") {
                return Err(at("a bucket without `le`".into()));
            }
            if family.kind == "counter"
                && suffix == "_total"
                && (sample.value.is_nan() || sample.value < 0.0)
            {
                return Err(at("a negative or NaN counter".into()));
            }
            if !seen.insert((sample.name.clone(), sample.labels.clone())) {
                return Err(at("a series given twice".into()));
            }
            family.samples.push(sample);
        }
        for (name, family) in &out.families {
            if family.kind == "histogram" {
                check_histogram(name, family)?;
            }
        }
        Ok(out)
    }

    /// The value of the series `name` with exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples(name)
            .find(|s| s.labels == want)
            .map(|s| s.value)
    }

    /// Every sample named `name`.
    pub fn samples<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.families
            .values()
            .flat_map(|f| &f.samples)
            .filter(move |s| s.name == name)
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("{name:?} is not a metric name"))
    }
}

/// `name{label="value",…} value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("a sample without a value")?;
    let name = &line[..name_end];
    check_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        while !rest.starts_with('}') {
            let (label, after) = rest.split_once("=\"").ok_or("a label without `=\"`")?;
            check_name(label).map_err(|_| format!("{label:?} is not a label name"))?;
            let (value, after) = quoted(after)?;
            if labels.insert(label.to_string(), value).is_some() {
                return Err(format!("label {label} given twice"));
            }
            rest = match after.strip_prefix(',') {
                Some(next) if !next.starts_with('}') => next,
                Some(_) => return Err("a trailing comma in the labels".into()),
                None if after.starts_with('}') => after,
                None => return Err("labels not separated by `,`".into()),
            };
        }
        rest = &rest[1..];
    }
    let rest = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let mut parts = rest.split(' ');
    let value = parse_value(parts.next().unwrap_or_default())?;
    if let Some(ts) = parts.next() {
        ts.parse::<f64>()
            .map_err(|_| format!("{ts:?} is not a timestamp"))?;
    }
    if parts.next().is_some() {
        return Err("more than a value and a timestamp".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        // Rust also reads "inf", "infinity" and "nan", which the format does not have.
        _ if text
            .chars()
            .any(|c| c.is_ascii_alphabetic() && !"eE".contains(c)) =>
        {
            Err(format!("{text:?} is not a number"))
        }
        _ => text
            .parse()
            .map_err(|_| format!("{text:?} is not a number")),
    }
}

/// A label value up to its closing quote, unescaped; and what follows.
fn quoted(text: &str) -> Result<(String, &str), String> {
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Ok((unescape(&text[..i])?, &text[i + 1..])),
            '\n' => break,
            _ => {}
        }
    }
    Err("an unterminated label value".into())
}

fn unescape(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some('n') => out.push('\n'),
            other => return Err(format!("a bad escape \\{}", other.unwrap_or(' '))),
        }
    }
    Ok(out)
}

/// Buckets of each series are cumulative, end at `+Inf`, and `+Inf` is the count.
fn check_histogram(name: &str, family: &Family) -> Result<(), String> {
    let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
    for s in family
        .samples
        .iter()
        .filter(|s| s.name.ends_with("_bucket"))
    {
        let mut labels = s.labels.clone();
        let le = parse_value(&labels.remove("le").expect("checked when parsed"))?;
        series.entry(labels).or_default().push((le, s.value));
    }
    for (labels, buckets) in series {
        let cumulative = buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
        let inf = buckets.last().filter(|b| b.0 == f64::INFINITY).map(|b| b.1);
        let count = family
            .samples
            .iter()
            .find(|s| s.name == format!("{name}_count") && s.labels == labels)
            .map(|s| s.value);
        if !cumulative || inf.is_none() || inf != count {
            return Err(format!(
                "histogram {name}{labels:?}: buckets not cumulative up to +Inf = _count"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "# HELP ao_sessions Sessions \\\\ by \\\"status\\\".\n\
# TYPE ao_sessions gauge\n\
ao_sessions{project=\"app\",status=\"working\"} 2\n\
ao_sessions{project=\"a\\\"b\",status=\"done\"} 1\n\
# TYPE ao_spawns counter\n\
ao_spawns_total{project=\"app\"} 3\n\
# TYPE ao_t histogram\n\
ao_t_sum 1.5\n\
ao_t_count 2\n\
ao_t_bucket{le=\"0.5\"} 1\n\
ao_t_bucket{le=\"+Inf\"} 2\n\
# EOF\n";

    #[test]
    fn a_good_exposition_is_read_whole() {
        let e = Exposition::parse(GOOD).unwrap();
        assert_eq!(
            e.value("ao_sessions", &[("project", "app"), ("status", "working")]),
            Some(2.0)
        );
        assert_eq!(
            e.value("ao_sessions", &[("project", "a\"b"), ("status", "done")]),
            Some(1.0)
        );
        assert_eq!(e.value("ao_spawns_total", &[("project", "app")]), Some(3.0));
        assert_eq!(
            e.families["ao_sessions"].help.as_deref(),
            Some("Sessions \\ by \"status\".")
        );
    }

    #[test]
    fn malformed_text_is_refused() {
        let bad = [
            ("ao_spawns_total{project=\"app\"} 3\n", "no EOF"),
            ("ao_x 1\n# EOF\n", "no TYPE"),
            ("# TYPE ao_x gauge\nao_y 1\n# EOF\n", "outside its family"),
            ("# TYPE ao_x counter\nao_x 1\n# EOF\n", "a counter without _total"),
            ("# TYPE ao_x gauge\nao_x{a=\"1\",} 1\n# EOF\n", "trailing comma"),
            ("# TYPE ao_x gauge\nao_x{a=\"1} 1\n# EOF\n", "unterminated"),
            ("# TYPE ao_x gauge\nao_x{a=1} 1\n# EOF\n", "unquoted"),
            ("# TYPE ao_x gauge\nao_x{a=\"1\",a=\"2\"} 1\n# EOF\n", "a label twice"),
            ("# TYPE ao_x gauge\nao_x one\n# EOF\n", "a word for a value"),
            ("# TYPE ao_x gauge\nao_x inf\n# EOF\n", "Rust's inf"),
            ("# TYPE ao_x gauge\nao_x 1\nao_x 2\n# EOF\n", "a series twice"),
            ("# TYPE ao_x gauge\n# TYPE ao_y gauge\n# TYPE ao_x gauge\n# EOF\n", "a family twice"),
            ("# TYPE ao_x flute\n# EOF\n", "an unknown type"),
            ("# TYPE 1x gauge\n# EOF\n", "a bad name"),
            ("# TYPE ao_x gauge\n\nao_x 1\n# EOF\n", "an empty line"),
            ("# TYPE ao_x gauge\nao_x 1 2 3\n# EOF\n", "extra fields"),
            ("# TYPE ao_x gauge\nao_x{a=\"\\q\"} 1\n# EOF\n", "a bad escape"),
            (
                "# TYPE ao_t histogram\nao_t_count 2\nao_t_bucket{le=\"1\"} 2\nao_t_bucket{le=\"+Inf\"} 1\n# EOF\n",
                "buckets not cumulative",
            ),
            (
                "# TYPE ao_t histogram\nao_t_count 3\nao_t_bucket{le=\"+Inf\"} 2\n# EOF\n",
                "+Inf is not the count",
            ),
        ];
        for (text, why) in bad {
            assert!(
                Exposition::parse(text).is_err(),
                "accepted ({why}): {text:?}"
            );
        }
    }
}
