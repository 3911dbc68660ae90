//! What `portcullis test` prints: a readable report (a diff and the step trace for each
//! failure, coverage gaps on request), or JUnit XML for CI.

use std::fmt::Write as _;

use super::FileResult;

/// The text report; `coverage` adds each policy's unexercised steps and branches.
#[must_use]
pub fn text(results: &[FileResult], coverage: bool) -> String {
    let mut out = String::new();
    let (mut passed, mut failed) = (0usize, 0usize);
    for file in results {
        let policy = file
            .policy
            .as_ref()
            .map(|p| format!(" (policy {})", p.display()))
            .unwrap_or_default();
        let _ = writeln!(out, "{}{policy}", file.path.display());
        for error in &file.errors {
            let _ = writeln!(out, "  error: {error}");
            failed += 1;
        }
        for case in &file.cases {
            if case.failures.is_empty() {
                passed += 1;
                let _ = writeln!(out, "  ok    {}", case.name);
                continue;
            }
            failed += 1;
            let _ = writeln!(
                out,
                "  FAIL  {} ({}:{})",
                case.name,
                file.path.display(),
                case.loc
            );
            for failure in &case.failures {
                let _ = writeln!(out, "        {failure}");
            }
            for line in case.detail.lines() {
                let _ = writeln!(out, "        | {line}");
            }
        }
        if coverage {
            if let Some(cov) = &file.coverage {
                let (total, ran) = cov.counts();
                let gaps = cov.gaps();
                let _ = writeln!(out, "  coverage: {ran} of {total} steps ran");
                for gap in gaps {
                    let _ = writeln!(out, "    not exercised: {gap}");
                }
            }
        }
    }
    let elapsed: f64 = results.iter().map(|f| f.elapsed.as_secs_f64()).sum();
    let _ = writeln!(
        out,
        "{passed} passed, {failed} failed, {} file(s) in {:.3}s",
        results.len(),
        elapsed
    );
    out
}

/// JUnit XML: one test suite per file, one test case per case (a file that cannot be read
/// is one failing case).
#[must_use]
pub fn junit(results: &[FileResult]) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
    for file in results {
        let name = xml(&file.path.display().to_string());
        let failures = file.cases.iter().filter(|c| !c.failures.is_empty()).count()
            + usize::from(!file.errors.is_empty());
        let tests = file.cases.len() + usize::from(!file.errors.is_empty());
        let _ = writeln!(
            out,
            "  <testsuite name=\"{name}\" tests=\"{tests}\" failures=\"{failures}\" time=\"{:.6}\">",
            file.elapsed.as_secs_f64()
        );
        if !file.errors.is_empty() {
            let text: Vec<String> = file.errors.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                out,
                "    <testcase classname=\"{name}\" name=\"(load)\"><failure message=\"the test file or its policy did not load\">{}</failure></testcase>",
                xml(&text.join("\n"))
            );
        }
        for case in &file.cases {
            let _ = write!(
                out,
                "    <testcase classname=\"{name}\" name=\"{}\" time=\"{:.6}\"",
                xml(&case.name),
                case.elapsed.as_secs_f64()
            );
            if case.failures.is_empty() {
                out.push_str("/>\n");
            } else {
                let _ = writeln!(
                    out,
                    "><failure message=\"{}\">{}\n{}</failure></testcase>",
                    xml(&case.failures[0]),
                    xml(&case.failures.join("\n")),
                    xml(&case.detail)
                );
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 has no place for other control characters.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}
