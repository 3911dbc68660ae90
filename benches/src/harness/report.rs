//! The report: a table (requests/s, latency percentiles, CPU per request, peak memory) with
//! ratios against nginx's pass-through and Portcullis's own, the targets checked, the
//! machine and versions — printed, and written as JSON, Markdown and an SVG chart.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::wrk::Measured;

/// One measured system + scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub system: String,
    pub scenario: String,
    pub about: String,
    pub rps: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub requests: u64,
    /// CPU seconds the proxy process (tree) used during the run; `None` for the backend direct.
    pub cpu_seconds: Option<f64>,
    pub peak_rss_kib: Option<u64>,
    pub errors: u64,
}

impl Row {
    #[must_use]
    pub fn new(
        system: &str,
        scenario: &str,
        about: &str,
        m: &Measured,
        cpu: Option<f64>,
        rss: Option<u64>,
    ) -> Row {
        Row {
            system: system.to_owned(),
            scenario: scenario.to_owned(),
            about: about.to_owned(),
            rps: m.rps(),
            p50_us: m.p50_us,
            p99_us: m.p99_us,
            p999_us: m.p999_us,
            requests: m.requests,
            cpu_seconds: cpu,
            peak_rss_kib: rss,
            errors: m.socket_errors + m.non_2xx,
        }
    }

    /// CPU microseconds per request.
    #[must_use]
    pub fn cpu_us_per_request(&self) -> Option<f64> {
        let cpu = self.cpu_seconds?;
        (self.requests > 0).then(|| cpu * 1e6 / self.requests as f64)
    }

    /// CPU seconds per 1,000 requests.
    #[must_use]
    pub fn cpu_s_per_1k(&self) -> Option<f64> {
        self.cpu_us_per_request().map(|us| us / 1000.0)
    }

    #[must_use]
    pub fn label(&self) -> String {
        format!("{} / {}", self.system, self.scenario)
    }
}

/// A ratio of two rows, as reported.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ratio {
    pub what: String,
    pub against: String,
    pub rps: f64,
    pub cpu: Option<f64>,
    pub p99: f64,
    /// The target for the CPU ratio, and whether it was met.
    pub target: Option<f64>,
    pub met: Option<bool>,
}

fn ratio(a: &Row, b: &Row, target: Option<f64>) -> Ratio {
    let cpu = match (a.cpu_us_per_request(), b.cpu_us_per_request()) {
        (Some(x), Some(y)) if y > 0.0 => Some(x / y),
        _ => None,
    };
    Ratio {
        what: a.label(),
        against: b.label(),
        rps: if b.rps > 0.0 { a.rps / b.rps } else { 0.0 },
        cpu,
        p99: if b.p99_us > 0 {
            a.p99_us as f64 / b.p99_us as f64
        } else {
            0.0
        },
        target,
        met: target.zip(cpu).map(|(t, c)| c <= t),
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub started: String,
    pub machine: Vec<(String, String)>,
    pub settings: Vec<(String, String)>,
    pub rows: Vec<Row>,
    pub ratios: Vec<Ratio>,
    pub skipped: Vec<(String, String)>,
}

fn find<'r>(rows: &'r [Row], system: &str, scenario: &str) -> Option<&'r Row> {
    rows.iter()
        .find(|r| r.system == system && r.scenario == scenario)
}

/// The ratios the issue asks for: against nginx pass-through, and each Portcullis scenario
/// against its own baseline with its target.
#[must_use]
pub fn ratios(rows: &[Row], baselines: &[(&str, &str, Option<f64>)]) -> Vec<Ratio> {
    let mut out = Vec::new();
    if let Some(nginx) = find(rows, "nginx", "pass-through") {
        for r in rows
            .iter()
            .filter(|r| r.scenario == "pass-through" && r.system != "nginx")
        {
            // Portcullis pass-through's targets against nginx: CPU 1.0x.
            let target = (r.system == "portcullis").then_some(1.0);
            out.push(ratio(r, nginx, target));
        }
    }
    for (scenario, baseline, target) in baselines {
        if scenario == baseline {
            continue;
        }
        if let (Some(a), Some(b)) = (
            find(rows, "portcullis", scenario),
            find(rows, "portcullis", baseline),
        ) {
            out.push(ratio(a, b, *target));
        }
    }
    // The 16 KiB answer against nginx with the same answer (target 1.4x CPU), then each
    // pass-through against bare Pingora with the same answer.
    if let (Some(a), Some(b)) = (
        find(rows, "portcullis", "pass-through-16k"),
        find(rows, "nginx", "pass-through-16k"),
    ) {
        out.push(ratio(a, b, Some(1.4)));
    }
    for scenario in ["pass-through", "pass-through-16k"] {
        if let (Some(a), Some(b)) = (
            find(rows, "portcullis", scenario),
            find(rows, "pingora-minimal", scenario),
        ) {
            out.push(ratio(a, b, None));
        }
    }
    out
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |x| format!("{x:.digits$}"))
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

