//! Card-number (PAN) detection and whole-buffer masking.
//!
//! # Rules, and why
//!
//! 1. **A run** is a maximal stretch of ASCII digits in which single separators (one space or
//!    one dash) may sit *between* digits. A separator belongs to the run only when a digit
//!    follows it, so `4111 1111 1111 1111 2` is one 17-digit run (checked as such, and not a
//!    PAN), while a trailing separator, a leading one, or two in a row (`4111  1111`, `12--34`)
//!    end the run. Why: that is how card numbers are written by people and APIs (`4111 1111
//!    1111 1111`, `3782-822463-10005`), and counting the whole run stops us from masking four
//!    digits out of a longer number.
//! 2. **Only 13–19 digits.** A run with fewer or more digits is not a PAN, nor is any part of
//!    it. Why: ISO/IEC 7812 PANs are 12–19 digits; the networks we know issue 13 and up, and
//!    picking a 16-digit window out of a 30-digit id would mask random data.
//! 3. **One separator kind.** A run that mixes spaces and dashes is not a PAN. Why: nobody
//!    writes `4111-1111 1111 1111`, while dates followed by numbers (`2026-11-23 1234`) do mix.
//! 4. **Boundaries.** The byte before the run and the byte after it must not be an ASCII
//!    letter or digit. Why: digits inside words (`ORD4111111111111111X`), hex strings, hashes
//!    and UUIDs are identifiers, not card numbers. (Digits on either side are impossible by
//!    rule 1: they would have extended the run.)
//! 5. **Luhn and brand.** The digits must pass the Luhn check *and* match a network's IIN
//!    prefix with an allowed length (see [`brand`]): Visa `4` (13, 16, 19); Mastercard `51`–`55`
//!    and `2221`–`2720` (16); Amex `34`, `37` (15); Discover `6011`, `644`–`649`, `65` (16–19);
//!    Diners `300`–`305`, `36`, `38`, `39` (14–19); JCB `3528`–`3589` (16–19); UnionPay `62`
//!    (16–19); UATP `1` (15); Maestro `50`, `56`–`69` except the prefixes above (`6011`,
//!    `644`–`649`, `65`, `62`), 13–19 (so a 13-digit `62…` phone number is no Maestro card).
//!    Why: Luhn alone passes one random number in ten; with the brand table, Luhn-valid
//!    non-cards are left alone: all zeros, `1234567812345670` (prefix `1`, 16 digits), the IMEI
//!    `490154203237518` (Visa prefix but 15 digits), 9-digit SINs (too short).
//! 6. **Masking** replaces each digit with [`MaskStyle::mask`] except the kept ones (the last
//!    four, or the first six and the last four), keeping separators and the length. A mask
//!    byte that is not ASCII is replaced by `*`, so masking never breaks UTF-8. Why: the length
//!    is kept so `Content-Length` stays right and a stream can be masked chunk by chunk.
//!
//! Consequences for look-alikes: ISO timestamps (`2026-11-23T10:41:14Z`) are runs of 4, 2 and
//! 2 digits glued by dashes (8 digits) and then a letter: never a PAN. 13-digit epoch
//! milliseconds (`1700000000123`) have a `1` prefix and 13 digits; UATP needs 15, so they are
//! left alone whatever their Luhn sum (that one fails Luhn too). Phone numbers
//! (`+1-555-867-5309`, `+44 20 7946 0958`) have fewer than 13 digits. UUIDs are hex glued to
//! letters and dashes with groups of at most 12 digits.
//!
//! The scan for the first digit looks at 16 bytes at a time (a SWAR test on two `u64`s), so
//! text without digits costs little more than a memory pass.

use std::borrow::Cow;

/// Which digits of a PAN stay readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The last four digits (PCI DSS's usual display rule).
    LastFour,
    /// The first six (the BIN) and the last four.
    FirstSixLastFour,
}

/// How PANs are masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaskStyle {
    /// The ASCII byte that replaces each hidden digit (a non-ASCII byte is taken as `*`).
    pub mask: u8,
    /// Which digits stay readable.
    pub keep: Keep,
}

impl Default for MaskStyle {
    fn default() -> Self {
        MaskStyle {
            mask: b'*',
            keep: Keep::LastFour,
        }
    }
}

/// Fewest digits in a PAN.
pub(crate) const MIN_DIGITS: usize = 13;
/// Most digits in a PAN.
pub(crate) const MAX_DIGITS: usize = 19;

#[inline]
fn is_digit(b: u8) -> bool {
    b.wrapping_sub(b'0') < 10
}

#[inline]
fn is_sep(b: u8) -> bool {
    b == b' ' || b == b'-'
}

