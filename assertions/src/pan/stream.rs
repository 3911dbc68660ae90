//! Streaming PAN masking: the same rules as [`mask_in_place`](super::detect::mask_in_place),
//! over a body that arrives in chunks split anywhere.
//!
//! Each chunk is appended to the output and scanned there in place. The only bytes held back
//! are those of a digit run still open at the end of the chunk (its digits and single
//! separators, at most 19 digits + 19 separators = 38 bytes); the class of the byte before it
//! (letter/digit or not) is kept as state rather than the byte itself. A run that grows past
//! 19 digits can never be a PAN: it is emitted unmasked at once and the masker remembers it is
//! inside an over-long run, so nothing after it in the same run is masked either. A chunk with
//! no digits is one copy plus one fast scan.
//!
//! For any split of an input, the concatenated output of every `push` plus `finish` equals
//! `mask_in_place` of the whole input.

use super::detect::{mask_run, Ctx, Event, MaskStyle, Scanner};

/// Masks PANs in a stream of chunks; see the module documentation.
#[derive(Debug)]
pub struct StreamMasker {
    style: MaskStyle,
    /// The open run carried over from the previous chunk.
    held: Vec<u8>,
    /// What stands just before `held` (or before the next chunk when nothing is held).
    ctx: Ctx,
    masked: usize,
}

impl StreamMasker {
    /// A masker at the start of a stream.
    #[must_use]
    pub fn new(style: MaskStyle) -> Self {
        StreamMasker {
            style,
            held: Vec::with_capacity(64),
            ctx: Ctx::Free { alnum: false },
            masked: 0,
        }
    }

    fn run(&mut self, chunk: &[u8], out: &mut Vec<u8>, last: bool) -> usize {
        let base = out.len();
        out.extend_from_slice(&self.held);
        self.held.clear();
        out.extend_from_slice(chunk);
        let Some(buf) = out.get_mut(base..) else {
            return 0;
        };
        let mut scan = Scanner::new(self.ctx);
        let mut count = 0;
        let mut hold = None;
        loop {
            match scan.next(buf, last) {
                Event::Pan { start, end } => {
                    if let Some(run) = buf.get_mut(start..end) {
                        mask_run(run, self.style);
                        count += 1;
                    }
                }
                Event::Hold { from } => {
                    hold = Some(from);
                    break;
                }
                Event::Done => break,
            }
        }
        self.ctx = scan.ctx;
        if let Some(from) = hold {
            if let Some(tail) = out.get(base + from..) {
                self.held.extend_from_slice(tail);
            }
            out.truncate(base + from);
        }
        self.masked += count;
        count
    }

    /// Masks `chunk` where it lies, when nothing is held back from the previous chunk:
    /// returns how many leading bytes may be sent (the rest, at most an open run, is now
    /// held) and the PANs masked. `None` when a held tail must come first (then use
    /// [`StreamMasker::push`]). `last` ends the stream, as [`StreamMasker::finish`] would.
    pub fn push_in_place(&mut self, chunk: &mut [u8], last: bool) -> Option<(usize, usize)> {
        if !self.held.is_empty() {
            return None;
        }
        let mut scan = Scanner::new(self.ctx);
        let mut count = 0;
        let mut emit = chunk.len();
        loop {
            match scan.next(chunk, last) {
                Event::Pan { start, end } => {
                    if let Some(run) = chunk.get_mut(start..end) {
                        mask_run(run, self.style);
                        count += 1;
                    }
                }
                Event::Hold { from } => {
                    emit = from;
                    break;
                }
                Event::Done => break,
            }
        }
        self.ctx = if last {
            Ctx::Free { alnum: false }
        } else {
            scan.ctx
        };
        if let Some(tail) = chunk.get(emit..) {
            self.held.extend_from_slice(tail);
        }
        self.masked += count;
        Some((emit, count))
    }

    /// Takes the next chunk; appends to `out` every byte that can no longer become part of a
    /// PAN (masked where needed), holding back only the short tail that might still be the
    /// start of one. Returns PANs masked in this call.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> usize {
        self.run(chunk, out, false)
    }

    /// End of stream: flushes the held-back tail (masked if it is a PAN). Returns PANs masked
    /// in this call. The masker is then ready for a new stream (its total count is kept).
    pub fn finish(&mut self, out: &mut Vec<u8>) -> usize {
        let count = self.run(&[], out, true);
        self.ctx = Ctx::Free { alnum: false };
        count
    }

    /// PANs masked so far.
    #[must_use]
    pub fn masked(&self) -> usize {
        self.masked
    }

    /// Bytes currently held back.
    #[must_use]
    pub fn held(&self) -> usize {
        self.held.len()
    }
}