impl Report {
    /// The table as Markdown (also printed to the terminal).
    #[must_use]
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# Portcullis load benchmark, {}\n", self.started);
        for (k, v) in &self.settings {
            let _ = writeln!(s, "- {k}: {v}");
        }
        let _ = writeln!(s, "\n| system | scenario | req/s | p50 ms | p99 ms | p99.9 ms | CPU µs/req | CPU s/1k req | peak RSS MiB | errors |");
        let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for r in &self.rows {
            let _ = writeln!(
                s,
                "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
                r.system,
                r.scenario,
                r.rps,
                ms(r.p50_us),
                ms(r.p99_us),
                ms(r.p999_us),
                opt(r.cpu_us_per_request(), 1),
                opt(r.cpu_s_per_1k(), 4),
                opt(r.peak_rss_kib.map(|k| k as f64 / 1024.0), 1),
                r.errors
            );
        }
        let _ = writeln!(s, "\n## Ratios (same run)\n");
        let _ = writeln!(
            s,
            "| | against | req/s | CPU per request | p99 | CPU target | met |"
        );
        let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---|");
        for r in &self.ratios {
            let _ = writeln!(
                s,
                "| {} | {} | {:.2}× | {} | {:.2}× | {} | {} |",
                r.what,
                r.against,
                r.rps,
                opt(r.cpu, 3).to_string() + if r.cpu.is_some() { "×" } else { "" },
                r.p99,
                r.target
                    .map_or_else(|| "–".to_owned(), |t| format!("≤ {t:.2}×")),
                r.met.map_or("–", |m| if m { "yes" } else { "**no**" })
            );
        }
        if !self.skipped.is_empty() {
            let _ = writeln!(s, "\nNot measured:");
            for (what, why) in &self.skipped {
                let _ = writeln!(s, "- {what}: {why}");
            }
        }
        let _ = writeln!(s, "\n## Scenarios\n");
        for r in self.rows.iter().filter(|r| !r.about.is_empty()) {
            let _ = writeln!(s, "- {}: {}", r.label(), r.about);
        }
        let _ = writeln!(s, "\n## Machine\n");
        for (k, v) in &self.machine {
            let _ = writeln!(s, "- {k}: {v}");
        }
        s
    }

    /// Three horizontal bar charts: requests/s, p99 latency and CPU per request of every row.
    #[must_use]
    pub fn svg(&self) -> String {
        let rows = &self.rows;
        let bar_h = 18.0;
        let gap = 6.0;
        let label_w = 300.0;
        let chart_w = 300.0;
        let panel_h = rows.len() as f64 * (bar_h + gap) + 40.0;
        let width = label_w + 3.0 * (chart_w + 90.0);
        let max_rps = rows.iter().map(|r| r.rps).fold(1.0, f64::max);
        let max_p99 = rows.iter().map(|r| r.p99_us as f64).fold(1.0, f64::max);
        let max_cpu = rows
            .iter()
            .filter_map(Row::cpu_us_per_request)
            .fold(1.0, f64::max);
        let mut s = String::new();
        let _ = write!(
            s,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{:.0}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">Portcullis load benchmark {} (proxy pinned to one core)</text>\n",
            panel_h + 40.0,
            xml(&self.started)
        );
        let panels = [
            ("requests/s", max_rps, ""),
            ("p99 latency", max_p99 / 1000.0, " ms"),
            ("proxy CPU per request", max_cpu, " µs"),
        ];
        for (panel, (title, max, unit)) in panels.into_iter().enumerate() {
            let x0 = label_w + panel as f64 * (chart_w + 90.0);
            let _ = writeln!(
                s,
                "<text x=\"{x0:.0}\" y=\"45\" font-weight=\"bold\">{title}</text>"
            );
            for (i, r) in rows.iter().enumerate() {
                let y = 55.0 + i as f64 * (bar_h + gap);
                let value = match panel {
                    0 => r.rps,
                    1 => r.p99_us as f64 / 1000.0,
                    _ => match r.cpu_us_per_request() {
                        Some(c) => c,
                        None => continue,
                    },
                };
                let w = (value / max * chart_w).max(1.0);
                let colour = match r.system.as_str() {
                    "portcullis" => "#1f6feb",
                    "nginx" => "#2da44e",
                    "haproxy" => "#bf8700",
                    "praxis" => "#8250df",
                    "pingora-minimal" => "#6e7781",
                    _ => "#afb8c1",
                };
                if panel == 0 {
                    let _ = writeln!(
                        s,
                        "<text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"end\">{}</text>",
                        label_w - 8.0,
                        y + 13.0,
                        xml(&r.label())
                    );
                }
                let _ = writeln!(
                    s,
                    "<rect x=\"{x0:.0}\" y=\"{y:.0}\" width=\"{w:.1}\" height=\"{bar_h:.0}\" fill=\"{colour}\"/>\n<text x=\"{:.1}\" y=\"{:.0}\">{}{unit}</text>",
                    x0 + w + 4.0,
                    y + 13.0,
                    match panel {
                        0 => format!("{value:.0}"),
                        1 => format!("{value:.2}"),
                        _ => format!("{value:.1}"),
                    }
                );
            }
        }
        s.push_str("</svg>\n");
        s
    }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(system: &str, scenario: &str, rps: f64, cpu: f64, p99: u64) -> Row {
        Row {
            system: system.into(),
            scenario: scenario.into(),
            about: String::new(),
            rps,
            p50_us: 500,
            p99_us: p99,
            p999_us: p99 * 2,
            requests: 100_000,
            cpu_seconds: Some(cpu),
            peak_rss_kib: Some(20_480),
            errors: 0,
        }
    }

    #[test]
    fn ratios_compare_like_with_like_and_check_targets() {
        let rows = vec![
            row("nginx", "pass-through", 50_000.0, 1.0, 1000),
            row("portcullis", "pass-through", 40_000.0, 2.0, 2000),
            row("portcullis", "api-key", 38_000.0, 2.2, 2100),
            row("portcullis", "bearer-jwt", 30_000.0, 2.6, 2500),
        ];
        let r = ratios(
            &rows,
            &[
                ("api-key", "pass-through", Some(1.15)),
                ("bearer-jwt", "pass-through", Some(1.15)),
            ],
        );
        let vs_nginx = &r[0];
        assert_eq!(vs_nginx.what, "portcullis / pass-through");
        assert!((vs_nginx.cpu.expect("cpu") - 2.0).abs() < 1e-9);
        assert_eq!(vs_nginx.met, Some(false));
        let api = r
            .iter()
            .find(|x| x.what == "portcullis / api-key")
            .expect("api");
        assert!((api.cpu.expect("cpu") - 1.1).abs() < 1e-9);
        assert_eq!(api.met, Some(true));
        let jwt = r
            .iter()
            .find(|x| x.what == "portcullis / bearer-jwt")
            .expect("jwt");
        assert_eq!(jwt.met, Some(false));
    }

    #[test]
    fn the_chart_and_table_name_every_row() {
        let report = Report {
            started: "2026-12-01T00:00:00Z".into(),
            machine: vec![("cpu".into(), "test".into())],
            settings: vec![],
            rows: vec![
                row("nginx", "pass-through", 50_000.0, 1.0, 1000),
                row("portcullis", "a<b", 1.0, 1.0, 10),
            ],
            ratios: vec![],
            skipped: vec![("saml".into(), "not built".into())],
        };
        let svg = report.svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("nginx / pass-through") && svg.contains("a&lt;b"));
        let md = report.markdown();
        assert!(md.contains("| nginx | pass-through | 50000 |"));
        assert!(md.contains("- saml: not built"));
    }
}