#[inline]
fn is_alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// High bit set in each byte lane that holds an ASCII digit; exact for the lowest set lane
/// (higher lanes may be false positives after a true one, which is all we need).
#[inline]
fn digit_lanes(w: u64) -> u64 {
    let x = w ^ (LO * u64::from(b'0'));
    x.wrapping_sub(LO * 10) & !x & HI
}

#[inline]
fn word(c: &[u8; 8]) -> u64 {
    u64::from_le_bytes(*c)
}

/// Index of the first ASCII digit at or after `from`.
#[inline]
pub(crate) fn next_digit(buf: &[u8], from: usize) -> Option<usize> {
    let tail = buf.get(from..)?;
    let mut blocks = tail.chunks_exact(16);
    let mut base = from;
    for block in blocks.by_ref() {
        let (a, b) = block.split_at(8);
        let (Some(a), Some(b)) = (a.first_chunk::<8>(), b.first_chunk::<8>()) else {
            break;
        };
        let (ma, mb) = (digit_lanes(word(a)), digit_lanes(word(b)));
        if ma | mb != 0 {
            let off = if ma != 0 {
                ma.trailing_zeros() / 8
            } else {
                8 + mb.trailing_zeros() / 8
            };
            return Some(base + off as usize);
        }
        base += 16;
    }
    blocks
        .remainder()
        .iter()
        .position(|&b| is_digit(b))
        .map(|i| base + i)
}

/// Whether `digits` (ASCII digits only) passes the Luhn check. Empty input and non-digits
/// are not valid.
#[must_use]
pub fn luhn_valid(digits: &[u8]) -> bool {
    if digits.is_empty() {
        return false;
    }
    let mut sum = 0u32;
    for (i, &b) in digits.iter().rev().enumerate() {
        if !is_digit(b) {
            return false;
        }
        let mut d = u32::from(b - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

fn prefix(digits: &[u8], n: usize) -> u32 {
    digits
        .iter()
        .take(n)
        .fold(0u32, |acc, &b| acc * 10 + u32::from(b.wrapping_sub(b'0')))
}

/// The brand of a digit string, if its IIN prefix and its length match a major network
/// (see the module documentation for the table). Only lengths 13–19 are considered.
#[must_use]
pub fn brand(digits: &[u8]) -> Option<&'static str> {
    let len = digits.len();
    if !(MIN_DIGITS..=MAX_DIGITS).contains(&len) || !digits.iter().all(|&b| is_digit(b)) {
        return None;
    }
    let (p1, p2, p3, p4) = (
        prefix(digits, 1),
        prefix(digits, 2),
        prefix(digits, 3),
        prefix(digits, 4),
    );
    let long = (16..=19).contains(&len);
    if (p2 == 34 || p2 == 37) && len == 15 {
        Some("Amex")
    } else if p1 == 4 && matches!(len, 13 | 16 | 19) {
        Some("Visa")
    } else if ((51..=55).contains(&p2) || (2221..=2720).contains(&p4)) && len == 16 {
        Some("Mastercard")
    } else if (p4 == 6011 || (644..=649).contains(&p3) || p2 == 65) && long {
        Some("Discover")
    } else if ((300..=305).contains(&p3) || matches!(p2, 36 | 38 | 39)) && len >= 14 {
        Some("Diners")
    } else if (3528..=3589).contains(&p4) && long {
        Some("JCB")
    } else if p2 == 62 && long {
        Some("UnionPay")
    } else if p1 == 1 && len == 15 {
        Some("UATP")
    } else if p2 == 50 || ((56..=69).contains(&p2) && !claimed_by_others(p2, p3, p4)) {
        Some("Maestro")
    } else {
        None
    }
}

/// Prefixes in Maestro's `56`–`69` range that belong to Discover or UnionPay, at any length.
fn claimed_by_others(p2: u32, p3: u32, p4: u32) -> bool {
    p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 || p2 == 62
}

/// Where a scan stands just before its current position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ctx {
    /// Outside any run; `alnum` when the byte before is an ASCII letter or digit.
    Free { alnum: bool },
    /// Inside a run already longer than 19 digits; `after_sep` when the last byte was a
    /// separator that followed a digit (a digit next continues the run).
    Long { after_sep: bool },
}

/// What [`Scanner::next`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// A PAN at `start..end` (first digit to one past the last digit).
    Pan { start: usize, end: usize },
    /// A run starting here is still open at the end of the buffer (and may be a PAN).
    Hold { from: usize },
    /// Nothing more in this buffer.
    Done,
}

/// A resumable scan over one buffer; the context lets a stream carry state across chunks.
#[derive(Debug)]
pub(crate) struct Scanner {
    pub(crate) pos: usize,
    pub(crate) ctx: Ctx,
    /// Below this position the block pre-filter already said "look": scan normally.
    filtered_until: usize,
}

