//! A `require_api_key` step's `keys_file`: the keys of a large client base kept out of the
//! policy, one per line as `<sha256-hex> <client>`.
//!
//! A million keys inline would be a 100 MB policy; as a file they are read at load and
//! reload like any file a policy names, and every mistake is reported at its line and
//! column. Keys of the same client share one client record, so memory grows with the
//! keys, not with a copy of the client per key.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use portcullis_assertions::api_key::ApiClient;

use super::{Diagnostic, Location};

/// Most problems reported for one file: a file that is wrong everywhere (the wrong file
/// named) should say so briefly.
const MAX_REPORTED: usize = 20;

/// The keys of one file: digest → client.
pub(crate) type Keys = HashMap<[u8; 32], Arc<ApiClient>>;

/// Parses a keys file's text; `file` names it in diagnostics. Blank lines and lines whose
/// first non-blank character is `#` are skipped.
///
/// # Errors
/// Every problem found (at most [`MAX_REPORTED`], then one line saying how many more).
pub(crate) fn parse(file: &Arc<Path>, text: &str) -> Result<Keys, Vec<Diagnostic>> {
    let mut keys = Keys::with_capacity(text.len() / 72);
    let mut clients: HashMap<&str, Arc<ApiClient>> = HashMap::new();
    let mut errors = Vec::new();
    let problems = std::cell::Cell::new(0usize);
    let mut report = |line: usize, col: usize, message: String| {
        problems.set(problems.get() + 1);
        if problems.get() <= MAX_REPORTED {
            errors.push(Diagnostic {
                file: file.clone(),
                loc: Some(Location { line, col }),
                path: "keys_file".to_owned(),
                message,
            });
        }
    };
    // A file saved by an editor that marks UTF-8 starts with a byte-order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let content = line.trim_start();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let column_of = |part: &str| part.as_ptr() as usize - line.as_ptr() as usize + 1;
        let mut parts = content.split_ascii_whitespace();
        let (Some(hex_digest), client, extra) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let mut digest = [0u8; 32];
        if hex::decode_to_slice(hex_digest, &mut digest).is_err() {
            report(
                number,
                column_of(hex_digest),
                "expected 64 hex digits, the SHA-256 of the key (`portcullis hash-key` prints it)"
                    .to_owned(),
            );
            continue;
        }
        let Some(client) = client else {
            report(
                number,
                column_of(hex_digest) + hex_digest.len(),
                "the line names no client: write `<sha256> <client>`".to_owned(),
            );
            continue;
        };
        if let Some(extra) = extra {
            report(
                number,
                column_of(extra),
                "unexpected text after the client: a line is `<sha256> <client>` (client attributes are given to inline `keys:` only)".to_owned(),
            );
            continue;
        }
        let shared = clients.entry(client).or_insert_with(|| {
            Arc::new(ApiClient {
                id: Arc::from(client),
                attributes: Vec::new(),
            })
        });
        if keys.insert(digest, shared.clone()).is_some() {
            // Where the first one is, is looked up only for what is reported (a map of line
            // numbers would cost 80 MB while a million keys load, and a search per
            // duplicate of a file appended to itself would never end).
            let first = (problems.get() < MAX_REPORTED)
                .then(|| {
                    text.lines()
                        .position(|earlier| earlier.trim_start().starts_with(hex_digest))
                })
                .flatten()
                .map_or(String::new(), |index| {
                    format!(" (first on line {})", index + 1)
                });
            report(
                number,
                column_of(hex_digest),
                format!("the same key is listed twice{first}"),
            );
        }
    }
    let problems = problems.get();
    if problems > MAX_REPORTED {
        errors.push(Diagnostic {
            file: file.clone(),
            loc: None,
            path: "keys_file".to_owned(),
            message: format!("{} more problems not shown", problems - MAX_REPORTED),
        });
    }
    if errors.is_empty() {
        keys.shrink_to_fit();
        Ok(keys)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Arc<Path> {
        Arc::from(Path::new("keys.txt"))
    }

    fn hex_of(key: &str) -> String {
        hex::encode(portcullis_assertions::api_key::digest(key.as_bytes()))
    }

    #[test]
    fn reads_keys_and_shares_one_record_per_client() {
        let text = format!(
            "# partner keys\n\n{} acme\n  {}\tacme\n{} globex\n",
            hex_of("k1"),
            hex_of("k2"),
            hex_of("k3")
        );
        let keys = parse(&file(), &text).expect("parses");
        assert_eq!(keys.len(), 3);
        let acme_1 = &keys[&portcullis_assertions::api_key::digest(b"k1")];
        let acme_2 = &keys[&portcullis_assertions::api_key::digest(b"k2")];
        assert!(Arc::ptr_eq(acme_1, acme_2));
        assert_eq!(
            &*keys[&portcullis_assertions::api_key::digest(b"k3")].id,
            "globex"
        );
    }

    #[test]
    fn every_mistake_is_reported_at_its_line_and_column() {
        let text = format!(
            "{k1} acme\nnot-hex acme\n{k2}\n{k3} acme tier=gold\n  {k1} other\n",
            k1 = hex_of("k1"),
            k2 = hex_of("k2"),
            k3 = hex_of("k3"),
        );
        let errors = parse(&file(), &text).expect_err("refused");
        let at: Vec<(usize, usize)> = errors
            .iter()
            .filter_map(|e| e.loc.map(|l| (l.line, l.col)))
            .collect();
        assert_eq!(at, [(2, 1), (3, 65), (4, 71), (5, 3)]);
        assert!(errors[3].message.contains("first on line 1"), "{errors:?}");
    }

    #[test]
    fn a_byte_order_mark_and_crlf_line_ends_are_read_like_plain_text() {
        let text = format!("\u{feff}# keys\r\n{} acme\r\n", hex_of("k1"));
        let keys = parse(&file(), &text).expect("parses");
        assert_eq!(
            &*keys[&portcullis_assertions::api_key::digest(b"k1")].id,
            "acme"
        );
    }

    #[test]
    fn a_file_appended_to_itself_is_refused_at_once() {
        let once: String = (0..50_000)
            .map(|index| format!("{} c{index}\n", hex_of(&index.to_string())))
            .collect();
        let errors = parse(&file(), &once.repeat(2)).expect_err("duplicates");
        assert_eq!(errors.len(), MAX_REPORTED + 1);
        assert!(errors[0].message.contains("first on line 1"), "{errors:?}");
    }

    #[test]
    fn a_file_wrong_everywhere_is_reported_briefly() {
        let text = "nope client\n".repeat(100);
        let errors = parse(&file(), &text).expect_err("refused");
        assert_eq!(errors.len(), MAX_REPORTED + 1);
        assert!(errors[MAX_REPORTED].message.contains("80 more"));
    }
}
