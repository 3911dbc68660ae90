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
pub fn without_cookies<S: AsRef<str>>(line: &str, names: &[(usize, S)]) -> Option<(String, u64)> {
    // Nothing is allocated for the usual line, which holds none of them.
    let named = |pair: &str| {
        let name = pair.trim().split('=').next().unwrap_or_default().trim();
        // Form decoding also reads `+` as a space: at worst one more cookie is taken out.
        let decoded = decode_component(name);
        names
            .iter()
            .find(|(_, wanted)| wanted.as_ref().eq_ignore_ascii_case(&decoded))
            .map(|(index, _)| super::bit(*index))
    };
    let found = line
        .split(';')
        .filter_map(named)
        .fold(0, |all, bit| all | bit);
    if found == 0 {
        return None;
    }
    let kept: Vec<&str> = line
        .split(';')
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && named(pair).is_none())
        .collect();
    Some((kept.join("; "), found))
}

/// The query string without the parameters named in `names` (`(bit, name)` pairs), and the
/// bits of the names found; `None` when none is in it.
#[must_use]
pub fn without_query_params<S: AsRef<str>>(
    query: &str,
    names: &[(usize, S)],
) -> Option<(String, u64)> {
    // Nothing is allocated for the usual query, which holds none of them.
    let named = |pair: &str| {
        let name = decode_component(pair.split('=').next().unwrap_or_default());
        names
            .iter()
            .find(|(_, wanted)| wanted.as_ref().eq_ignore_ascii_case(&name))
            .map(|(index, _)| super::bit(*index))
    };
    let found = query
        .split('&')
        .filter_map(named)
        .fold(0, |all, bit| all | bit);
    if found == 0 {
        return None;
    }
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| named(pair).is_none())
        .collect();
    Some((kept.join("&"), found))
}