impl Scanner {
    pub(crate) fn new(ctx: Ctx) -> Self {
        Scanner {
            pos: 0,
            ctx,
            filtered_until: 0,
        }
    }

    /// The next PAN, open run, or the end. With `last`, the end of `buf` is the end of the
    /// input, so nothing is ever open.
    pub(crate) fn next(&mut self, buf: &[u8], last: bool) -> Event {
        let n = buf.len();
        if let Ctx::Long { after_sep } = self.ctx {
            let mut j = self.pos;
            let mut after = after_sep;
            while let Some(&b) = buf.get(j) {
                if is_digit(b) {
                    after = false;
                } else if !after && is_sep(b) {
                    after = true;
                } else {
                    break;
                }
                j += 1;
            }
            self.pos = j;
            if j == n && !last {
                self.ctx = Ctx::Long { after_sep: after };
                return Event::Done;
            }
            self.ctx = Ctx::Free { alnum: !after };
        }
        loop {
            // Whole 64-byte blocks that cannot hold the start of a 13-digit run are skipped
            // without walking their (short) digit groups: the common case of digit-dense
            // text such as ids, prices and dates.
            if self.pos >= self.filtered_until {
                while let Some(block) = buf.get(self.pos..self.pos + 64) {
                    if block_may_hold_pan(block) {
                        self.filtered_until = self.pos + 64;
                        break;
                    }
                    self.pos += 64;
                }
            }
            let from = self.pos;
            let Some(d) = next_digit(buf, from) else {
                if let Some(&b) = buf.get(from..).and_then(<[u8]>::last) {
                    self.ctx = Ctx::Free { alnum: is_alnum(b) };
                }
                self.pos = n;
                return Event::Done;
            };
            // Before position 0 the context speaks (the byte before this chunk).
            let before_alnum = match d.checked_sub(1) {
                Some(p) => buf.get(p).is_some_and(|&b| is_alnum(b)),
                None => matches!(self.ctx, Ctx::Free { alnum: true }),
            };
            let mut j = d;
            let mut digits = 0usize;
            let (mut space, mut dash) = (false, false);
            // The hot loop of digit-dense text: a tight walk over each group of digits,
            // then one look at what ends it.
            let open = loop {
                let group = buf
                    .get(j..)
                    .map_or(0, |rest| rest.iter().take_while(|&&b| is_digit(b)).count());
                digits += group;
                j += group;
                let Some(&b) = buf.get(j) else {
                    break true;
                };
                if is_sep(b) {
                    match buf.get(j + 1) {
                        None => break true,
                        Some(&c) if is_digit(c) => {
                            space |= b == b' ';
                            dash |= b == b'-';
                            j += 1;
                            continue;
                        }
                        Some(_) => {}
                    }
                }
                break false;
            };
            if open && !last {
                if digits > MAX_DIGITS {
                    self.pos = n;
                    self.ctx = Ctx::Long { after_sep: j < n };
                    return Event::Done;
                }
                self.pos = d;
                self.ctx = Ctx::Free {
                    alnum: before_alnum,
                };
                return Event::Hold { from: d };
            }
            self.pos = j;
            self.ctx = Ctx::Free { alnum: true };
            let after_alnum = buf.get(j).is_some_and(|&b| is_alnum(b));
            if (MIN_DIGITS..=MAX_DIGITS).contains(&digits)
                && !(before_alnum || after_alnum || (space && dash))
                && run_is_pan(&buf[d..j], digits)
            {
                return Event::Pan { start: d, end: j };
            }
        }
    }
}

/// False only when no run of [`MIN_DIGITS`] or more connected bytes (digits, and separators
/// between two digits) starts in `block`, and none reaches its end: then no PAN starts there
/// and no run crosses out of it, so the scanner may jump past it. Neighbours outside the
/// block count as digits, so the answer errs towards scanning.
fn block_may_hold_pan(block: &[u8]) -> bool {
    let (mut digit, mut sep) = (0u64, 0u64);
    for (i, word) in block.chunks_exact(8).take(8).enumerate() {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        let (d, s) = classify8(u64::from_le_bytes(w));
        digit |= d << (8 * i);
        sep |= s << (8 * i);
    }
    // A separator connects when digits stand on both sides (bit i is byte i).
    let before = (digit << 1) | 1;
    let after = (digit >> 1) | (1 << 63);
    let connected = digit | (sep & before & after);
    // Bit i survives when bytes i..i+MIN_DIGITS are all connected; bits past the block
    // count as connected.
    let mut run = connected;
    for k in 1..MIN_DIGITS {
        run &= (connected >> k) | !(u64::MAX >> k);
    }
    run != 0
}

