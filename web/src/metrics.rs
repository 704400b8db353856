//! Prometheus' text exposition format (version 0.0.4) for both servers' `GET /metrics`: each
//! family once with its `# HELP` and `# TYPE`, then its samples.

use std::fmt::Write as _;

/// What a metric family measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (until the process restarts).
    Counter,
    /// Goes up and down.
    Gauge,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// A page of metrics whose names all start with one prefix (`vigil_cloud_`).
#[derive(Debug)]
pub struct Exposition {
    prefix: &'static str,
    out: String,
}

impl Exposition {
    /// An empty page; every name gets `prefix` in front.
    pub fn new(prefix: &'static str) -> Exposition {
        Exposition {
            prefix,
            out: String::new(),
        }
    }

    fn header(&mut self, name: &str, kind: Kind, help: &str) {
        let prefix = self.prefix;
        // Help text is ours (constants); a line break in it would end the comment.
        let help = help.replace(['\n', '\r'], " ");
        // Writing to a String cannot fail.
        let _ = writeln!(self.out, "# HELP {prefix}{name} {help}");
        let _ = writeln!(self.out, "# TYPE {prefix}{name} {}", kind.name());
    }

    /// One family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) {
        self.header(name, kind, help);
        let prefix = self.prefix;
        let _ = writeln!(self.out, "{prefix}{name} {}", number(value));
    }

    /// A counter with one sample.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        // f64 keeps counts exact below 2^53, far beyond any count here.
        self.single(name, Kind::Counter, help, value as f64);
    }

    /// A gauge with one sample.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.single(name, Kind::Gauge, help, value);
    }

    /// One family with a sample per value of one label.
    pub fn labelled<'a>(
        &mut self,
        name: &str,
        kind: Kind,
        help: &str,
        label: &str,
        samples: impl IntoIterator<Item = (&'a str, f64)>,
    ) {
        self.header(name, kind, help);
        let prefix = self.prefix;
        for (value, v) in samples {
            let _ = writeln!(
                self.out,
                "{prefix}{name}{{{label}=\"{}\"}} {}",
                label_value(value),
                number(v)
            );
        }
    }

    /// The page.
    pub fn finish(self) -> String {
        self.out
    }
}

/// A sample value: integers without a decimal point, `NaN` and `±Inf` as Prometheus spells
/// them.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// A label value with `\`, `"` and line feeds escaped.
fn label_value(s: &str) -> String {
    s.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_have_help_type_and_samples() {
        let mut page = Exposition::new("vigil_test_");
        page.counter("frames_total", "Frames.", 3);
        page.gauge("lag_seconds", "Lag.\nSecond line", 2.5);
        page.labelled(
            "rejects_total",
            Kind::Counter,
            "Refusals.",
            "reason",
            [("forbidden", 2.0), ("odd\"\\\nname", 1.0)],
        );
        assert_eq!(
            page.finish(),
            "# HELP vigil_test_frames_total Frames.\n\
             # TYPE vigil_test_frames_total counter\n\
             vigil_test_frames_total 3\n\
             # HELP vigil_test_lag_seconds Lag. Second line\n\
             # TYPE vigil_test_lag_seconds gauge\n\
             vigil_test_lag_seconds 2.5\n\
             # HELP vigil_test_rejects_total Refusals.\n\
             # TYPE vigil_test_rejects_total counter\n\
             vigil_test_rejects_total{reason=\"forbidden\"} 2\n\
             vigil_test_rejects_total{reason=\"odd\\\"\\\\\\nname\"} 1\n"
        );
    }

    #[test]
    fn numbers_as_prometheus_reads_them() {
        let cases = [
            (0.0, "0"),
            (42.0, "42"),
            (-3.0, "-3"),
            (0.25, "0.25"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (1e20, "100000000000000000000"),
        ];
        for (v, s) in cases {
            assert_eq!(number(v), s, "{v}");
        }
    }
}
