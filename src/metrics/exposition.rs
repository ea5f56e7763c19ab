//! The Prometheus text exposition format, version 0.0.4, written by hand.
//!
//! Contract: [`Exposition`] collects samples in any order and [`Exposition::finish`] prints
//! each family once: `# HELP`, `# TYPE`, then its samples in the order they were added,
//! families sorted by name. Label values are escaped as the format requires (`\\`, `\"`,
//! `\n`); HELP text escapes `\\` and `\n`. Only what a scrape needs; no parsing.
//!
//! Format reference: <https://prometheus.io/docs/instrumenting/exposition_formats/>
//! ("Text-based format"). The content type a scrape is answered with is [`CONTENT_TYPE`].

use std::collections::BTreeMap;
use std::fmt::{Display, Write};

/// What the endpoint answers `GET /metrics` with.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The metric types this crate exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

struct Family {
    help: &'static str,
    kind: Kind,
    samples: String,
}

/// A scrape being assembled.
#[derive(Default)]
pub struct Exposition {
    families: BTreeMap<&'static str, Family>,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Adds one sample of `family`: the series `family` + `suffix` (`""`, or `_bucket`,
    /// `_sum`, `_count` for histograms) with `labels`. The first sample of a family fixes its
    /// help and type.
    pub fn sample(
        &mut self,
        family: &'static str,
        help: &'static str,
        kind: Kind,
        suffix: &str,
        labels: &[(&str, &str)],
        value: impl Display,
    ) {
        let f = self.families.entry(family).or_insert_with(|| Family {
            help,
            kind,
            samples: String::new(),
        });
        let s = &mut f.samples;
        s.push_str(family);
        s.push_str(suffix);
        if !labels.is_empty() {
            s.push('{');
            for (i, (name, value)) in labels.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                s.push_str(name);
                s.push_str("=\"");
                escape_into(s, value, true);
                s.push('"');
            }
            s.push('}');
        }
        // Writing to a String cannot fail.
        let _ = writeln!(s, " {value}");
    }

    /// The exposition text.
    pub fn finish(self) -> String {
        let mut out = String::new();
        for (name, f) in self.families {
            out.push_str("# HELP ");
            out.push_str(name);
            out.push(' ');
            escape_into(&mut out, f.help, false);
            out.push('\n');
            let _ = writeln!(out, "# TYPE {name} {}", f.kind.as_str());
            out.push_str(&f.samples);
        }
        out
    }
}

/// Appends `text` escaped: backslash and newline always, double quotes in label values.
fn escape_into(out: &mut String, text: &str, quotes: bool) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quotes => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_print_once_sorted_with_escaped_labels() {
        let mut e = Exposition::new();
        e.sample("b_total", "B.", Kind::Counter, "", &[("x", "1")], 3);
        e.sample("a", "Line\none \\", Kind::Gauge, "", &[], 7);
        e.sample(
            "b_total",
            "ignored",
            Kind::Gauge,
            "",
            &[("x", "q\"\\\n")],
            4,
        );
        assert_eq!(
            e.finish(),
            "# HELP a Line\\none \\\\\n# TYPE a gauge\na 7\n\
             # HELP b_total B.\n# TYPE b_total counter\nb_total{x=\"1\"} 3\n\
             b_total{x=\"q\\\"\\\\\\n\"} 4\n"
        );
    }
}
