//! Bounded checks of Erlang External Term Format bytes before anything is decoded.
//!
//! The `eetf` decoder trusts its input: it allocates what a length field claims, recurses once
//! per nesting level and panics on a distribution header or an atom cache reference. A Redis
//! channel is open to anyone who can reach Redis, so every message is walked here first, without
//! recursion or allocation beyond a stack of `max_depth` counters: each length is checked against
//! the bytes that are left, and the depth, the number of terms and of atoms against the limits.
//! Only a term that passes is handed to `eetf`. Compressed terms are inflated here, in small
//! steps, never past the size they declare or the byte limit.

/// The limits of one message (docs/configuration.md, `etf_*`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_depth: usize,
    pub max_terms: usize,
    pub max_atoms: usize,
}

/// Why a message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Over `etf_max_bytes` (the body, or the size a compressed term declares or inflates to).
    TooLarge,
    TooDeep,
    TooManyTerms,
    TooManyAtoms,
    /// Not a well-formed external term; the text says what was wrong.
    Malformed(&'static str),
}

impl Reject {
    /// The label of `ringgate_bus_rejected_total` / `ringgate_bus_decode_errors_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::TooDeep => "too_deep",
            Self::TooManyTerms => "too_many_terms",
            Self::TooManyAtoms => "too_many_atoms",
            Self::Malformed(why) => why,
        }
    }
}

pub const VERSION: u8 = 131;
pub const COMPRESSED: u8 = 80;
pub const NEW_FLOAT: u8 = 70;
pub const BIT_BINARY: u8 = 77;
pub const NEW_PID: u8 = 88;
pub const NEW_PORT: u8 = 89;
pub const NEWER_REFERENCE: u8 = 90;
pub const SMALL_INTEGER: u8 = 97;
pub const INTEGER: u8 = 98;
pub const FLOAT: u8 = 99;
pub const ATOM: u8 = 100;
pub const REFERENCE: u8 = 101;
pub const PORT: u8 = 102;
pub const PID: u8 = 103;
pub const SMALL_TUPLE: u8 = 104;
pub const LARGE_TUPLE: u8 = 105;
pub const NIL: u8 = 106;
pub const STRING: u8 = 107;
pub const LIST: u8 = 108;
pub const BINARY: u8 = 109;
pub const SMALL_BIG: u8 = 110;
pub const LARGE_BIG: u8 = 111;
pub const NEW_FUN: u8 = 112;
pub const EXPORT: u8 = 113;
pub const NEW_REFERENCE: u8 = 114;
pub const SMALL_ATOM: u8 = 115;
pub const MAP: u8 = 116;
pub const FUN: u8 = 117;
pub const ATOM_UTF8: u8 = 118;
pub const SMALL_ATOM_UTF8: u8 = 119;
pub const V4_PORT: u8 = 120;

/// Big integers longer than this many bytes are refused (as `TooLarge`): their decimal text
/// costs quadratic time, and 128 bytes (308 digits) is past any JSON consumer's precision.
pub const MAX_BIG_BYTES: usize = 128;

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Reject> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(Reject::Malformed("truncated"))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, Reject> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<usize, Reject> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn u32(&mut self) -> Result<usize, Reject> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }
}

/// Running totals of one message.
#[derive(Debug, Default)]
pub struct Count {
    pub terms: usize,
    pub atoms: usize,
    /// A Latin-1 atom (ATOM_EXT, SMALL_ATOM_EXT: what OTP 25 writes for atoms like `'été'`)
    /// has bytes above 0x7f, which `eetf` cannot read: see [`latin1_atoms_to_utf8`].
    pub latin1_high: bool,
}

/// Checks the one term starting at `pos` of `bytes` (no version byte) and returns where it
/// ends. `count` accumulates over calls, so several calls share one message's budget.
pub fn skip(bytes: &[u8], pos: usize, limits: &Limits, count: &mut Count) -> Result<usize, Reject> {
    walk(bytes, pos, limits, count, None)
}

