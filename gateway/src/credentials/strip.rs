//! Taking named cookies out of a `Cookie` line and named parameters out of a query string,
//! keeping everything else byte for byte.
//!
//! Names are compared the way a lenient application reads them (percent-decoded, query
//! names form-decoded, without regard to ASCII case), so `SESSION=`, `sess%69on=` or
//! `Api_Key=` cannot slip a credential past the gateway that the upstream then reads.

use portcullis_assertions::query::decode_component;

/// The `Cookie` line without the cookies named in `names` (`(bit, name)` pairs), and the
/// bits of the names found; `None` when none is in the line.
#[must_use]
pub fn without_cookies(line: &str, names: &[(usize, &str)]) -> Option<(String, u64)> {
    let mut found = 0u64;
    let mut kept: Vec<&str> = Vec::new();
    for pair in line.split(';') {
        let trimmed = pair.trim();
        if trimmed.is_empty() {
            continue;
        }
        let name = trimmed.split('=').next().unwrap_or_default().trim();
        // Form decoding also reads `+` as a space: at worst one more cookie is taken out.
        let decoded = decode_component(name);
        match names
            .iter()
            .find(|(_, wanted)| wanted.eq_ignore_ascii_case(&decoded))
        {
            Some((index, _)) => found |= super::bit(*index),
            None => kept.push(trimmed),
        }
    }
    (found != 0).then(|| (kept.join("; "), found))
}

/// The query string without the parameters named in `names` (`(bit, name)` pairs), and the
/// bits of the names found; `None` when none is in it.
#[must_use]
pub fn without_query_params(query: &str, names: &[(usize, &str)]) -> Option<(String, u64)> {
    let mut found = 0u64;
    let mut kept: Vec<&str> = Vec::new();
    for pair in query.split('&') {
        let name = decode_component(pair.split('=').next().unwrap_or_default());
        match names
            .iter()
            .find(|(_, wanted)| wanted.eq_ignore_ascii_case(&name))
        {
            Some((index, _)) => found |= super::bit(*index),
            None => kept.push(pair),
        }
    }
    (found != 0).then(|| (kept.join("&"), found))
}