const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// One bit per byte of an 8-byte little-endian word: the byte is zero. Exact per byte
/// (no carry crosses a byte).
fn zero_bytes(v: u64) -> u64 {
    !(((v & LOW7) + LOW7) | v) & HIGH
}

/// Gathers the high bit of each byte into the low 8 bits, byte 0 first.
fn gather(high_bits: u64) -> u64 {
    ((high_bits >> 7).wrapping_mul(0x0102_0408_1020_4080)) >> 56
}

/// Digit and separator (space, dash) bits of the 8 bytes of `w`, byte 0 in bit 0.
fn classify8(w: u64) -> (u64, u64) {
    let x = w ^ 0x3030_3030_3030_3030;
    // A byte is a digit when x < 10: (x & 0x7f) + 0x76 sets bit 7 from 10 up, x's own bit 7
    // from 128 up.
    let digit = !(((x & LOW7) + 0x7676_7676_7676_7676) | x) & HIGH;
    let sep = zero_bytes(w ^ 0x2020_2020_2020_2020) | zero_bytes(w ^ 0x2d2d_2d2d_2d2d_2d2d);
    (gather(digit), gather(sep))
}

#[cfg(test)]
#[test]
fn word_classification_matches_byte_by_byte() {
    for seed in 0u64..20_000 {
        let w = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (seed << 17);
        let bytes = w.to_le_bytes();
        let bytes = if seed % 3 == 0 {
            [
                b'0' + (seed % 10) as u8,
                b' ',
                b'-',
                b'9',
                b'/',
                b':',
                b',',
                0xb9,
            ]
        } else {
            bytes
        };
        let w = u64::from_le_bytes(bytes);
        let (d, s) = classify8(w);
        for (i, &b) in bytes.iter().enumerate() {
            assert_eq!((d >> i) & 1 == 1, is_digit(b), "{bytes:?} byte {i}");
            assert_eq!((s >> i) & 1 == 1, is_sep(b), "{bytes:?} byte {i}");
        }
    }
}

/// Whether a run (digits and single separators, `digits` of them, 13–19) is a PAN.
fn run_is_pan(run: &[u8], digits: usize) -> bool {
    let mut buf = [0u8; MAX_DIGITS];
    let mut k = 0;
    for &b in run {
        if is_digit(b) {
            if let Some(slot) = buf.get_mut(k) {
                *slot = b;
            }
            k += 1;
        }
    }
    let Some(ds) = buf.get(..digits) else {
        return false;
    };
    k == digits && brand(ds).is_some() && luhn_valid(ds)
}

/// Masks the digits of one PAN run in place, keeping separators and the kept digits.
pub(crate) fn mask_run(run: &mut [u8], style: MaskStyle) {
    let mask = if style.mask.is_ascii() {
        style.mask
    } else {
        b'*'
    };
    let total = run.iter().filter(|&&b| is_digit(b)).count();
    let first_kept = match style.keep {
        Keep::LastFour => 0,
        Keep::FirstSixLastFour => 6,
    };
    let last_kept = total.saturating_sub(4);
    let mut k = 0;
    for b in run.iter_mut() {
        if is_digit(*b) {
            if k >= first_kept && k < last_kept {
                *b = mask;
            }
            k += 1;
        }
    }
}

/// Masks every PAN in `buf`, keeping its length and its separators; returns how many were
/// masked.
pub fn mask_in_place(buf: &mut [u8], style: MaskStyle) -> usize {
    let mut scan = Scanner::new(Ctx::Free { alnum: false });
    let mut count = 0;
    while let Event::Pan { start, end } = scan.next(buf, true) {
        if let Some(run) = buf.get_mut(start..end) {
            mask_run(run, style);
            count += 1;
        }
    }
    count
}

/// True when `buf` holds at least one PAN.
#[must_use]
pub fn contains_pan(buf: &[u8]) -> bool {
    let mut scan = Scanner::new(Ctx::Free { alnum: false });
    matches!(scan.next(buf, true), Event::Pan { .. })
}

/// For log lines: the text with every PAN masked (borrowed when there is none).
#[must_use]
pub fn mask_str(s: &str, style: MaskStyle) -> Cow<'_, str> {
    if !contains_pan(s.as_bytes()) {
        return Cow::Borrowed(s);
    }
    let mut bytes = s.as_bytes().to_vec();
    mask_in_place(&mut bytes, style);
    // Only ASCII digits were replaced by an ASCII byte, so this is still UTF-8.
    match String::from_utf8(bytes) {
        Ok(masked) => Cow::Owned(masked),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}