/// A copy of the term `bytes` (checked by [`skip`]) whose Latin-1 atoms are written as UTF-8
/// atoms (ATOM_UTF8_EXT), the same atoms to Erlang.
pub fn latin1_atoms_to_utf8(bytes: &[u8], limits: &Limits) -> Result<Vec<u8>, Reject> {
    let mut out = Vec::with_capacity(bytes.len() + 64);
    walk(bytes, 0, limits, &mut Count::default(), Some(&mut out))?;
    Ok(out)
}

fn walk(
    bytes: &[u8],
    pos: usize,
    limits: &Limits,
    count: &mut Count,
    mut out: Option<&mut Vec<u8>>,
) -> Result<usize, Reject> {
    let mut c = Cursor { bytes, pos };
    // Terms still to read at each open nesting level; its length is the depth.
    let mut stack: Vec<usize> = Vec::with_capacity(limits.max_depth.min(64) + 1);
    stack.push(1);
    loop {
        while stack.last() == Some(&0) {
            stack.pop();
        }
        let Some(top) = stack.last_mut() else {
            return Ok(c.pos);
        };
        *top -= 1;
        count.terms += 1;
        if count.terms > limits.max_terms {
            return Err(Reject::TooManyTerms);
        }
        let start = c.pos;
        let children = term(&mut c, limits, count)?;
        if let Some(out) = out.as_deref_mut() {
            copy_term(&bytes[start..c.pos], out);
        }
        if children > 0 {
            // Every term takes at least one byte: a count the bytes left cannot hold is a lie.
            if children > c.left() {
                return Err(Reject::Malformed("count past the end"));
            }
            if stack.len() >= limits.max_depth {
                return Err(Reject::TooDeep);
            }
            stack.push(children);
        }
    }
}

/// Appends one term's own bytes, a Latin-1 atom as a UTF-8 one.
fn copy_term(own: &[u8], out: &mut Vec<u8>) {
    let text = match own[0] {
        ATOM => &own[3..],
        SMALL_ATOM => &own[2..],
        _ => return out.extend_from_slice(own),
    };
    let utf8: String = text.iter().map(|&b| char::from(b)).collect();
    out.push(ATOM_UTF8);
    out.extend_from_slice(&(utf8.len() as u16).to_be_bytes());
    out.extend_from_slice(utf8.as_bytes());
}

/// Reads one term's own bytes; returns how many nested terms follow it.
fn term(c: &mut Cursor<'_>, limits: &Limits, count: &mut Count) -> Result<usize, Reject> {
    let tag = c.u8()?;
    Ok(match tag {
        SMALL_INTEGER => {
            c.take(1)?;
            0
        }
        INTEGER => {
            c.take(4)?;
            0
        }
        NEW_FLOAT => {
            let b = c.take(8)?;
            let v = f64::from_be_bytes(b.try_into().map_err(|_| Reject::Malformed("float"))?);
            if !v.is_finite() {
                return Err(Reject::Malformed("non-finite float"));
            }
            0
        }
        FLOAT => {
            c.take(31)?;
            0
        }
        ATOM | SMALL_ATOM | ATOM_UTF8 | SMALL_ATOM_UTF8 => {
            atom_body(c, tag, limits, count)?;
            0
        }
        SMALL_TUPLE => usize::from(c.u8()?),
        LARGE_TUPLE => c.u32()?,
        NIL => 0,
        STRING => {
            let n = c.u16()?;
            c.take(n)?;
            0
        }
        LIST => c.u32()?.checked_add(1).ok_or(Reject::Malformed("count"))?,
        MAP => c.u32()?.checked_mul(2).ok_or(Reject::Malformed("count"))?,
        BINARY => {
            let n = c.u32()?;
            c.take(n)?;
            0
        }
        BIT_BINARY => {
            let n = c.u32()?;
            let bits = c.u8()?;
            if !(1..=8).contains(&bits) || n == 0 {
                return Err(Reject::Malformed("bit binary"));
            }
            c.take(n)?;
            0
        }
        SMALL_BIG | LARGE_BIG => {
            let n = if tag == SMALL_BIG {
                usize::from(c.u8()?)
            } else {
                c.u32()?
            };
            if n > MAX_BIG_BYTES {
                return Err(Reject::TooLarge);
            }
            if c.u8()? > 1 {
                return Err(Reject::Malformed("big integer sign"));
            }
            c.take(n)?;
            0
        }
        PID | NEW_PID => {
            node_atom(c, limits, count)?;
            c.take(if tag == PID { 9 } else { 12 })?;
            0
        }
        PORT | NEW_PORT | V4_PORT => {
            node_atom(c, limits, count)?;
            c.take(match tag {
                PORT => 5,
                NEW_PORT => 8,
                _ => 12,
            })?;
            0
        }
        REFERENCE => {
            node_atom(c, limits, count)?;
            c.take(5)?;
            0
        }
        NEW_REFERENCE | NEWER_REFERENCE => {
            let ids = c.u16()?;
            if ids > 5 {
                return Err(Reject::Malformed("reference"));
            }
            node_atom(c, limits, count)?;
            c.take(if tag == NEW_REFERENCE { 1 } else { 4 })?;
            c.take(ids * 4)?;
            0
        }
        // Module, function, arity.
        EXPORT => 3,
        // Size, arity, uniq, index, free count; then module, old index, old uniq, pid, free vars.
        NEW_FUN => {
            c.take(4 + 1 + 16 + 4)?;
            c.u32()?.checked_add(4).ok_or(Reject::Malformed("count"))?
        }
        // Free count; then pid, module, index, uniq, free vars.
        FUN => c.u32()?.checked_add(4).ok_or(Reject::Malformed("count"))?,
        // A distribution header, an atom cache reference, a compressed term inside a term, a
        // local term or an unknown tag: nothing `term_to_binary` writes into a PubSub message.
        _ => return Err(Reject::Malformed("unexpected tag")),
    })
}

/// An atom's length and text (its tag already read).
fn atom_body(
    c: &mut Cursor<'_>,
    tag: u8,
    limits: &Limits,
    count: &mut Count,
) -> Result<(), Reject> {
    count.atoms += 1;
    if count.atoms > limits.max_atoms {
        return Err(Reject::TooManyAtoms);
    }
    let n = if tag == ATOM || tag == ATOM_UTF8 {
        c.u16()?
    } else {
        usize::from(c.u8()?)
    };
    // Erlang's limit is 255 characters (up to 4 bytes each in UTF-8).
    if n > 255 * 4 {
        return Err(Reject::Malformed("atom too long"));
    }
    let text = c.take(n)?;
    if tag == ATOM_UTF8 || tag == SMALL_ATOM_UTF8 {
        if std::str::from_utf8(text).is_err() {
            return Err(Reject::Malformed("atom not UTF-8"));
        }
    } else if text.iter().any(|&b| b > 0x7f) {
        count.latin1_high = true;
    }
    Ok(())
}

/// The node atom inside a pid, port or reference.
fn node_atom(c: &mut Cursor<'_>, limits: &Limits, count: &mut Count) -> Result<(), Reject> {
    let tag = c.u8()?;
    if !matches!(tag, ATOM | SMALL_ATOM | ATOM_UTF8 | SMALL_ATOM_UTF8) {
        return Err(Reject::Malformed("node is not an atom"));
    }
    atom_body(c, tag, limits, count)
}

/// The term of one message, inflated when compressed: `body` is a whole `term_to_binary`
/// result (version byte first). Borrowed when not compressed.
pub fn unwrap<'a>(body: &'a [u8], limits: &Limits) -> Result<std::borrow::Cow<'a, [u8]>, Reject> {
    if body.len() > limits.max_bytes {
        return Err(Reject::TooLarge);
    }
    match body {
        [VERSION, COMPRESSED, rest @ ..] => {
            let (size, zlib) = rest
                .split_first_chunk::<4>()
                .ok_or(Reject::Malformed("truncated"))?;
            let size = u32::from_be_bytes(*size) as usize;
            if size > limits.max_bytes {
                return Err(Reject::TooLarge);
            }
            inflate(zlib, size).map(std::borrow::Cow::Owned)
        }
        [VERSION, rest @ ..] => Ok(std::borrow::Cow::Borrowed(rest)),
        _ => Err(Reject::Malformed("not an external term")),
    }
}

/// Compressed input is fed this many bytes at a time, so one step inflates to at most ~1032
/// times as much (deflate's largest ratio) before the size is checked again.
const INFLATE_STEP_BYTES: usize = 64;

/// Inflates `zlib` to exactly `size` bytes, stopping as soon as the output would pass it.
fn inflate(zlib: &[u8], size: usize) -> Result<Vec<u8>, Reject> {
    let mut d = noflate::zlib::Decoder::new();
    let mut out = Vec::with_capacity(size);
    for chunk in zlib.chunks(INFLATE_STEP_BYTES) {
        if d.is_finished() {
            return Err(Reject::Malformed("bytes after the compressed term"));
        }
        d.feed(chunk)
            .map_err(|_| Reject::Malformed("bad zlib stream"))?;
        let got = d.output();
        if out.len() + got.len() > size {
            return Err(Reject::Malformed("inflates past its declared size"));
        }
        out.extend_from_slice(got);
        let n = got.len();
        d.advance(n);
    }
    if !d.is_finished() || out.len() != size {
        return Err(Reject::Malformed("compressed term truncated"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_bytes: 1 << 20,
        max_depth: 64,
        max_terms: 100_000,
        max_atoms: 10_000,
    };

    fn check(term: &[u8]) -> Result<usize, Reject> {
        skip(term, 0, &LIMITS, &mut Count::default())
    }

    #[test]
    fn nesting_past_the_limit_is_refused_without_recursion() {
        // [[[[...]]]] one million deep: refused at depth 64, in bounded time and stack.
        let mut deep = Vec::new();
        for _ in 0..1_000_000 {
            deep.extend_from_slice(&[LIST, 0, 0, 0, 1]);
        }
        deep.push(NIL);
        assert_eq!(check(&deep), Err(Reject::TooDeep));
        // 63 levels pass.
        let mut ok = Vec::new();
        for _ in 0..63 {
            ok.extend_from_slice(&[LIST, 0, 0, 0, 1]);
        }
        ok.push(NIL);
        ok.extend(std::iter::repeat_n(NIL, 63));
        assert_eq!(check(&ok), Ok(ok.len()));
    }

    #[test]
    fn counts_and_lengths_that_the_bytes_cannot_hold_are_refused() {
        assert_eq!(
            check(&[LIST, 0xff, 0xff, 0xff, 0xff, NIL]),
            Err(Reject::Malformed("count past the end"))
        );
        assert_eq!(
            check(&[BINARY, 0xff, 0xff, 0xff, 0xff, 1]),
            Err(Reject::Malformed("truncated"))
        );
        assert_eq!(
            check(&[MAP, 0x80, 0, 0, 0]),
            Err(Reject::Malformed("count past the end"))
        );
        assert_eq!(check(&[68, 1]), Err(Reject::Malformed("unexpected tag")));
        assert_eq!(check(&[82, 1]), Err(Reject::Malformed("unexpected tag")));
    }

    #[test]
    fn atom_floods_are_refused_before_decoding() {
        let limits = Limits {
            max_atoms: 100,
            ..LIMITS
        };
        let mut list = vec![LIST, 0, 0, 0, 200];
        for _ in 0..200 {
            list.extend_from_slice(&[SMALL_ATOM_UTF8, 1, b'a']);
        }
        list.push(NIL);
        assert_eq!(
            skip(&list, 0, &limits, &mut Count::default()),
            Err(Reject::TooManyAtoms)
        );
        assert_eq!(check(&list), Ok(list.len()));
    }

    #[test]
    fn a_zlib_bomb_stops_at_its_declared_size() {
        let big = vec![0u8; 10 << 20];
        let z = noflate::zlib::compress(&big).unwrap();
        let mut body = vec![VERSION, COMPRESSED];
        body.extend_from_slice(&1000u32.to_be_bytes());
        body.extend_from_slice(&z);
        assert_eq!(
            unwrap(&body, &LIMITS),
            Err(Reject::Malformed("inflates past its declared size"))
        );
        let mut honest = vec![VERSION, COMPRESSED];
        honest.extend_from_slice(&(10u32 << 20).to_be_bytes());
        honest.extend_from_slice(&z);
        assert_eq!(unwrap(&honest, &LIMITS), Err(Reject::TooLarge));
    }
}
